"""A trained model: built from a run's config, loaded from its workdir, evaluated clip by clip.

    model = trained.build_model(config, num_classes)                # train, and the loaders below
    run = trained.load_workdir(workdir)                             # predict, adversarial
    ev = trained.evaluate_clips(steps.mesh_eval_step(run.model, run.mesh), run.state, loader,
                                run.mesh)                           # train, predict, adversarial

`load_workdir` restores the newest checkpoint whose arrays match their digest, read-only (a run
still training there is not disturbed); `evaluate_clips` is the one evaluation loop.
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import os
from typing import Any, Callable, Sequence

import jax
import ml_collections
import numpy as np

from intermix_jax import checkpoints
from intermix_jax import io_errors
from intermix_jax import parallel
from intermix_jax import steps
from intermix_jax import workdir as workdir_lib


def build_model(config: ml_collections.ConfigDict, num_classes: int):
  """The flax backbone `config.backbone` with `config.model`'s options for `num_classes` classes.

  Raises:
    ValueError: an unknown backbone or option (the message names it).
  """
  from intermix_jax import models  # pylint: disable=g-import-not-at-top
  return models.get_model(config.backbone, int(num_classes), **config.model.to_dict())


# ------------------------------------------------------------------------------------------------
# A trained workdir
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class TrainedRun:
  """A training run's workdir, restored for use.

  Attributes:
    workdir: absolute path.
    config: the run's ConfigDict (config.json).
    results: results.json as a dict, or None when the run has not written one yet.
    class_names: C names, index = label (results.json, else the dataset's own list).
    model: the flax backbone.
    mesh: the devices `state` lives on (replicated).
    state: steps.TrainState of the restored checkpoint.
    step: its global step.
    skipped: '; '-joined `path why` of newer checkpoints that were unreadable or corrupted and
      left in place ('' when the newest one was used; else logged as a warning).
  """
  workdir: str
  config: ml_collections.ConfigDict
  results: dict | None
  class_names: tuple[str, ...]
  model: Any
  mesh: jax.sharding.Mesh
  state: steps.TrainState
  step: int
  skipped: str


def load_workdir(workdir: str, *, check: Callable[[ml_collections.ConfigDict, dict | None], None]
                 | None = None) -> TrainedRun:
  """Loads a training workdir (one fold): config, results, model and the newest verified state,
  on this process's first device.

  Args:
    workdir: the run's workdir.
    check: called with (config, results or None) before the checkpoint is read; may raise.
  Raises:
    io_errors.WorkdirError: one line: no such directory; a fold=all run's root; no config.json;
      config.json or results.json not a JSON object (the file is named); no class names; no
      checkpoint that reads and matches its digest (the skipped ones are named).
  """
  workdir = os.path.abspath(workdir)
  if not os.path.isdir(workdir):
    raise io_errors.WorkdirError(f'--workdir={workdir}: no such directory')
  config_path = os.path.join(workdir, workdir_lib.CONFIG_FILE)
  if not os.path.exists(config_path):
    folds = sorted(d for d in os.listdir(workdir)
                   if d.startswith('fold_') and os.path.isdir(os.path.join(workdir, d)))
    if folds:
      raise io_errors.WorkdirError(
          f'--workdir={workdir} is a cross-validation run (fold=all), one model per fold: point '
          f'--workdir at one of its fold_<k> directories, e.g. {os.path.join(workdir, folds[0])}')
    raise io_errors.WorkdirError(
        f'--workdir={workdir} has no {workdir_lib.CONFIG_FILE}: not the workdir of a training run '
        '(python -m intermix_jax.main)')
  stored = workdir_lib.read_json_object(config_path, io_errors.WorkdirError)
  config = ml_collections.ConfigDict(workdir_lib.with_added_fields(stored))
  results_path = os.path.join(workdir, workdir_lib.RESULTS_FILE)
  results = (workdir_lib.read_json_object(results_path, io_errors.WorkdirError)
             if os.path.isfile(results_path) else None)
  if check is not None:
    check(config, results)
  if results and results.get('class_names'):
    class_names = tuple(results['class_names'])
  else:  # results.json not written yet: the dataset's own list
    from intermix_jax import data  # pylint: disable=g-import-not-at-top
    try:
      class_names = tuple(data.dataset_info(config).class_names)
    except (ValueError, OSError) as e:
      raise io_errors.WorkdirError(
          f'--workdir={workdir}: no class names in {workdir_lib.RESULTS_FILE} and the dataset '
          f'cannot tell them ({e})') from e
  model = build_model(config, len(class_names))
  mesh = parallel.make_mesh(devices=jax.local_devices()[:1])
  opt = steps.OptimizerSpec.from_config(config.opt, num_epochs=1, steps_per_epoch=1)
  target = steps.abstract_state(model, opt, mesh)
  ckpt_dir = os.path.join(workdir, workdir_lib.CHECKPOINTS_DIR)
  restored, skipped = None, ''
  if os.path.isdir(ckpt_dir):
    store = checkpoints.CheckpointStore(ckpt_dir, int(config.keep_checkpoints), read_only=True)
    try:
      restored = store.restore(target)
    finally:
      store.close()
    skipped = store.rejected_summary()
  if restored is None:
    why = f'; skipped: {skipped}' if skipped else ' (has the run saved one yet?)'
    raise io_errors.WorkdirError(f'--workdir={workdir}: no readable checkpoint in {ckpt_dir}{why}')
  state, _, step = restored
  if skipped:  # never silently: say which checkpoint is used instead
    logging.warning('--workdir=%s: using checkpoint %s (step %d), not the newest: %s', workdir,
                    store.path(step), step, skipped)
  return TrainedRun(workdir=workdir, config=config, results=results, class_names=class_names,
                    model=model, mesh=mesh, state=state, step=int(step), skipped=skipped)


# ------------------------------------------------------------------------------------------------
# The evaluation loop
# ------------------------------------------------------------------------------------------------
def evaluate_clips(eval_step: Callable, state: Any, loader: Any,
                   mesh: jax.sharding.Mesh | None = None, *, runs: bool = False,
                   per_clip: Sequence[str] = ('pred',),
                   totals: Sequence[str] = ('num_correct', 'count')) -> dict | list[dict]:
  """Runs `eval_step` over every batch of `loader` on `mesh`: per-clip outputs and totals.

  Every process calls this with its own loader; each batch's `index` (clip position, -1 on
  padding rows) travels with the outputs, so they come out in the loader's clip order.

  Args:
    eval_step: `fn(state, batch) -> dict` on `mesh` (e.g. steps.mesh_eval_step(model, mesh)),
      batch = dict(x float32 (b, crops, T), y int32 (b,), mask bool (b,)); its outputs named in
      `per_clip` have the clip axis first, those in `totals` are the batch's totals (`count`: int32
      scalar, the unmasked clips).
    state: what eval_step takes (replicated on `mesh`).
    loader: `batches()` -> dicts of x, y, mask and index (int32 (b,)), and `num_examples` N
      (data.EvalLoader, or alike).
    mesh: the devices (default: parallel.make_mesh()).
    runs: K runs at once: `loader` a list of K loaders (the same rows per batch), `state` stacked
      on axis 0, `eval_step` with a run axis; a run whose fold has fewer batches gets masked ones.
    per_clip, totals: names of eval_step outputs; `count` must be among `totals`.
  Returns:
    dict (with `runs`: a list of K, as if evaluated alone), the same on every process: per name
    of `per_clip`, numpy (N, ...) in clip order; `labels` int64 (N,); per name of `totals`, the
    sum over the batches (float64 or int64); `count` int; with `num_correct`, `error` = 100 (1 -
    num_correct / count) (%).
  Raises:
    RuntimeError: `count` is not N, or the gathered rows do not hold every clip exactly once.
  """
  mesh = parallel.make_mesh() if mesh is None else mesh
  per_clip, totals = tuple(per_clip), tuple(totals)
  loaders = list(loader) if runs else [loader]
  outs = []
  for got in itertools.zip_longest(*(l.batches() for l in loaders)):
    like = next(b for b in got if b is not None)  # a run's missing batch: masked padding rows
    empty = dict({k: np.zeros_like(like[k]) for k in ('x', 'y', 'mask')},
                 index=np.full_like(like['index'], -1))
    got = [{k: (b if b is not None else empty)[k] for k in empty} for b in got]
    batch = parallel.host_batch_to_global(got if runs else got[0], mesh, runs=runs)
    out = eval_step(state, {k: batch[k] for k in ('x', 'y', 'mask')})
    outs.append(dict({k: out[k] for k in per_clip + totals}, y=batch['y'], index=batch['index']))
  host = parallel.global_to_host(outs)  # one transfer at the end: the steps run back to back
  if not runs:
    return _collect(host, loader.num_examples, per_clip, totals)
  return [_collect([{name: o[name][k] for name in o} for o in host], l.num_examples,
                   per_clip, totals) for k, l in enumerate(loaders)]


def _collect(host: list, n: int, per_clip: tuple, totals: tuple) -> dict:
  """Per-batch outputs on the host -> `evaluate_clips`' result (clip order, totals, error)."""
  result = {}
  for k in totals:  # summed in float64 (floats) or int64 (integers)
    values = [np.asarray(o[k]) for o in host] or [np.zeros((), np.int64)]
    dtype = np.float64 if np.issubdtype(values[0].dtype, np.floating) else np.int64
    result[k] = sum((v.astype(dtype) for v in values[1:]), values[0].astype(dtype))
  count = int(result['count'])
  if count != n:
    raise RuntimeError(f'evaluation saw {count} clips, the test fold has {n}')
  cat = lambda k: np.concatenate([np.asarray(o[k]) for o in host]) if host else np.zeros((0,))
  ordered = clip_order(cat('index'), {k: cat(k) for k in per_clip + ('y',)}, n)
  result.update(ordered, labels=ordered.pop('y').astype(np.int64))
  result['count'] = count
  if 'num_correct' in totals:
    result['error'] = 100.0 * (1.0 - result['num_correct'] / max(count, 1))
  return result


def clip_order(index: np.ndarray, rows: dict[str, np.ndarray],
               num_examples: int) -> dict[str, np.ndarray]:
  """Gathered evaluation rows -> the same outputs in clip order.

  Args:
    index: int (R,) clip position of each gathered row, -1 on padding rows.
    rows: name -> array (R, ...) with one entry per row (e.g. pred, y).
    num_examples: N clips.
  Returns:
    name -> array (N, ...), entry i for clip i.
  Raises:
    ValueError: an array of `rows` does not have R entries.
    RuntimeError: naming the missing, repeated or out-of-range clips unless every clip 0..N-1
      occurs exactly once among the rows with index >= 0.
  """
  index = np.asarray(index).reshape(-1)
  rows = {k: np.asarray(v) for k, v in rows.items()}
  wrong = {k: v.shape for k, v in rows.items() if v.shape[:1] != index.shape}
  if wrong:
    raise ValueError(f'clip_order: index {index.shape} and {wrong} must have one entry per row')
  valid = index >= 0
  idx = index[valid].astype(np.int64)
  outside = idx[idx >= num_examples]
  seen = np.bincount(idx[idx < num_examples], minlength=num_examples)
  if outside.size or np.any(seen != 1):
    raise RuntimeError(
        f'evaluation rows do not hold each of the {num_examples} test clips exactly once: '
        f'missing {np.flatnonzero(seen == 0)[:10].tolist()}, repeated '
        f'{np.flatnonzero(seen > 1)[:10].tolist()}, out of range {outside[:10].tolist()} '
        '(first 10 of each)')
  out = {}
  for k, v in rows.items():
    out[k] = np.empty((num_examples,) + v.shape[1:], v.dtype)
    out[k][idx] = v[valid]
  return out
