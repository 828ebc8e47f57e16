"""Checkpoints of a run: orbax CheckpointManager in `workdir/checkpoints`.

Each checkpoint (a directory named by the global step) holds two items:
  state: the TrainState pytree (params, BatchNorm statistics, optimiser state, counters);
  meta:  JSON: the data-iterator position (epoch, step_in_epoch), the run's PRNG key data, the
         per-epoch history so far, partial-epoch metric sums, the wall time so far.

Saves are synchronous (the train step donates the state's buffers, so a background write must not
read them later) and atomic: orbax writes into a temporary directory and renames it when complete,
so a process killed during a write leaves the previous checkpoint as the latest; the temporary
directory is removed when the next run opens the manager. Only the newest `keep` checkpoints are kept.
If the newest checkpoint cannot be read, `restore` logs why, moves it aside to `<step>.unreadable`
and falls back to the one before (the resumed run then rewrites `<step>`).
"""
from __future__ import annotations

import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp


class CheckpointStore:
  """Save/restore of (TrainState, meta dict) under `directory`.

  Args:
    directory: absolute or relative path (created if missing).
    keep: number of newest checkpoints kept (>= 1).
    read_only: only restore (e.g. `intermix_jax.predict`): nothing is created, deleted or
      cleaned up, so a training run writing into the same directory is never disturbed.
  """

  def __init__(self, directory: str, keep: int, *, read_only: bool = False):
    self.directory = os.path.abspath(directory)
    self.read_only = read_only
    options = ocp.CheckpointManagerOptions(
        max_to_keep=None if read_only else keep, create=not read_only,
        cleanup_tmp_directories=not read_only, read_only=read_only,
        save_interval_steps=0 if read_only else 1,
        enable_async_checkpointing=False)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=('state', 'meta'))

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    steps = self.all_steps()
    return steps[-1] if steps else None

  def path(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def save(self, step: int, state: Any, meta: dict) -> bool:
    """Writes checkpoint `step` (no-op returning False if it exists already) and waits for it."""
    if step in self.all_steps():
      return False
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
    self._manager.wait_until_finished()
    return True

  def restore(self, target_state: Any) -> tuple[Any, dict, int] | None:
    """(state, meta, step) of the newest readable checkpoint, or None if there is none.

    Args:
      target_state: a TrainState (or its jax.eval_shape) giving the tree structure, dtypes and
        shardings to restore into.
    """
    for step in reversed(self.all_steps()):
      try:
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target_state), meta=ocp.args.JsonRestore()))
      except Exception as e:  # unreadable checkpoint: set it aside, fall back to the previous one
        if self.read_only:  # leave it in place
          logging.warning('checkpoint %s is unreadable (%s); trying the previous one',
                          self.path(step), type(e).__name__)
        else:
          self._set_aside(step, e)
        continue
      return restored['state'], dict(restored['meta']), step
    return None

  def _set_aside(self, step: int, error: Exception) -> None:
    """Renames unreadable checkpoint `step` to `<step>.unreadable` (kept for inspection, ignored
    by the manager, so the resumed run writes a fresh checkpoint `step`)."""
    bad = self.path(step)
    aside = f'{bad}.unreadable'
    n = 1
    while os.path.exists(aside):
      n += 1
      aside = f'{bad}.unreadable{n}'
    if jax.process_index() == 0:
      os.rename(bad, aside)
    logging.warning('checkpoint %s is unreadable (%s: %s); moved to %s, trying the previous one',
                    bad, type(error).__name__, str(error).splitlines()[0] if str(error) else '',
                    aside)
    self._manager.reload()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
