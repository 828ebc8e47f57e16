"""Checkpoints of a run: orbax CheckpointManager in `workdir/checkpoints` (`CheckpointStore`).

Each checkpoint (a directory named by the global step) holds `state` (the TrainState pytree) and
`meta` (JSON), as WORKSPACE.md's workdir table lists them; `meta` also holds `state_digest`: the
sha256 of every array of `state` as it was saved.

Saves are synchronous (the train step donates the state's buffers) and atomic (orbax's temporary
directory, renamed when complete); each is read back against its digest before older checkpoints are
rotated away. `restore` checks the digest too (orbax checks no data checksum); a checkpoint that is
unreadable or differs is moved aside to `<step>.unreadable` and the one before is tried. Several
processes: each digests the arrays it can address whole, and all processes agree on each verdict.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import gc
import glob
import hashlib
import itertools
import logging
import os
import shutil
import sys
import traceback
import warnings
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from intermix_jax import io_errors

DIGEST_KEY = 'state_digest'
# Free space required beyond the state's size before a save starts (metadata, OCDBT manifests).
SPACE_MARGIN_BYTES = 1 << 20

_warned_unverified: set[str] = set()


class CheckpointWriteError(io_errors.WriteError):
  """A checkpoint could not be written or did not read back as written (disk full, no
  permission, ...): one line naming the checkpoint's path; nothing older is lost."""


def _quiet_orbax(record: logging.LogRecord) -> bool:
  """The 'absl' logger's filter: drops orbax's log records below `_quiet_orbax.below`."""
  return record.levelno >= _quiet_orbax.below or '/orbax/' not in (record.pathname or '')


def quiet_orbax_logging(below: int = logging.WARNING) -> None:
  """Hides orbax's own log records below `below`: its INFO lines (a dozen per save) for the
  trainer (default), also its WARNINGs for read-only restores (`below=logging.ERROR`: predict,
  adversarial). The latest call sets the level."""
  _quiet_orbax.below = below
  logging.getLogger('absl').addFilter(_quiet_orbax)  # once: addFilter skips one already there


# --- Digest of a state pytree ---------------------------------------------------------------------
def _host_value(x) -> np.ndarray | None:
  """The full value of array `x` on the host, or None if this process cannot address all of it."""
  if isinstance(x, jax.Array):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      x = jax.random.key_data(x)
    if not x.is_fully_addressable:
      if not x.is_fully_replicated:
        return None
      x = x.addressable_shards[0].data
    return np.asarray(jax.device_get(x))
  return np.asarray(x)


def state_digest(state: Any) -> dict[str, str]:
  """{leaf path: sha256 hex of dtype, shape and bytes} of every array of `state` this process can
  read whole (all of them on one process, or when replicated over the mesh)."""
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
    value = _host_value(leaf)
    if value is not None:
      h = hashlib.sha256(f'{value.dtype.str}{value.shape}'.encode())
      h.update(np.ascontiguousarray(value).reshape(-1).view(np.uint8).data)
      out[jax.tree_util.keystr(path)] = h.hexdigest()
  return out


def _digest_problem(saved: dict[str, str], state: Any) -> str | None:
  """None if every leaf of `state` this process can read whole has its digest in `saved`, else
  'n of m arrays differ ..., e.g. <leaf paths>'."""
  actual = state_digest(state)
  bad = [k for k, v in saved.items() if k in actual and actual[k] != v]
  return (f'{len(bad)} of {len(saved)} arrays differ from the digest saved with them, e.g. '
          f'{", ".join(bad[:3])}' if bad else None)


def _all_processes(ok: bool) -> bool:
  """True on every process iff `ok` on every process (the same verdict everywhere); an
  all-gather, so also a barrier: no process returns before every process has called it."""
  if jax.process_count() == 1:
    return ok
  from jax.experimental import multihost_utils
  return bool(np.all(multihost_utils.process_allgather(np.int32(ok))))


# --- What orbax prints while it writes ------------------------------------------------------------
def _from_orbax_write(unraisable) -> bool:
  """Whether an unraisable exception comes from orbax's writes: tensorstore callbacks into an event
  loop orbax has closed, orbax coroutines collected late (at exit: failed imports)."""
  exc, code = unraisable.exc_value, getattr(unraisable.object, 'cr_code', None)
  frames = traceback.walk_tb(unraisable.exc_traceback)
  return ((isinstance(exc, RuntimeError) and 'Event loop is closed' in str(exc))
          or any('/orbax/' in f.f_code.co_filename for f, _ in frames)
          or (code is not None and '/orbax/' in code.co_filename))


@contextlib.contextmanager
def _held_output():
  """Holds back what orbax logs and prints while a save runs. When the block raises an Exception
  (a failed write: dozens of tracebacks from orbax's threads and abandoned writes) it is dropped,
  also what those writes print later (the unraisable-exception hook stays); otherwise its
  warnings are passed on at the end, in order."""
  held, failed, previous_hook = [], [], sys.unraisablehook
  loggers = [logging.getLogger('absl'), logging.getLogger('asyncio')]

  def hold(record: logging.LogRecord) -> bool:  # the loggers' filter
    if '/orbax/' not in record.pathname and record.name != 'asyncio':
      return True
    if not failed and record.levelno >= logging.WARNING:  # passed on at the end
      held.append(functools.partial(logging.getLogger(record.name).handle, record))
    return False

  def hook(unraisable) -> None:
    if not _from_orbax_write(unraisable):
      previous_hook(unraisable)
    elif not failed:
      held.append(functools.partial(previous_hook, unraisable))

  for lg in loggers:
    lg.addFilter(hold)
  sys.unraisablehook = hook
  try:
    yield
  except Exception:
    failed.append(True)
    gc.collect()  # the abandoned coroutines, now rather than at exit
    raise
  finally:
    for lg in loggers:
      lg.removeFilter(hold)
    if not failed:
      sys.unraisablehook = previous_hook
      for release in held:
        release()


# --- The store ------------------------------------------------------------------------------------
class CheckpointStore:
  """Save/restore of (TrainState, meta dict) under `directory`.

  Args:
    directory: absolute or relative path (created if missing).
    keep: number of newest checkpoints kept (>= 1).
    read_only: only restore (e.g. `intermix_jax.predict`): nothing is created, deleted, moved or
      cleaned up, so a training run writing into the same directory is never disturbed; the
      checkpoints `restore` skips are not logged but listed in `rejected` for the caller to report.

  Attributes:
    rejected: [(path, why)] of the checkpoints `restore` skipped (unreadable or corrupted).
    restored_step, restored_verified: the step `restore` returned and whether its digest matched
      (False: written before digests existed).
  """

  def __init__(self, directory: str, keep: int, *, read_only: bool = False):
    self.directory = os.path.abspath(directory)
    self.read_only = read_only
    self.keep = max(1, int(keep))
    self.rejected: list[tuple[str, str]] = []
    self.restored_step: int | None = None
    self.restored_verified = False
    self._verified: set[int] = set()
    # Rotation is done here (after the new checkpoint read back correctly), not by orbax.
    options = ocp.CheckpointManagerOptions(
        max_to_keep=None, create=not read_only, cleanup_tmp_directories=not read_only,
        read_only=read_only, save_interval_steps=0 if read_only else 1,
        enable_async_checkpointing=False)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=('state', 'meta'))

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return max(self.all_steps(), default=None)

  def latest_verified_step(self) -> int | None:
    """The newest checkpoint whose arrays were checked against their digest in this process (read
    back after saving, or restored), or None."""
    return max(self._verified.intersection(self.all_steps()), default=None)

  def path(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  # --- save --------------------------------------------------------------------------------------
  def save(self, step: int, state: Any, meta: dict) -> bool:
    """Writes checkpoint `step` and reads it back; deletes nothing (`rotate` does, once the caller
    has every checkpoint of its step). No-op returning False if `step` exists already.

    Raises:
      CheckpointWriteError: the write failed or did not read back; the older checkpoints are kept.
    """
    if step in self.all_steps():
      return False
    digest = state_digest(state)
    self._check_space(step, state)
    meta = dict(meta, **{DIGEST_KEY: dict(algorithm='sha256', leaves=digest)})
    try:
      with _held_output():
        self._manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
        self._manager.wait_until_finished()
    except Exception as failure:  # pylint: disable=broad-except
      if jax.process_index() == 0:  # its temporary directory (frees the space; nothing else)
        for tmp in glob.glob(os.path.join(glob.escape(self.directory),
                                          f'{step}.orbax-checkpoint-tmp*')):
          shutil.rmtree(tmp, ignore_errors=True)
      with contextlib.suppress(Exception):
        self._manager.reload()
      if not io_errors.is_io_error(failure):
        raise
      if io_errors.is_disk_full(failure):
        raise self._write_error(errno.ENOSPC, step, 'no space left on device'
                                + io_errors.free_space(self.directory)) from failure
      code = failure.errno if isinstance(failure, OSError) and failure.errno else errno.EIO
      raise self._write_error(code, step, io_errors.first_line(failure)) from failure
    problem = self._read_back_problem(step, state, digest)
    if problem is not None:
      aside = self._set_aside(step)
      raise CheckpointWriteError(
          errno.EIO, f'checkpoint {self.path(step)} did not read back as written ({problem}); '
          f'moved to {aside}, the older checkpoints are kept: check the disk of {self.directory}')
    self._verified.add(step)
    return True

  def _check_space(self, step: int, state: Any) -> None:
    """Refuses to start a write that cannot fit (a half-written checkpoint helps nobody)."""
    need = sum(x.nbytes for x in jax.tree.leaves(state)
               if not jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)) + SPACE_MARGIN_BYTES
    try:
      free = shutil.disk_usage(self.directory).free
    except OSError:
      free = need  # cannot tell: let the write try
    if not _all_processes(free >= need):  # every process refuses, or none (no one waits forever)
      raise self._write_error(errno.ENOSPC, step, f'no space left on device ({io_errors.mib(free)} '
                              f'free, about {io_errors.mib(need)} needed)')

  def _write_error(self, code: int, step: int, why: str) -> CheckpointWriteError:
    last = self.latest_step()
    where = (f'resume from checkpoint {self.path(last)} (step {last}, kept)' if last is not None
             else 'start again (no checkpoint was saved before)')
    fix = 'free some space' if code == errno.ENOSPC else 'fix that'
    return CheckpointWriteError(code, f'cannot write checkpoint {self.path(step)}: {why}; {fix} '
                                f'and rerun the same command to {where}')

  def _read_back_problem(self, step: int, state: Any, digest: dict[str, str]) -> str | None:
    """None if checkpoint `step` reads back (to host memory) with the digest of `state`."""
    def host_target(x):  # host memory (no second copy on the device); typed keys as saved
      if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
      return np.empty(np.shape(x), x.dtype)

    target = jax.tree.map(host_target, state)
    try:
      with warnings.catch_warnings(), _held_output():
        warnings.simplefilter('ignore')  # "Sharding info not provided": host arrays, on purpose
        back = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target)))['state']
      problem = _digest_problem(digest, back)
    except Exception as e:  # pylint: disable=broad-except
      problem = io_errors.first_line(e)
    agreed = _all_processes(problem is None)  # on every process: a collective
    return problem or (None if agreed else 'another process read it back differently')

  def _delete(self, steps: list[int]) -> list[int]:
    for s in steps:
      self._manager.delete(s)
      self._verified.discard(s)
    return steps

  def rotate(self) -> None:
    """Deletes all but the newest `keep` checkpoints (call after a `save` that returned)."""
    self._delete(self.all_steps()[:-self.keep])

  def discard_after(self, step: int) -> list[int]:
    """Deletes the checkpoints newer than `step` (runs in one program resume together from a step
    they all have; a newer checkpoint of one run would otherwise block `save` at its step).
    Returns the deleted steps."""
    return self._delete([s for s in self.all_steps() if s > step])

  # --- restore -----------------------------------------------------------------------------------
  def restore(self, target_state: Any, *, at_most: int | None = None
              ) -> tuple[Any, dict, int] | None:
    """(state, meta, step) of the newest checkpoint that reads and matches its digest, or None.

    Args:
      target_state: a TrainState (or its jax.eval_shape) giving the tree structure, dtypes and
        shardings to restore into.
      at_most: only checkpoints of steps <= at_most are considered (None: all).
    """
    for step in reversed([s for s in self.all_steps() if at_most is None or s <= at_most]):
      try:
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target_state), meta=ocp.args.JsonRestore()))
        problem = None
      except Exception as e:  # unreadable checkpoint: set it aside, fall back to the previous one
        problem = io_errors.first_line(e)
      if not _all_processes(problem is None):
        self._reject(step, problem or 'unreadable on another process', 'is unreadable')
        continue
      state, meta = restored['state'], dict(restored['meta'])
      saved = meta.pop(DIGEST_KEY, None)
      if saved is not None:
        problem = _digest_problem(dict(saved.get('leaves', {})), state)
        if not _all_processes(problem is None):
          self._reject(step, problem or 'its arrays differ on another process', 'is corrupted')
          del state, restored
          continue
        self._verified.add(step)
      elif self.directory not in _warned_unverified:
        _warned_unverified.add(self.directory)
        logging.warning('checkpoint %s has no digest (written by an older version): restored '
                        'without verifying its arrays', self.path(step))
      self.restored_step, self.restored_verified = step, saved is not None
      return state, meta, step
    return None

  def _reject(self, step: int, problem: str, what: str) -> None:
    self.rejected.append((self.path(step), f'{what} ({problem})'))
    if not self.read_only:  # read-only: left in place, the caller reports `rejected`
      aside = self._set_aside(step)
      logging.warning('checkpoint %s %s (%s); moved to %s, trying the previous one',
                      self.path(step), what, problem, aside)

  def _set_aside(self, step: int) -> str:
    """Renames checkpoint `step` to `<step>.unreadable` (kept for inspection, ignored by the
    manager, so the resumed run writes a fresh checkpoint `step`); returns the new path."""
    bad = self.path(step)
    names = (f'{bad}.unreadable{n if n > 1 else ""}' for n in itertools.count(1))
    aside = next(name for name in names if not os.path.exists(name))
    _all_processes(True)  # every process has chosen `aside` before it exists ...
    if jax.process_index() == 0:
      os.rename(bad, aside)
    _all_processes(True)  # ... and sees the rename after
    self._verified.discard(step)
    self._manager.reload()
    return aside

  def rejected_summary(self) -> str:
    return '; '.join(f'{p} {why}' for p, why in self.rejected)

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
