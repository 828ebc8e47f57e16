"""Training and evaluation of one run: `train_and_evaluate(config, workdir)`.

What lands in `workdir` (see WORKSPACE.md):
  config.json         the run's config; a rerun with a different config is refused
  dataset.json        the identity of the data it trains on (clip counts per fold, digests; no
                      paths); a resume on changed data is refused (workdir.check_or_store_dataset)
  checkpoints/<step>/ orbax checkpoints (periodic, final, on SIGTERM), the newest `keep_checkpoints`
  results.json        status, config, fold, seed, per-epoch metrics, final error (LAST epoch), wall
                      time, versions, per-clip predictions of the last evaluation (every test
                      clip once, in the order of `filenames`, whatever the process count), the
                      data: dataset_identity, class_clips, classes_without_test_clips,
                      skipped_files (bad files the preparation skipped, on every run)
  events.out.tfevents.*  TensorBoard scalars (train/loss, train/error, train/lr, train/steps_per_sec,
                      test/error, ...)
With `fold='all'` every fold runs into `workdir/fold_<k>` (and `workdir/cv_results.json` sums up).

Rerunning the same command resumes from the newest readable checkpoint: parameters, optimiser state,
counters, the data position (epoch, step within the epoch), the PRNG key, the history and the partial
epoch's metric sums, so the resumed run ends bitwise equal to an uninterrupted one (on CPU). SIGTERM
(preemption) saves a checkpoint at the current step and returns with status 'preempted' (main exits
0). A non-finite loss or gradient is never applied (steps.py); with `nan_policy='stop'` training stops
with `NonFiniteError` naming the step and the last good checkpoint, with 'skip' it carries on and
counts such steps (`nonfinite_steps` in the metrics).
"""
from __future__ import annotations

import copy
import functools
import math
import os
import platform
import signal
import subprocess
import threading
import time

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from intermix_jax import checkpoints
from intermix_jax import config_checks
from intermix_jax import schedules
from intermix_jax import steps
from intermix_jax import summaries
from intermix_jax import workdir as workdir_lib

RESULTS_FILE = 'results.json'
CV_RESULTS_FILE = 'cv_results.json'


class NonFiniteError(RuntimeError):
  """Training met a non-finite loss or gradient under nan_policy='stop'."""


# ------------------------------------------------------------------------------------------------
# Small helpers
# ------------------------------------------------------------------------------------------------
def _is_main() -> bool:
  return jax.process_index() == 0


def versions() -> dict[str, str]:
  """Versions of the software that produced a result."""
  import flax
  import optax
  import orbax.checkpoint as ocp
  out = dict(python=platform.python_version(), jax=jax.__version__, flax=flax.__version__,
             optax=optax.__version__, orbax_checkpoint=getattr(ocp, '__version__', '?'),
             numpy=np.__version__, platform=jax.default_backend(),
             devices=f'{jax.device_count()} x {jax.devices()[0].device_kind}',
             processes=str(jax.process_count()))
  try:
    import intermix_jax
    out['intermix_jax'] = getattr(intermix_jax, '__version__', '0.1.0')
    repo = os.path.dirname(os.path.dirname(os.path.abspath(intermix_jax.__file__)))
    out['git_commit'] = subprocess.run(
        ['git', '-C', repo, 'rev-parse', 'HEAD'], capture_output=True, text=True,
        timeout=10).stdout.strip() or 'unknown'
  except Exception:  # not a git checkout, no git: the version alone will do
    out.setdefault('git_commit', 'unknown')
  return out


def method_label(config: ml_collections.ConfigDict) -> str:
  """Short name of the training method, e.g. 'intermix', 'intermix[layers=0,r-weighting]+aug'."""
  label = config.strategy
  opts = []
  m = config.mixing
  if config.strategy != 'standard':
    if m.eligible_layers is not None:
      opts.append('layers=' + ','.join(str(k) for k in m.eligible_layers))
    if config.strategy in ('bc', 'speechmix', 'intermix') and not m.p_weighting:
      opts.append('r-weighting')
  if config.strategy == 'intermix':
    if not m.normalize:
      opts.append('no-normalize')
    if m.signed_mode != 'superpose':
      opts.append(m.signed_mode)
    if m.stop_gradient_interference:
      opts.append('stopgrad')
  if config.strategy == 'mixup' and m.alpha != 1.0:
    opts.append(f'alpha={m.alpha:g}')
  if opts:
    label += '[' + ','.join(opts) + ']'
  if config.strong_augment:
    label += '+aug'
  return label


def _fmt_time(seconds: float) -> str:
  if not math.isfinite(seconds):
    return '?'
  seconds = int(round(seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f'{h}:{m:02d}:{s:02d}'


class _QuietLibraries:
  """absl-logging filter: drops INFO records of orbax (a dozen lines per checkpoint save)."""

  def filter(self, record) -> bool:
    return record.levelno >= 30 or '/orbax/' not in getattr(record, 'pathname', '')


def _quiet_orbax_logging() -> None:
  logger = logging.get_absl_logger()
  if not any(isinstance(f, _QuietLibraries) for f in logger.filters):
    logger.addFilter(_QuietLibraries())


class _TerminationFlag:
  """Preemption notice: SIGTERM is recorded instead of killing the process.

  One process: a Python SIGTERM handler sets the flag (the old handler is restored on exit).
  Several processes: JAX's preemption service (started by jax.distributed) receives the notice and
  `reached(step)` is True on every process at the same step, so they save the same checkpoint.
  """

  def __init__(self):
    self._flag = False
    self._old = None
    self._multi = jax.process_count() > 1

  def __enter__(self):
    if not self._multi and threading.current_thread() is threading.main_thread():
      self._old = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self._flag = True

  def reached(self, step: int) -> bool:
    """Whether to save and stop after `step` (call after every step on every process)."""
    if self._multi and not self._flag:
      from jax.experimental import multihost_utils
      try:
        self._flag = multihost_utils.reached_preemption_sync_point(step)
      except RuntimeError:  # no preemption service (jax.distributed without it): no notice
        pass
    return self._flag

  @property
  def requested(self) -> bool:
    return self._flag

  def __exit__(self, *exc):
    if self._old is not None:
      signal.signal(signal.SIGTERM, self._old)
    return False


def prepare_data_once(config: ml_collections.ConfigDict, sample_rate: int) -> None:
  """Several processes: process 0 prepares the dataset in config.data_dir, the others wait.

  Without this every process would prepare on first use, racing on a shared data_dir. After the
  barrier (multihost_utils.sync_global_devices) every process builds its loaders from the prepared
  data. If process 0 cannot prepare, it still reaches the barrier and then raises; the others raise
  a RuntimeError pointing at its log (nobody waits forever). One process: nothing to do (the loaders
  prepare on first use).
  """
  if jax.process_count() == 1:
    return
  from jax.experimental import multihost_utils
  from intermix_jax import data
  error = None
  if _is_main():
    try:
      data.prepare(config, sample_rate)
    except Exception as e:  # reported after the barrier, so that nobody waits forever
      error = e
  multihost_utils.sync_global_devices('intermix_data_prepared')
  failed = bool(multihost_utils.broadcast_one_to_all(np.int32(error is not None)))
  if error is not None:
    raise error
  if failed:
    raise RuntimeError(f'process 0 could not prepare config.dataset={config.dataset!r} in '
                       f'config.data_dir={config.get("data_dir")!r}; see its log for the reason')


# ------------------------------------------------------------------------------------------------
# Entry point
# ------------------------------------------------------------------------------------------------
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains and evaluates `config` in `workdir`; returns the results dict (see results.json).

  Raises:
    config_checks.ConfigError: a field is unusable (before any heavy work).
    workdir_lib.WorkdirConfigError: `workdir` belongs to a different config.
    NonFiniteError: a non-finite loss or gradient under nan_policy='stop'.
  """
  config_checks.validate(config, device_count=jax.device_count(),
                         process_count=jax.process_count())
  _quiet_orbax_logging()
  workdir = os.path.abspath(workdir)
  if config.fold == 'all':
    return _cross_validate(config, workdir)
  return _train_fold(config, workdir)


def _cross_validate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  from intermix_jax import data
  info = data.dataset_info(config)
  workdir_lib.check_or_store_config(workdir, config, write=_is_main())
  folds = []
  for k in range(1, info.num_folds + 1):
    fold_config = copy.deepcopy(config)
    fold_config.fold = k
    result = _train_fold(fold_config, os.path.join(workdir, f'fold_{k}'))
    folds.append(dict(fold=k, status=result['status'], final_error=result['final_error']))
    if result['status'] != 'finished':
      break
  errors = [f['final_error'] for f in folds if f['final_error'] is not None]
  done = len(errors) == info.num_folds
  summary = dict(dataset=config.dataset, backbone=config.backbone, method=method_label(config),
                 seed=config.seed, folds=folds,
                 status='finished' if done else folds[-1]['status'],
                 mean_error=float(np.mean(errors)) if done else None)
  if _is_main():
    workdir_lib.write_json_atomic(os.path.join(workdir, CV_RESULTS_FILE), summary)
    if done:
      logging.info('cross-validation %s: error %.2f%% (folds: %s)', workdir, summary['mean_error'],
                   ', '.join(f'{e:.2f}' for e in errors))
  return summary


# ------------------------------------------------------------------------------------------------
# One fold
# ------------------------------------------------------------------------------------------------
class _Run:
  """Everything one fold's training needs, built once (model, data, steps, checkpoints)."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    from intermix_jax import data, mixing, models, parallel
    self.config = config
    self.workdir = workdir
    self.is_main = _is_main()
    self.info = data.dataset_info(config)
    try:
      self.model = models.get_model(config.backbone, self.info.num_classes, **config.model)
    except ValueError as e:
      raise config_checks.ConfigError(f'config.model / config.backbone={config.backbone!r}: {e}') from e
    try:
      strategy = mixing.get_strategy(config.strategy, **config.mixing)
    except ValueError as e:
      raise config_checks.ConfigError(f'config.mixing / config.strategy={config.strategy!r}: {e}') from e
    config_checks.validate(
        config, num_folds=self.info.num_folds, num_mix_points=self.model.num_mix_points,
        device_count=jax.device_count(), process_count=jax.process_count(), mixes=strategy.mixes)
    workdir_lib.check_or_store_config(workdir, config, write=self.is_main)
    if config.opt_defaults_from:
      b, d = config.opt_defaults_from.split('/')
      dataset = config.dataset if config.dataset in ('esc50', 'esc10', 'urbansound8k') else 'esc50'
      if (b, d) != (config.backbone, dataset):
        logging.warning('config.backbone=%s / dataset=%s, but the optimisation fields came from the '
                        'docs/method.md §5 row of %s: to get the row of this backbone and dataset, '
                        'give them after the colon (configs/x.py:backbone=...), not as --config.backbone',
                        config.backbone, config.dataset, config.opt_defaults_from)

    # Devices: one 'data' axis over every device; mixing per device (parallel.py).
    self.mesh = parallel.make_mesh()
    self.parallel = parallel
    self.strategy = parallel.shard_strategy(strategy, self.mesh) if jax.device_count() > 1 else strategy
    self.mixes = strategy.mixes

    pi, pc = jax.process_index(), jax.process_count()
    prepare_data_once(config, self.model.sample_rate)
    self.train_data = data.make_train_loader(config, self.model.sample_rate, self.model.input_length,
                                             process_index=pi, process_count=pc)
    self.eval_data = data.make_eval_loader(config, self.model.sample_rate, self.model.input_length,
                                           process_index=pi, process_count=pc)
    # Identity, clips per class, skipped files; LayoutError when a class has no training clip.
    self.run_data = data.describe_run_data(config, self.model.sample_rate, self.train_data,
                                           self.eval_data)
    self.steps_per_epoch = int(config.steps_per_epoch or self.train_data.steps_per_epoch)
    if self.steps_per_epoch < 1:
      raise config_checks.ConfigError(
          f'config.batch_size={config.batch_size} leaves no full batch in the '
          f'{self.train_data.num_examples} training clips of fold {config.fold}; use a smaller batch')
    self.num_epochs = schedules.total_epochs(config.num_epochs, self.mixes,
                                             config.double_epochs_for_mixing)
    self.total_steps = self.num_epochs * self.steps_per_epoch
    self.opt = steps.OptimizerSpec.from_config(config.opt, self.num_epochs, self.steps_per_epoch)
    self.schedule = self.opt.lr_schedule()
    statics = dict(model=self.model, strategy=self.strategy, opt=self.opt,
                   num_classes=self.info.num_classes)
    if jax.device_count() == 1:
      # Compiled once per process for these static arguments (fold=all reuses them).
      self.train_step = functools.partial(steps.train_step_cached, **statics)
      self.eval_step = functools.partial(steps.eval_step_cached, model=self.model)
    else:  # explicit shardings on the mesh (parallel.py)
      self.train_step = steps.jit_train_step(
          steps.make_train_step(self.model, self.strategy, self.opt.tx(), self.info.num_classes,
                                self.schedule), **parallel.train_step_shardings(self.mesh))
      self.eval_step = steps.jit_eval_step(steps.make_eval_step(self.model),
                                           **parallel.eval_step_shardings(self.mesh))
    self.store = checkpoints.CheckpointStore(os.path.join(workdir, 'checkpoints'),
                                             config.keep_checkpoints)
    # A resume must read the data the checkpoints were trained on (workdir/dataset.json).
    workdir_lib.check_or_store_dataset(workdir, self.run_data.identity,
                                       resuming=self.store.latest_step() is not None,
                                       write=self.is_main)

  # --- placement -------------------------------------------------------------------------------
  # One device: host arrays go straight into the jitted steps (one compilation per process for
  # every run with the same statics). Several devices: global arrays on the mesh.
  def place_train_batch(self, batch: dict) -> dict:
    batch = {k: batch[k] for k in ('x', 'y')}
    if jax.device_count() == 1:
      return batch
    return self.parallel.host_batch_to_global(batch, self.mesh, pairs=self.mixes)

  def place_key(self, key: jax.Array) -> jax.Array:
    return key if jax.device_count() == 1 else self.parallel.replicate(key, self.mesh)

  def init_state(self, key: jax.Array) -> steps.TrainState:
    state = steps.init_state_cached(self.model, self.opt, key, self.model.input_length)
    if jax.device_count() == 1:
      # Committed to the device, like a state restored from a checkpoint: fresh and resumed runs
      # then share one compiled step (bitwise-equal results).
      return jax.device_put(state, jax.local_devices()[0])
    return self.parallel.replicate(jax.device_get(state), self.mesh)

  def abstract_state(self, key: jax.Array) -> steps.TrainState:
    """Shapes, dtypes and shardings of the state (a restore target; nothing is computed)."""
    shapes = jax.eval_shape(functools.partial(
        steps._init_state, self.model, self.opt.tx(), input_length=self.model.input_length), key)
    sharding = (jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
                if jax.device_count() == 1 else self.parallel.replicated_sharding(self.mesh))
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes)

  # --- evaluation ------------------------------------------------------------------------------
  def evaluate(self, state: steps.TrainState) -> dict:
    """10-crop error (%) on the test fold and the per-clip predictions (see `evaluate_clips`)."""
    return evaluate_clips(self.eval_step, state, self.eval_data,
                          self.mesh if jax.device_count() > 1 else None)


def evaluate_clips(eval_step, state, loader, mesh=None) -> dict:
  """Multi-crop evaluation of every clip of an EvalLoader, on one device or over a mesh.

  Every process calls this with its own loader (`process_index` = its jax.process_index()); each
  batch's `index` (clip position in `loader.filenames`, -1 on padding rows) travels with the
  labels and predictions, so the per-clip lists come out in `loader.filenames` order whatever
  order the mesh gives the processes' rows.

  Args:
    eval_step: `fn(state, batch) -> dict` with pred (rows,) int32, num_correct and count (int32
      scalars), e.g. steps.eval_step jitted (with parallel.eval_step_shardings(mesh) when `mesh`
      is given); `batch` = dict(x, y, mask).
    state: what eval_step takes (placed like eval_step expects it).
    loader: data.EvalLoader of this process's share.
    mesh: None: batches go to eval_step as host arrays (one device); else each process's rows
      become global arrays on `mesh` (parallel.host_batch_to_global).
  Returns:
    dict(error: float (%), num_correct: int, count: int, preds: list of N int, labels: list of N
    int), the same on every process; preds[i], labels[i] belong to loader.filenames[i].
  Raises:
    RuntimeError: the gathered rows do not hold every test clip exactly once.
  """
  from intermix_jax import parallel
  outs = []
  for batch in loader.batches():
    batch = {k: batch[k] for k in ('x', 'y', 'mask', 'index')}
    if mesh is not None:
      batch = parallel.host_batch_to_global(batch, mesh)
    out = eval_step(state, {k: batch[k] for k in ('x', 'y', 'mask')})
    outs.append(dict(pred=out['pred'], num_correct=out['num_correct'], count=out['count'],
                     y=batch['y'], index=batch['index']))
  host = parallel.global_to_host(outs)
  num_correct = sum(int(o['num_correct']) for o in host)
  count = sum(int(o['count']) for o in host)
  if count != loader.num_examples:
    raise RuntimeError(f'evaluation saw {count} clips, the test fold has {loader.num_examples}')
  cat = lambda key: np.concatenate([np.asarray(o[key]).reshape(-1) for o in host])
  preds, labels = clip_order(cat('index'), cat('pred'), cat('y'), loader.num_examples)
  error = 100.0 * (1.0 - num_correct / max(count, 1))
  return dict(error=error, num_correct=num_correct, count=count, preds=preds, labels=labels)


def clip_order(index: np.ndarray, pred: np.ndarray, label: np.ndarray,
               num_examples: int) -> tuple[list[int], list[int]]:
  """Gathered evaluation rows -> per-clip predictions and labels in clip order.

  Args:
    index: int (R,) clip position of each gathered row, -1 on padding rows; pred, label: int
      (R,) the row's prediction and label; num_examples: N clips.
  Returns:
    (preds, labels): lists of N Python ints, entry i for clip i.
  Raises:
    RuntimeError: naming the missing or repeated clips unless every clip 0..N-1 occurs exactly
      once among the rows with index >= 0.
  """
  index, pred, label = (np.asarray(a).reshape(-1) for a in (index, pred, label))
  if not index.shape == pred.shape == label.shape:
    raise ValueError(f'clip_order: index {index.shape}, pred {pred.shape} and label '
                     f'{label.shape} must have one entry per row')
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
  preds = np.empty(num_examples, np.int64)
  labels = np.empty(num_examples, np.int64)
  preds[idx], labels[idx] = pred[valid], label[valid]
  return preds.tolist(), labels.tolist()


def _empty_meta(train_key: jax.Array) -> dict:
  return dict(history=[], partial=dict(loss=0.0, error=0.0, n=0), wall_time=0.0,
              rng=np.asarray(jax.random.key_data(train_key)).tolist(), last_eval=None,
              nonfinite_steps=0)


def _train_fold(config: ml_collections.ConfigDict, workdir: str) -> dict:
  t0 = time.time()
  run = _Run(config, workdir)
  cfg = run.config
  spe, total = run.steps_per_epoch, run.total_steps
  init_key, train_key = jax.random.split(jax.random.key(cfg.seed))
  meta = _empty_meta(train_key)
  restored = run.store.restore(run.abstract_state(init_key))
  if restored is None:
    if run.store.rejected:
      logging.warning('%s: no usable checkpoint left (%s); training from the start', workdir,
                      run.store.rejected_summary())
    state = run.init_state(init_key)
  else:
    state, meta, ckpt_step = restored
    train_key = jax.random.wrap_key_data(np.asarray(meta['rng'], np.uint32))
    logging.info('resuming %s from checkpoint %s (step %d of %d: %d epochs and %d batches done; '
                 '%s)', workdir, run.store.path(ckpt_step), ckpt_step, total, meta['epoch'],
                 meta['step_in_epoch'], 'verified' if run.store.restored_verified else
                 'unverified: no digest')
  train_key = run.place_key(train_key)
  start = int(jax.device_get(state.step))
  writer = summaries.SummaryWriter(workdir, enabled=run.is_main)
  if start == 0 and run.is_main:
    writer.write_texts(0, {'config': '```\n' + str(cfg) + '\n```'})

  base = dict(config=workdir_lib.config_to_dict(cfg), dataset=cfg.dataset, backbone=cfg.backbone,
              strategy=cfg.strategy, method=method_label(cfg), fold=cfg.fold, seed=cfg.seed,
              num_classes=run.info.num_classes, class_names=list(run.info.class_names),
              num_folds=run.info.num_folds,
              num_epochs=run.num_epochs, steps_per_epoch=spe, total_steps=total,
              num_train_examples=run.train_data.num_examples,
              num_test_examples=run.eval_data.num_examples, workdir=workdir,
              dataset_identity=run.run_data.identity, class_clips=run.run_data.class_clips,
              classes_without_test_clips=run.run_data.classes_without_test_clips,
              classes_without_clips=run.run_data.classes_without_clips,
              skipped_files=run.run_data.skipped_files)
  vers = versions()

  def results(status: str, step: int, message: str = '') -> dict:
    last = meta['last_eval']
    finished = status == 'finished'
    return dict(base, status=status, message=message, step=step, history=meta['history'],
                final_error=last['error'] if finished else None,
                final_epoch=last['epoch'] if finished else None,
                last_eval_error=last['error'] if last else None,
                nonfinite_steps=meta['nonfinite_steps'],
                wall_time_s=meta['wall_time'] + (time.time() - t0), versions=vers,
                predictions=(dict(filenames=list(run.eval_data.filenames), labels=last['labels'],
                                  preds=last['preds'], epoch=last['epoch']) if last else None))

  def write_results(status: str, step: int, message: str = '') -> dict:
    r = results(status, step, message)
    if run.is_main:
      workdir_lib.write_json_atomic(os.path.join(workdir, RESULTS_FILE), r)
    return r

  def save(step: int, partial: dict) -> None:
    meta_out = dict(meta, epoch=step // spe, step_in_epoch=step % spe, global_step=step,
                    partial=partial, wall_time=meta['wall_time'] + (time.time() - t0))
    run.store.save(step, state, meta_out)

  # nan_policy=skip: steps checked so far and the run of consecutive non-finite steps seen.
  nonfinite = dict(step=start, streak=0)
  give_up_after = max(spe, 3)  # consecutive non-finite steps: the state itself is broken

  def last_good_checkpoint() -> str:
    """The checkpoint to name after a non-finite step: only one verified against its digest
    (read back after saving, or restored) is called good."""
    good = run.store.latest_verified_step()
    if good is not None:
      return (f'Last good checkpoint: {run.store.path(good)} (step {good}, verified), kept: '
              f'rerunning the same command resumes from it')
    old = run.store.restored_step
    if old is not None and old in run.store.all_steps():
      return (f'Last checkpoint: {run.store.path(old)} (step {old}), kept but unverified (written '
              f'without a digest by an older version)')
    return 'Last good checkpoint: none (no checkpoint was saved before it)'

  def check_finite(step: int) -> None:
    """Host-side NaN policy (reads two device scalars).

    stop: NonFiniteError naming the step and the last verified checkpoint. skip: carry on, but stop
    the same way after `give_up_after` consecutive non-finite steps (before the checkpoint of the
    epoch, so no good checkpoint is rotated away for a state that cannot train).
    """
    bad = int(jax.device_get(state.nonfinite_count))
    new, ran = bad - meta['nonfinite_steps'], step - nonfinite['step']
    if ran <= 0:
      return
    nonfinite['step'] = step
    if new == 0:
      nonfinite['streak'] = 0
      return
    # All `ran` steps since the last check were non-finite: the streak goes on (else it is unknown
    # how many of the last ones were: counted from 0, never over-counted).
    nonfinite['streak'] = nonfinite['streak'] + ran if new == ran else 0
    first = int(jax.device_get(state.first_nonfinite_step))
    meta['nonfinite_steps'] = bad
    where = (f'step {first + 1} of {total} (epoch {first // spe + 1}, batch {first % spe + 1} of '
             f'{spe})')
    resumed = run.store.restored_step
    after_resume = resumed is not None and (
        first == start if cfg.nan_policy == 'stop' else nonfinite['streak'] == step - start)
    if cfg.nan_policy == 'skip':
      if nonfinite['streak'] < give_up_after:
        logging.warning('%d non-finite step(s) skipped so far (first at %s)', bad, where)
        return
      msg = (f'{nonfinite["streak"]} consecutive non-finite steps up to step {step} of {total} in '
             f'{workdir} ({bad} in all, the first at {where}); training stopped although '
             f'nan_policy=skip: skipping cannot get past a state whose loss is non-finite on every '
             f'batch.')
    else:
      msg = (f'non-finite loss or gradients at {where} in {workdir}; training stopped '
             f'(nan_policy=stop).')
    if after_resume and not run.store.restored_verified:
      p = run.store.path(resumed)
      msg += (f' It happened from the first step after resuming from checkpoint {p} (step '
              f'{resumed}), which was written without a digest by an older version and could not '
              f'be verified: it may be corrupted. Do not rerun with --config.nan_policy=skip (it '
              f'would skip every step); rename it to {p}.unreadable and rerun to resume from the '
              f'checkpoint before it, or train in a new workdir.')
    elif cfg.nan_policy == 'skip':
      msg += (f' {last_good_checkpoint()}; lower config.opt.lr, or check the data, before '
              f'resuming.')
    else:
      msg += (f' {last_good_checkpoint()}. If such steps are rare, --config.nan_policy=skip skips '
              f'and counts them (nonfinite_steps in results.json; it stops by itself after '
              f'{give_up_after} in a row); if they recur, lower config.opt.lr instead.')
    write_results('stopped_nonfinite', step, msg)
    writer.close()
    run.store.close()
    raise NonFiniteError(msg)

  if start >= total:
    logging.info('%s: already trained (%d steps)', workdir, start)
    if meta['last_eval'] is None or meta['last_eval']['epoch'] != run.num_epochs:
      ev = run.evaluate(state)
      meta['last_eval'] = dict(ev, epoch=run.num_epochs)
    r = write_results('finished', start)
    run.store.close()
    writer.close()
    return r

  status = 'running'
  partial = dict(meta['partial'])
  sums = (jnp.asarray(partial['loss'], jnp.float32), jnp.asarray(partial['error'], jnp.float32))
  n_in_epoch = int(partial['n'])
  write_results(status, start)
  last_log_time, last_log_step = time.time(), start
  with _TerminationFlag() as term:
    step = start
    for epoch in range(start // spe, run.num_epochs):
      first = step - epoch * spe
      batches = iter(run.train_data.batches(epoch, start_step=first))
      for i in range(first, spe):
        try:
          host_batch = next(batches)
        except StopIteration:
          raise RuntimeError(
              f'the training data of epoch {epoch} ended after {i} batches, but '
              f'steps_per_epoch={spe} (config.steps_per_epoch={cfg.steps_per_epoch}, the loader has '
              f'{run.train_data.steps_per_epoch}); lower config.steps_per_epoch') from None
        state, metrics = run.train_step(state, run.place_train_batch(host_batch), train_key)
        sums = (sums[0] + metrics['loss'], sums[1] + metrics['error'])
        n_in_epoch += 1
        step += 1
        if step % cfg.log_every_steps == 0:
          m = jax.device_get(metrics)
          now = time.time()
          rate = (step - last_log_step) / max(now - last_log_time, 1e-9)
          last_log_time, last_log_step = now, step
          if run.is_main:
            logging.info('epoch %d/%d step %d/%d | loss %.4f error %.1f%% lr %.3g | %.2f steps/s '
                         '| ETA %s', epoch + 1, run.num_epochs, step, total, m['loss'], m['error'],
                         m['lr'], rate, _fmt_time((total - step) / rate))
            writer.write_scalars(step, {'train/loss': m['loss'], 'train/error': m['error'],
                                        'train/lr': m['lr'], 'train/steps_per_sec': rate})
          check_finite(step)
        if term.reached(step) and i + 1 < spe:  # at an epoch's end, the epoch is closed first
          check_finite(step)
          partial = dict(loss=float(sums[0]), error=float(sums[1]), n=n_in_epoch)
          save(step, partial)
          msg = (f'SIGTERM at step {step}: saved checkpoint {run.store.path(step)}; rerun the same '
                 f'command to resume')
          logging.warning(msg)
          r = write_results('preempted', step, msg)
          writer.close()
          run.store.close()
          return r

      # --- end of epoch ---
      check_finite(step)
      loss_sum, err_sum = jax.device_get(sums)
      entry = dict(epoch=epoch + 1, step=step, train_loss=float(loss_sum) / max(n_in_epoch, 1),
                   train_error=float(err_sum) / max(n_in_epoch, 1),
                   lr=float(metrics['lr']), nonfinite_steps=meta['nonfinite_steps'])
      sums = (jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32))
      n_in_epoch = 0
      last_epoch = epoch + 1 == run.num_epochs
      if (epoch + 1) % cfg.eval_every_epochs == 0 or last_epoch:
        ev = run.evaluate(state)
        meta['last_eval'] = dict(ev, epoch=epoch + 1)
        entry['test_error'] = ev['error']
        if run.is_main:
          logging.info('epoch %d/%d: test error %.2f%% (%d/%d clips, %d crops each)', epoch + 1,
                       run.num_epochs, ev['error'], ev['count'] - ev['num_correct'], ev['count'],
                       cfg.num_eval_crops)
          writer.write_scalars(step, {'test/error': ev['error']})
      meta['history'].append(entry)
      if run.is_main:
        writer.write_scalars(step, {'epoch/train_loss': entry['train_loss'],
                                    'epoch/train_error': entry['train_error'],
                                    'epoch/nonfinite_steps': entry['nonfinite_steps']})
        writer.flush()
      if (epoch + 1) % cfg.checkpoint_every_epochs == 0 or last_epoch or term.requested:
        save(step, dict(loss=0.0, error=0.0, n=0))
      status = 'finished' if last_epoch else 'running'
      write_results(status, step)
      last_log_time, last_log_step = time.time(), step  # steps/s counts training only
      if term.requested and not last_epoch:
        msg = f'SIGTERM at step {step}: saved checkpoint {run.store.path(step)}; rerun to resume'
        logging.warning(msg)
        r = write_results('preempted', step, msg)
        writer.close()
        run.store.close()
        return r

  r = write_results('finished', step)
  if run.is_main:
    logging.info('finished %s: test error %.2f%% at epoch %d (wall time %s)', workdir,
                 r['final_error'], r['final_epoch'], _fmt_time(r['wall_time_s']))
  writer.close()
  run.store.close()
  return r
