"""SIGTERM and Ctrl-C (SIGINT) outside the training loop (imports, data preparation, compilation,
the summaries), and what both signals have in common.

main.py's handler calls `note(signum)` and raises `Terminated`, which main.py reports in one line
(nothing half-written is used). Python can lose that exception: raised where it cannot propagate
(a gc callback, a __del__), it is printed as "Exception ignored in" and dropped. The note survives,
so the trainer stops at its next safe point instead (`stop_if_noted`: after its data is prepared;
once training has begun, at the first step, after saving a checkpoint). Inside the training loop
either signal only sets the trainer's flag (train._TerminationFlag): a checkpoint, results.json
'preempted', and the rerun resumes.

Ctrl-C: the first SIGINT stops as SIGTERM does, a second ends the process at once (`first_ctrl_c`);
`stop_signal()` says which came first. The guarantees: WORKSPACE.md "Resume, preemption and
failures". Light on purpose: main.py imports it before anything else.
"""
import signal
import threading


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
  """After the first SIGINT (call in the main thread): in the command line the next one ends the
  process at once (the system's default action); where the trainer is a library call (a notebook,
  a script: not `own_process_signals`) the next one goes to `previous`, the handler the caller
  had (None: Python's KeyboardInterrupt)."""
  if threading.current_thread() is not threading.main_thread():
    return
  if _OWNED[0]:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
  else:
    signal.signal(signal.SIGINT, signal.default_int_handler if previous is None else previous)


def note(signum: int = signal.SIGTERM) -> None:
  """Records a SIGTERM / SIGINT received outside the training loop."""
  record(signum)
  _NOTED.set()


def noted() -> bool:
  return _NOTED.is_set()


def stop_if_noted() -> None:
  """Raises Terminated if a SIGTERM / SIGINT was noted (its own exception may have been
  swallowed)."""
  if _NOTED.is_set():
    raise Terminated()
