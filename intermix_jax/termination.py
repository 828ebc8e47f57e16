"""SIGTERM and Ctrl-C (SIGINT): what both signals have in common, in and outside the training loop.

Outside the loop (imports, data preparation, compilation) main.py's handler calls `note(signum)` and
raises `Terminated`, reported in one line. Python can drop that exception (raised in a gc callback
or a __del__); the note survives, and the trainer stops at its next safe point (`stop_if_noted`).
Inside the loop either signal only sets `Flag`: a checkpoint, results.json 'preempted'. The
guarantees: WORKSPACE.md "Resume, preemption and failures". Light on purpose: main.py imports it
before anything else.
"""
import signal
import threading

from absl import logging


class Terminated(BaseException):
  """SIGTERM or a first Ctrl-C outside the training loop (which saves a checkpoint itself); not an
  Exception, so that no library's `except Exception` swallows it."""


_NOTED = threading.Event()
_FIRST: list = [None]  # the first SIGTERM / SIGINT this process received


def record(signum: int) -> None:
  """Records that `signum` (SIGTERM or SIGINT) asked the process to stop (the first one counts)."""
  if _FIRST[0] is None:
    _FIRST[0] = signum


def stop_signal():
  """The first SIGTERM / SIGINT received (an int), or None."""
  return _FIRST[0]


def describe(signum) -> str:
  """'SIGINT (Ctrl-C)' or 'SIGTERM' (also for None: a preemption notice)."""
  return 'SIGINT (Ctrl-C)' if signum == signal.SIGINT else 'SIGTERM'


_OWNED = [False]  # the process is the command line's (main.run): its signals are the trainer's


def own_process_signals() -> None:
  """Called by main.run: a second Ctrl-C may end this process (the command line) at once."""
  _OWNED[0] = True


def first_ctrl_c(previous=None) -> None:
  """After the first SIGINT (in the main thread): the next one ends the process at once (the
  system's default action) in the command line (`own_process_signals`), else goes to `previous`,
  the caller's handler (None: Python's KeyboardInterrupt)."""
  if threading.current_thread() is threading.main_thread():
    default = signal.default_int_handler if previous is None else previous
    signal.signal(signal.SIGINT, signal.SIG_DFL if _OWNED[0] else default)


def note(signum: int = signal.SIGTERM) -> None:
  record(signum)
  _NOTED.set()


def noted() -> bool:
  return _NOTED.is_set()


def stop_if_noted() -> None:
  """Raises Terminated if a SIGTERM / SIGINT was noted."""
  if _NOTED.is_set():
    raise Terminated()


class Flag:
  """Preemption notice: SIGTERM or a first Ctrl-C is recorded instead of killing the process.

  One process: a Python handler of SIGTERM and SIGINT sets the flag. Several processes: JAX's
  preemption service receives the notice and `reached(step)` is True on every process at the same
  step, so they save the same checkpoint (SIGINT is left as Python has it there).
  """

  def __init__(self):
    self.requested = noted()  # save and stop? (a SIGTERM before training: at the first step)
    self._signum = stop_signal() if self.requested else None
    self._old = {}
    import jax  # pylint: disable=import-outside-toplevel  (this module stays light)
    self._multi = jax.process_count() > 1

  def __enter__(self):
    if not self._multi and threading.current_thread() is threading.main_thread():
      self._old[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._handle)
      if self._signum != signal.SIGINT:  # after a Ctrl-C the next one ends the process already
        self._old[signal.SIGINT] = signal.signal(signal.SIGINT, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    record(signum)
    if self._signum is None:
      self._signum = signum
    if signum == signal.SIGINT:
      first_ctrl_c(self._old.get(signal.SIGINT))
      logging.warning('Ctrl-C: saving a checkpoint at the next step, then stopping (rerun the same '
                      'command to resume); press Ctrl-C again to stop at once, without it')
    self.requested = True

  @property
  def name(self) -> str:
    """What asked the run to stop: 'SIGTERM' (also a preemption notice) or 'SIGINT (Ctrl-C)'."""
    return describe(self._signum)

  def reached(self, step: int) -> bool:
    """Whether to save and stop after `step` (call after every step on every process)."""
    if self._multi and not self.requested:
      from jax.experimental import multihost_utils
      try:
        self.requested = multihost_utils.reached_preemption_sync_point(step)
      except RuntimeError:  # no preemption service (jax.distributed without it): no notice
        pass
    return self.requested

  def __exit__(self, *exc):
    for signum, old in self._old.items():
      if not (signum == signal.SIGINT and self._signum == signal.SIGINT and
              signal.getsignal(signal.SIGINT) == signal.SIG_DFL):
        signal.signal(signum, old)  # (the command line keeps SIGINT's default after a Ctrl-C)
    self._old = {}
