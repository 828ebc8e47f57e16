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
                      skipped_files (bad files the preparation skipped, on every run); rewritten
                      after every epoch (runs in one program: at evaluations and checkpoints)
  events.out.tfevents.*  TensorBoard scalars (train/loss, train/error, train/lr, train/steps_per_sec,
                      test/error, ...)
With `fold='all'` every fold runs into `workdir/fold_<k>` (and `workdir/cv_results.json` sums up).
A workdir is trained by one process at a time: its lock (workdir_lib.lock, `.training.lock`) is
taken before the first write and held to the end; another training there is refused at once.

Rerunning the same command resumes from the newest readable checkpoint: parameters, optimiser state,
counters, the data position (epoch, step within the epoch), the PRNG key, the history and the partial
epoch's metric sums, so the resumed run ends bitwise equal to an uninterrupted one (on CPU). SIGTERM
(preemption) or a first Ctrl-C (SIGINT) saves a checkpoint at the current step and returns with
status 'preempted' (main exits 0 after SIGTERM, by SIGINT after Ctrl-C). A non-finite loss or gradient is never applied (steps.py); with `nan_policy='stop'` training stops
with `NonFiniteError` naming the step and the last good checkpoint, with 'skip' it carries on and
counts such steps (`nonfinite_steps` in the metrics).
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
import platform
import signal
import subprocess
import threading
import time
from typing import Callable

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from intermix_jax import checkpoints
from intermix_jax import config_checks
from intermix_jax import config_lib
from intermix_jax import mixing
from intermix_jax import parallel
from intermix_jax import schedules
from intermix_jax import steps
from intermix_jax import summaries
from intermix_jax import termination
from intermix_jax import trained
from intermix_jax import workdir as workdir_lib

CV_RESULTS_FILE = 'cv_results.json'
SEEDS_RESULTS_FILE = 'seeds_results.json'


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
  """Short name of the training method, e.g. 'intermix', 'intermix[layers=0,r-weighting]+aug'
  (the strategy's `label()`, '+aug' with strong augmentation)."""
  return mixing.build_strategy(config).label() + ('+aug' if config.strong_augment else '')


def _fmt_time(seconds: float) -> str:
  if not math.isfinite(seconds):
    return '?'
  seconds = int(round(seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f'{h}:{m:02d}:{s:02d}'


def _steps_per_sec(last_log: tuple[float, int], step: int) -> tuple[float, tuple[float, int]]:
  """(steps/s since `last_log` = (time, step), the new last_log)."""
  now = time.time()
  return (step - last_log[1]) / max(now - last_log[0], 1e-9), (now, step)


class _Pace:
  """Steps/s of wall time since this process's first progress log (compilation excluded;
  evaluations and checkpoints included): what the ETA is computed from once known. The logged
  steps/s counts training only, and on a fast accelerator the saves can take most of the time."""

  def __init__(self):
    self.first: tuple[float, int] | None = None

  def eta(self, step: int, total: int, train_rate: float) -> str:
    now = time.time()
    if self.first is None:
      self.first = (now, step)
    if step <= self.first[1]:  # no wall time measured yet
      return _fmt_time((total - step) / train_rate)
    wall_rate = (step - self.first[1]) / max(now - self.first[0], 1e-9)
    return f'{_fmt_time((total - step) / wall_rate)} at {wall_rate:.2f} steps/s overall'


class _SaveShare:
  """The share of the wall time taken by periodic checkpoints: one warning per training loop when,
  between two periodic saves, saving took more than half the time (on a fast accelerator a
  verified save of a large state can outlast the training between two saves; benchmarks/README.md,
  "Runs in one program on an H200")."""

  def __init__(self):
    self.since = time.time()  # the start of the current period (the previous check)
    self.saving = 0.0  # seconds spent in `timed` saves since then
    self.warned = False

  def timed(self, save: Callable[[], None]) -> None:
    start = time.time()
    save()
    self.saving += time.time() - start

  def check(self, every_epochs: int) -> None:
    """Ends a period (call after the period's save): warns the first time saves took most of it."""
    now = time.time()
    period = now - self.since
    if not self.warned and self.saving > 0.5 * period > 0:
      self.warned = True
      logging.warning('checkpoints took %.0f s of the last %.0f s of training (%.0f%%): raise '
                      'config.checkpoint_every_epochs (now %d) so that saves take less; a SIGTERM '
                      'still saves first', self.saving, period, 100 * self.saving / period,
                      every_epochs)
    self.since, self.saving = now, 0.0


class _TerminationFlag:
  """Preemption notice: SIGTERM or a first Ctrl-C is recorded instead of killing the process.

  One process: a Python handler of SIGTERM and SIGINT sets the flag (the old handlers are restored
  on exit; after a Ctrl-C, SIGINT keeps the system's default, so that a second Ctrl-C ends the
  process at once: termination.first_ctrl_c). Several processes: JAX's preemption service (started
  by jax.distributed) receives the notice and `reached(step)` is True on every process at the same
  step, so they save the same checkpoint (SIGINT is left as Python has it there).
  """

  def __init__(self):
    self._flag = termination.noted()  # a SIGTERM before training began: stop at the first step
    self._signum = termination.stop_signal() if self._flag else None
    self._old = {}
    self._multi = jax.process_count() > 1

  def __enter__(self):
    if not self._multi and threading.current_thread() is threading.main_thread():
      self._old[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._handle)
      if self._signum != signal.SIGINT:  # after a Ctrl-C the next one ends the process already
        self._old[signal.SIGINT] = signal.signal(signal.SIGINT, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    termination.record(signum)
    if self._signum is None:
      self._signum = signum
    if signum == signal.SIGINT:
      termination.first_ctrl_c(self._old.get(signal.SIGINT))
      logging.warning('Ctrl-C: saving a checkpoint at the next step, then stopping (rerun the same '
                      'command to resume); press Ctrl-C again to stop at once, without it')
    self._flag = True

  @property
  def name(self) -> str:
    """What asked the run to stop: 'SIGTERM' (also a preemption notice) or 'SIGINT (Ctrl-C)'."""
    return termination.describe(self._signum)

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
    for signum, old in self._old.items():
      if not (signum == signal.SIGINT and self._signum == signal.SIGINT and
              signal.getsignal(signal.SIGINT) == signal.SIG_DFL):
        signal.signal(signum, old)  # (the command line keeps SIGINT's default after a Ctrl-C)
    self._old = {}
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

  One run (a fold number, `seeds` None): `workdir` is the run's. Several runs (fold='all' and/or a
  tuple of `seeds`): run (s, k) trains in workdir/seed_<s>/fold_<k> (no seed_<s> level without
  `seeds`, no fold_<k> level for one fold), one after another, or all in one program with
  `stack_runs`; every fold='all' group writes cv_results.json beside its folds and `seeds` writes
  workdir/seeds_results.json. The summary of the whole is returned.

  Raises:
    config_checks.ConfigError: a field is unusable (before any heavy work).
    workdir_lib.WorkdirConfigError: `workdir` belongs to a different config.
    workdir_lib.WorkdirBusyError: another process trains in `workdir` (or in one of its runs'
      workdirs): refused before anything is written (workdir_lib.lock).
    NonFiniteError: a non-finite loss or gradient under nan_policy='stop' (runs in one program:
      after the other runs trained to the end and the summaries were written).
  """
  config_checks.validate(config, device_count=jax.device_count(),
                         process_count=jax.process_count())
  note = config_checks.schedule_note(config)  # once for every fold and seed, before any data
  if note:
    logging.warning(note)
  many = config.fold == 'all' or config.seeds is not None
  if config.stack_runs and not (config.fold == 'all' or len(config.seeds or ()) > 1):
    raise config_checks.ConfigError(
        f"config.stack_runs=True stacks the runs of fold='all' or of several config.seeds in one "
        f"program, but config.fold={config.fold!r} and config.seeds={config.seeds!r}; use fold=all "
        f"or seeds=(0,1,...), or stack_runs=False for one run")
  checkpoints.quiet_orbax_logging()
  workdir = os.path.abspath(workdir)
  if many:
    return _many_runs(config, workdir)
  return _train_fold(config, workdir)


def _lock(workdirs: list[str]):
  """The training lock of `workdirs` (workdir_lib.lock), taken by process 0 alone: the processes
  of one multi-process run share the workdir."""
  return workdir_lib.lock(workdirs) if _is_main() else contextlib.nullcontext()


def _many_runs(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """fold='all' and/or `seeds`: the runs, then cv_results.json per seed and seeds_results.json.
  `workdir`, each seed's and each run's workdir are locked for the whole of it, before anything
  is written (another training in any of them is refused at once)."""
  from intermix_jax import data
  num_folds = data.dataset_info(config).num_folds
  groups = []  # (config of the seed's group, its workdir, [(run config, run workdir)])
  for seed in ([None] if config.seeds is None else list(config.seeds)):
    group, group_dir = copy.deepcopy(config), workdir
    if seed is not None:
      group.seed, group.seeds = seed, None
      group_dir = os.path.join(workdir, f'seed_{seed}')
    runs = [(group, group_dir)]
    if config.fold == 'all':
      runs = []
      for k in range(1, num_folds + 1):
        runs.append((copy.deepcopy(group), os.path.join(group_dir, f'fold_{k}')))
        runs[-1][0].fold = k
    groups.append((group, group_dir, runs))
  plan = [run for _, _, runs in groups for run in runs]
  with _lock([workdir] + [d for _, d, _ in groups] + [w for _, w in plan]):
    return _run_plan(config, workdir, num_folds, groups, plan)


def _run_plan(config: ml_collections.ConfigDict, workdir: str, num_folds: int, groups: list,
              plan: list) -> dict:
  """`_many_runs` once its workdirs are locked."""
  workdir_lib.check_or_store_config(workdir, config, write=_is_main())
  if config.stack_runs:
    results = _train_together([c for c, _ in plan], [w for _, w in plan])
  else:
    results = []
    for run_config, run_workdir in plan:
      results.append(_train_fold(run_config, run_workdir))
      if results[-1]['status'] != 'finished':
        break
  done = dict(zip([w for _, w in plan], results))
  summaries = []
  for group, group_dir, runs in groups:
    got = [done[w] for _, w in runs if w in done]
    if config.fold == 'all':
      if group_dir != workdir:  # workdir/seed_<s> is a fold='all' workdir of its own
        workdir_lib.check_or_store_config(group_dir, group, write=_is_main())
      summaries.append(_cv_summary(group, group_dir, got, num_folds))
    else:
      summaries.append(dict(seed=group.seed, status=got[0]['status'] if got else 'not_started',
                            final_error=got[0]['final_error'] if got else None))
  summary = summaries[0] if config.seeds is None else _seeds_summary(config, workdir, summaries)
  stopped = [r for r in results if r['status'] == 'stopped_nonfinite']
  if stopped:  # runs in one program: the others trained to the end first
    raise NonFiniteError(' | '.join(f"{r['workdir']}: {r['message']}" for r in stopped))
  return summary


def _cv_summary(config: ml_collections.ConfigDict, workdir: str, results: list[dict],
                num_folds: int) -> dict:
  """cv_results.json of one fold='all' group (written in `workdir`) from its folds' results."""
  folds = [dict(fold=r['fold'], status=r['status'], final_error=r['final_error']) for r in results]
  unfinished = [f for f in folds if f['status'] != 'finished']
  errors = [f['final_error'] for f in folds if f['final_error'] is not None]
  done = len(errors) == num_folds
  summary = dict(dataset=config.dataset, backbone=config.backbone, method=method_label(config),
                 seed=config.seed, folds=folds,
                 status='finished' if done else (unfinished[0]['status'] if unfinished
                                                 else 'not_started'),
                 mean_error=float(np.mean(errors)) if done else None)
  if _is_main():
    workdir_lib.write_json_atomic(os.path.join(workdir, CV_RESULTS_FILE), summary)
    if done:
      logging.info('cross-validation %s: error %.2f%% (folds: %s)', workdir, summary['mean_error'],
                   ', '.join(f'{e:.2f}' for e in errors))
  return summary


def _seeds_summary(config: ml_collections.ConfigDict, workdir: str, per_seed: list[dict]) -> dict:
  """seeds_results.json (written in `workdir`): per seed its status and error (the fold's, or the
  cross-validated mean), and their mean and sample standard deviation once every seed finished."""
  key = 'mean_error' if config.fold == 'all' else 'final_error'
  seeds = [dict(seed=s['seed'], status=s['status'], error=s[key]) for s in per_seed]
  errors = [s['error'] for s in seeds if s['status'] == 'finished']
  done = len(errors) == len(seeds)
  unfinished = [s for s in seeds if s['status'] != 'finished']
  summary = dict(dataset=config.dataset, backbone=config.backbone, method=method_label(config),
                 fold=config.fold, seeds=seeds,
                 status='finished' if done else unfinished[0]['status'],
                 mean_error=float(np.mean(errors)) if done else None,
                 std_error=float(np.std(errors, ddof=1)) if done and len(errors) > 1 else None)
  if _is_main():
    workdir_lib.write_json_atomic(os.path.join(workdir, SEEDS_RESULTS_FILE), summary)
    if done:
      logging.info('%d seeds %s: error %.2f%% (%s)', len(seeds), workdir, summary['mean_error'],
                   ', '.join(f"seed {s['seed']}: {s['error']:.2f}" for s in seeds))
  return summary


# ------------------------------------------------------------------------------------------------
# One fold
# ------------------------------------------------------------------------------------------------
class _Run:
  """Everything one fold's training needs, built once: model, data, and the steps on the mesh."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, *,
               before_writing: Callable[[], None] | None = None):
    """`before_writing`: called once the config is checked, before the first file is written
    (takes the workdir's lock)."""
    from intermix_jax import data, mixing
    self.config = config
    self.workdir = workdir
    self.is_main = _is_main()
    self.info = data.dataset_info(config)
    try:
      self.model = trained.build_model(config, self.info.num_classes)
    except ValueError as e:
      raise config_checks.ConfigError(f'config.model / config.backbone={config.backbone!r}: {e}') from e
    try:
      strategy = mixing.build_strategy(config)
    except ValueError as e:
      raise config_checks.ConfigError(f'config.mixing / config.strategy={config.strategy!r}: {e}') from e
    config_checks.validate(
        config, num_folds=self.info.num_folds, num_mix_points=self.model.num_mix_points,
        device_count=jax.device_count(), process_count=jax.process_count(), mixes=strategy.mixes)
    if before_writing is not None:
      before_writing()
    workdir_lib.check_or_store_config(workdir, config, write=self.is_main)
    note = config_lib.row_note(config)  # --config.backbone after the row was chosen
    if note:
      logging.warning(note)

    pi, pc = jax.process_index(), jax.process_count()
    prepare_data_once(config, self.model.sample_rate)
    # With the clips on the device, the host keeps none in memory (on_device.ClipTable reads them).
    cache = 0 if config.data_on_device else data.pipeline.DEFAULT_CACHE_BYTES
    self.train_data = data.make_train_loader(
        config, self.model.sample_rate, self.model.input_length, process_index=pi,
        process_count=pc, cache_bytes=cache)
    self._device_inputs = None
    self.eval_data = data.make_eval_loader(config, self.model.sample_rate, self.model.input_length,
                                           process_index=pi, process_count=pc)
    termination.stop_if_noted()  # a SIGTERM during preparation whose exception was swallowed
    # Identity, clips per class, skipped files; LayoutError when a class has no training clip.
    self.run_data = data.describe_run_data(config, self.model.sample_rate, self.train_data,
                                           self.eval_data)
    self.steps_per_epoch = int(config.steps_per_epoch or self.train_data.steps_per_epoch)
    if self.steps_per_epoch < 1:
      raise config_checks.ConfigError(
          f'config.batch_size={config.batch_size} leaves no full batch in the '
          f'{self.train_data.num_examples} training clips of fold {config.fold}; use a smaller batch')
    self.strategy, self.mixes = strategy, strategy.mixes
    self.num_epochs = schedules.total_epochs(config.num_epochs, self.mixes,
                                             config.double_epochs_for_mixing)
    self.total_steps = self.num_epochs * self.steps_per_epoch
    self.opt = steps.OptimizerSpec.from_config(config.opt, self.num_epochs, self.steps_per_epoch)

    # One 'data' axis over every device (one included); the mixing runs per device (parallel.py).
    # The jitted steps are shared by every run of this process with the same statics (fold=all,
    # a fresh and a resumed state): compiled once.
    self.mesh = parallel.make_mesh()
    self.train_step = steps.mesh_train_step(self.model, strategy, self.opt, self.info.num_classes,
                                            self.mesh)
    self.eval_step = steps.mesh_eval_step(self.model, self.mesh)
    self.init_state = steps.state_initializer(self.model, self.opt, self.mesh)

  def abstract_state(self) -> steps.TrainState:
    """Shapes, dtypes and shardings of the state (a restore target; nothing is computed)."""
    return steps.abstract_state(self.model, self.opt, self.mesh)

  def place_train_batch(self, batch: dict) -> dict:
    """This process's rows (x (n, T) float32, y (n,) int32) -> the global batch on the mesh."""
    return parallel.host_batch_to_global({k: batch[k] for k in ('x', 'y')}, self.mesh,
                                         pairs=self.mixes)

  def train_batches(self, epoch: int, start_step: int):
    """(batches start_step.. of `epoch` on the mesh, the step that takes them): the host loader's
    batches and `train_step`, or with config.data_on_device crop plans and the step that cuts
    the same batches from the clips on the devices (data/on_device.py)."""
    if not self.config.data_on_device:
      return (map(self.place_train_batch, self.train_data.batches(epoch, start_step=start_step)),
              self.train_step)
    if self._device_inputs is None:
      from intermix_jax.data import on_device
      inputs = on_device.device_inputs([self.train_data], self.mesh, pairs=self.mixes,
                                       stacked=False)
      self._device_inputs = (inputs, inputs.fuse(self.train_step))
    inputs, step = self._device_inputs
    return inputs.batches(epoch, start_step), step

  def place_key(self, key: jax.Array) -> jax.Array:
    return parallel.replicate(key, self.mesh)

  def evaluate(self, state: steps.TrainState) -> dict:
    """10-crop error on the test fold: dict(error: float (%), num_correct: int, count: int,
    preds: N ints, labels: N ints), entry i for clip i of `eval_data.filenames`."""
    return self.eval_summary(trained.evaluate_clips(self.eval_step, state, self.eval_data,
                                                    self.mesh))

  @staticmethod
  def eval_summary(ev: dict) -> dict:
    """`trained.evaluate_clips`' result -> what `evaluate` returns."""
    return dict(error=float(ev['error']), num_correct=int(ev['num_correct']), count=ev['count'],
                preds=ev['pred'].tolist(), labels=ev['labels'].tolist())


def _empty_meta(train_key: jax.Array) -> dict:
  return dict(history=[], partial=dict(loss=0.0, error=0.0, n=0), wall_time=0.0,
              rng=np.asarray(jax.random.key_data(train_key)).tolist(), last_eval=None,
              nonfinite_steps=0)


def _train_fold(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains (or resumes) one fold in `workdir`; returns the results dict (see results.json).

  The summary writer and the checkpoint store are closed on every way out: finished, preempted,
  NonFiniteError or any other exception (a failure to close is then only logged, so that the
  exception reported stays the one that stopped the run).
  """
  with contextlib.ExitStack() as held:
    return _train_fold_holding(config, workdir, held)


def _train_fold_holding(config: ml_collections.ConfigDict, workdir: str,
                        held: contextlib.ExitStack) -> dict:
  """`_train_fold`; the workdir's lock is taken into `held` once the config is checked, before
  anything is written (re-entrant under _many_runs, which holds it already)."""
  t0 = time.time()
  run = _Run(config, workdir, before_writing=lambda: held.enter_context(_lock([workdir])))
  store = checkpoints.CheckpointStore(os.path.join(workdir, workdir_lib.CHECKPOINTS_DIR),
                                      config.keep_checkpoints)
  writer, ok = None, False
  try:
    # A resume must read the data the checkpoints were trained on (workdir/dataset.json).
    workdir_lib.check_or_store_dataset(workdir, run.run_data.identity,
                                       resuming=store.latest_step() is not None,
                                       write=run.is_main)
    writer = summaries.SummaryWriter(workdir, enabled=run.is_main)
    result = _Fold(run, store, writer, t0).train()
    ok = True
    return result
  finally:
    _close((writer, store), quietly=not ok)


def _close(things, *, quietly: bool) -> None:
  """Closes each of `things` (None: skipped). `quietly`: an exception is already on its way, so a
  failure to close is logged in one line instead of replacing it; else the first one is raised
  after every thing had its try."""
  first = None
  for thing in things:
    if thing is None:
      continue
    try:
      thing.close()
    except Exception as e:  # pylint: disable=broad-except
      if quietly:
        logging.warning('while stopping, %s could not be closed: %s', type(thing).__name__,
                        ' '.join(str(e).split()) or type(e).__name__)
      elif first is None:
        first = e
  if first is not None:
    raise first


class _Fold:
  """One fold's training session: the state, its checkpoints, results.json and TensorBoard."""

  def __init__(self, run: _Run, store: checkpoints.CheckpointStore,
               writer: summaries.SummaryWriter, t0: float, *, at_most: int | None = None):
    """Restores the newest usable checkpoint (of a step <= `at_most` when given), or
    initialises the state."""
    self.run, self.store, self.writer, self.t0 = run, store, writer, t0
    cfg = self.cfg = run.config
    init_key, train_key = jax.random.split(jax.random.key(cfg.seed))
    self.meta = _empty_meta(train_key)
    self.rotate = True  # False: the caller rotates the checkpoints (runs saved together)
    self.label = ''  # ' (fold k, seed s)' in the log lines of runs in one program
    self.given_eval = None  # an evaluation of the current state made by the caller (_Together)
    restored = store.restore(run.abstract_state(), at_most=at_most)
    if restored is None:
      if store.rejected:
        logging.warning('%s: no usable checkpoint left (%s); training from the start', run.workdir,
                        store.rejected_summary())
      self.state = run.init_state(init_key)
    else:
      self.state, self.meta, ckpt_step = restored
      train_key = jax.random.wrap_key_data(np.asarray(self.meta['rng'], np.uint32))
      logging.info('resuming %s from checkpoint %s (step %d of %d: %d epochs and %d batches done; '
                   '%s)', run.workdir, store.path(ckpt_step), ckpt_step, run.total_steps,
                   self.meta['epoch'], self.meta['step_in_epoch'],
                   'verified' if store.restored_verified else 'unverified: no digest')
    self.train_key = run.place_key(train_key)
    self.start = self.step = int(jax.device_get(self.state.step))
    if self.start == 0 and run.is_main:
      writer.write_texts(0, {'config': '```\n' + str(cfg) + '\n```'})
    info, data = run.info, run.run_data
    self.base = dict(
        config=workdir_lib.config_to_dict(cfg), dataset=cfg.dataset, backbone=cfg.backbone,
        strategy=cfg.strategy, method=method_label(cfg), fold=cfg.fold, seed=cfg.seed,
        num_classes=info.num_classes, class_names=list(info.class_names),
        num_folds=info.num_folds, num_epochs=run.num_epochs, steps_per_epoch=run.steps_per_epoch,
        total_steps=run.total_steps, num_train_examples=run.train_data.num_examples,
        num_test_examples=run.eval_data.num_examples, workdir=run.workdir,
        dataset_identity=data.identity, class_clips=data.class_clips,
        classes_without_test_clips=data.classes_without_test_clips,
        classes_without_clips=data.classes_without_clips, skipped_files=data.skipped_files)
    self.versions = versions()
    # nan_policy=skip: steps checked so far and the run of consecutive non-finite steps seen.
    self.nonfinite = dict(step=self.start, streak=0)
    self.give_up_after = max(run.steps_per_epoch, 3)  # in a row: the state itself is broken
    # This epoch's metric sums (float32 device scalars) and steps, as the checkpoint left them.
    partial = self.meta['partial']
    self.sums = (jnp.asarray(partial['loss'], jnp.float32),
                 jnp.asarray(partial['error'], jnp.float32))
    self.n_in_epoch = int(partial['n'])
    self.metrics = None
    self.last_log = (time.time(), self.start)
    self.pace = _Pace()
    self.saves = _SaveShare()
    self.check_saves = True  # False: the caller checks (runs saved together share its _SaveShare)
    # False (runs in one program): results.json is rewritten only at an evaluation, a checkpoint,
    # the end or a stop, not after every epoch (`_end_epoch`).
    self.results_every_epoch = True

  # --- results.json and checkpoints ------------------------------------------------------------
  def results(self, status: str, message: str = '') -> dict:
    last = self.meta['last_eval']
    finished = status == 'finished'
    return dict(self.base, status=status, message=message, step=self.step,
                history=self.meta['history'],
                final_error=last['error'] if finished else None,
                final_epoch=last['epoch'] if finished else None,
                last_eval_error=last['error'] if last else None,
                nonfinite_steps=self.meta['nonfinite_steps'],
                wall_time_s=self.meta['wall_time'] + (time.time() - self.t0),
                versions=self.versions,
                predictions=(dict(filenames=list(self.run.eval_data.filenames),
                                  labels=last['labels'], preds=last['preds'],
                                  epoch=last['epoch']) if last else None))

  def write_results(self, status: str, message: str = '') -> dict:
    r = self.results(status, message)
    if self.run.is_main:
      path = os.path.join(self.run.workdir, workdir_lib.RESULTS_FILE)
      workdir_lib.write_json_atomic(path, r)
    return r

  def save(self, partial: dict) -> None:
    """Checkpoint at the current step; `partial`: the metric sums of the unfinished epoch."""
    spe = self.run.steps_per_epoch
    meta = dict(self.meta, epoch=self.step // spe, step_in_epoch=self.step % spe,
                global_step=self.step, partial=partial,
                wall_time=self.meta['wall_time'] + (time.time() - self.t0))
    self.store.save(self.step, self.state, meta, rotate=self.rotate)

  def last_good_checkpoint(self) -> str:
    """The checkpoint to name after a non-finite step: only one verified against its digest
    (read back after saving, or restored) is called good."""
    store = self.store
    good = store.latest_verified_step()
    if good is not None:
      return (f'Last good checkpoint: {store.path(good)} (step {good}, verified), kept: '
              f'rerunning the same command resumes from it')
    old = store.restored_step
    if old is not None and old in store.all_steps():
      return (f'Last checkpoint: {store.path(old)} (step {old}), kept but unverified (written '
              f'without a digest by an older version)')
    return 'Last good checkpoint: none (no checkpoint was saved before it)'

  # --- the NaN policy ----------------------------------------------------------------------------
  def check_finite(self, counts: tuple[int, int] | None = None) -> None:
    """Host-side NaN policy at the current step (reads two device scalars).

    stop: NonFiniteError naming the step and the last verified checkpoint. skip: carry on, but stop
    the same way after `give_up_after` consecutive non-finite steps (before the checkpoint of the
    epoch, so no good checkpoint is rotated away for a state that cannot train). `counts`:
    (nonfinite_count, first_nonfinite_step) of this run when the caller has read them (runs in one
    program read every run's at once); None: read from self.state.
    """
    cfg, store, step = self.cfg, self.store, self.step
    spe, total = self.run.steps_per_epoch, self.run.total_steps
    if counts is None:
      counts = jax.device_get((self.state.nonfinite_count, self.state.first_nonfinite_step))
    bad = int(counts[0])
    new, ran = bad - self.meta['nonfinite_steps'], step - self.nonfinite['step']
    if ran <= 0:
      return
    self.nonfinite['step'] = step
    if new == 0:
      self.nonfinite['streak'] = 0
      return
    # All `ran` steps since the last check were non-finite: the streak goes on (else it is unknown
    # how many of the last ones were: counted from 0, never over-counted).
    streak = self.nonfinite['streak'] = self.nonfinite['streak'] + ran if new == ran else 0
    first = int(counts[1])
    self.meta['nonfinite_steps'] = bad
    where = (f'step {first + 1} of {total} (epoch {first // spe + 1}, batch {first % spe + 1} of '
             f'{spe})')
    resumed = store.restored_step
    after_resume = resumed is not None and (
        first == self.start if cfg.nan_policy == 'stop' else streak == step - self.start)
    if cfg.nan_policy == 'skip':
      if streak < self.give_up_after:
        logging.warning('%d non-finite step(s) skipped so far (first at %s)', bad, where)
        return
      msg = (f'{streak} consecutive non-finite steps up to step {step} of {total} in '
             f'{self.run.workdir} ({bad} in all, the first at {where}); training stopped although '
             f'nan_policy=skip: skipping cannot get past a state whose loss is non-finite on every '
             f'batch.')
    else:
      msg = (f'non-finite loss or gradients at {where} in {self.run.workdir}; training stopped '
             f'(nan_policy=stop).')
    if after_resume and not store.restored_verified:
      p = store.path(resumed)
      msg += (f' It happened from the first step after resuming from checkpoint {p} (step '
              f'{resumed}), which was written without a digest by an older version and could not '
              f'be verified: it may be corrupted. Do not rerun with --config.nan_policy=skip (it '
              f'would skip every step); rename it to {p}.unreadable and rerun to resume from the '
              f'checkpoint before it, or train in a new workdir.')
    elif cfg.nan_policy == 'skip':
      msg += (f' {self.last_good_checkpoint()}; lower config.opt.lr, or check the data, before '
              f'resuming.')
    else:
      msg += (f' {self.last_good_checkpoint()}. If such steps are rare, --config.nan_policy=skip '
              f'skips and counts them (nonfinite_steps in results.json; it stops by itself after '
              f'{self.give_up_after} in a row); if they recur, lower config.opt.lr instead.')
    self.write_results('stopped_nonfinite', msg)
    raise NonFiniteError(msg)

  # --- training --------------------------------------------------------------------------------
  def train(self) -> dict:
    """Trains from the current step to the end (or to a SIGTERM); returns the results dict."""
    run = self.run
    if self.start >= run.total_steps:
      return self._already_trained()
    self.write_results('running')
    with _TerminationFlag() as term:
      for epoch in range(self.start // run.steps_per_epoch, run.num_epochs):
        if self._train_epoch(epoch, term):
          return self._preempted(f'{term.name} at step {self.step}: saved checkpoint '
                                 f'{self.store.path(self.step)}; rerun the same command to resume')
        self._end_epoch(epoch, term)
        if term.requested and epoch + 1 < run.num_epochs:
          return self._preempted(f'{term.name} at step {self.step}: saved checkpoint '
                                 f'{self.store.path(self.step)}; rerun the same command to resume')
    r = self.write_results('finished')
    if run.is_main:
      logging.info('finished %s: test error %.2f%% at epoch %d (wall time %s)', run.workdir,
                   r['final_error'], r['final_epoch'], _fmt_time(r['wall_time_s']))
    return r

  def _already_trained(self) -> dict:
    """A rerun of a finished run: evaluates the final state only if its last evaluation is not
    the last epoch's."""
    logging.info('%s: already trained (%d steps)', self.run.workdir, self.start)
    last = self.meta['last_eval']
    if last is None or last['epoch'] != self.run.num_epochs:
      self.evaluate(self.run.num_epochs, report=False)
    return self.write_results('finished')

  def _train_epoch(self, epoch: int, term: _TerminationFlag) -> bool:
    """The rest of `epoch` from the current step; True when SIGTERM stopped it (after a
    checkpoint of the partial epoch), False at the epoch's end."""
    run, cfg, spe = self.run, self.cfg, self.run.steps_per_epoch
    first = self.step - epoch * spe
    batches, train_step = run.train_batches(epoch, first)
    batches = iter(batches)
    for i in range(first, spe):
      try:
        batch = next(batches)
      except StopIteration:
        raise RuntimeError(
            f'the training data of epoch {epoch} ended after {i} batches, but '
            f'steps_per_epoch={spe} (config.steps_per_epoch={cfg.steps_per_epoch}, the loader has '
            f'{run.train_data.steps_per_epoch}); lower config.steps_per_epoch') from None
      self.state, self.metrics = train_step(self.state, batch, self.train_key)
      self.sums = (self.sums[0] + self.metrics['loss'], self.sums[1] + self.metrics['error'])
      self.n_in_epoch += 1
      self.step += 1
      if self.step % cfg.log_every_steps == 0:
        self._log_progress(epoch)
        self.check_finite()
      if term.reached(self.step) and i + 1 < spe:  # at an epoch's end, the epoch is closed first
        self.check_finite()
        self.save(dict(loss=float(self.sums[0]), error=float(self.sums[1]), n=self.n_in_epoch))
        return True
    return False

  def _log_progress(self, epoch: int) -> None:
    m = jax.device_get(self.metrics)
    rate, self.last_log = _steps_per_sec(self.last_log, self.step)
    if self.run.is_main:
      run = self.run
      logging.info('epoch %d/%d step %d/%d | loss %.4f error %.1f%% lr %.3g | %.2f steps/s '
                   '| ETA %s', epoch + 1, run.num_epochs, self.step, run.total_steps, m['loss'],
                   m['error'], m['lr'], rate, self.pace.eta(self.step, run.total_steps, rate))
      self.writer.write_scalars(self.step, {'train/loss': m['loss'], 'train/error': m['error'],
                                            'train/lr': m['lr'], 'train/steps_per_sec': rate})

  def _end_epoch(self, epoch: int, term: _TerminationFlag) -> None:
    """Closes `epoch`: history entry, evaluation (every eval_every_epochs and at the end),
    TensorBoard, checkpoint (every checkpoint_every_epochs, at the end, and after a SIGTERM),
    results.json."""
    run, cfg = self.run, self.cfg
    self.check_finite()
    loss_sum, err_sum = jax.device_get(self.sums)
    n = max(self.n_in_epoch, 1)
    entry = dict(epoch=epoch + 1, step=self.step, train_loss=float(loss_sum) / n,
                 train_error=float(err_sum) / n, lr=float(self.metrics['lr']),
                 nonfinite_steps=self.meta['nonfinite_steps'])
    self.sums = (jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32))
    self.n_in_epoch = 0
    last_epoch = epoch + 1 == run.num_epochs
    if (epoch + 1) % cfg.eval_every_epochs == 0 or last_epoch:
      entry['test_error'] = self.evaluate(epoch + 1)['error']
    self.meta['history'].append(entry)
    if run.is_main:
      self.writer.write_scalars(self.step, {'epoch/train_loss': entry['train_loss'],
                                            'epoch/train_error': entry['train_error'],
                                            'epoch/nonfinite_steps': entry['nonfinite_steps']})
      self.writer.flush()
    saved = (epoch + 1) % cfg.checkpoint_every_epochs == 0 or last_epoch or term.requested
    if saved:
      self.saves.timed(lambda: self.save(dict(loss=0.0, error=0.0, n=0)))
      if self.check_saves and run.is_main and not (last_epoch or term.requested):
        self.saves.check(cfg.checkpoint_every_epochs)
    if self.results_every_epoch or saved or 'test_error' in entry:
      self.write_results('finished' if last_epoch else 'running')
    self.last_log = (time.time(), self.step)  # steps/s counts training only

  def evaluate(self, epoch: int, report: bool = True) -> dict:
    """Evaluates the current state as that of `epoch` (meta['last_eval']); `report`: log the
    error and write it to TensorBoard."""
    ev, self.given_eval = self.given_eval or self.run.evaluate(self.state), None
    self.meta['last_eval'] = dict(ev, epoch=epoch)
    if report and self.run.is_main:
      logging.info('epoch %d/%d%s: test error %.2f%% (%d/%d clips, %d crops each)', epoch,
                   self.run.num_epochs, self.label, ev['error'], ev['count'] - ev['num_correct'],
                   ev['count'], self.cfg.num_eval_crops)
      self.writer.write_scalars(self.step, {'test/error': ev['error']})
    return ev

  def _preempted(self, message: str) -> dict:
    logging.warning(message)
    return self.write_results('preempted', message)


# ------------------------------------------------------------------------------------------------
# Several runs in one program (fold='all' and/or seeds, config.stack_runs=True)
# ------------------------------------------------------------------------------------------------
def _train_together(configs: list[ml_collections.ConfigDict], workdirs: list[str]) -> list[dict]:
  """Trains (or resumes) the runs `configs[k]` in `workdirs[k]` as ONE program (vmapped or
  unrolled: config.stack_method); returns their results dicts (each as `_train_fold` returns it,
  in the order given).

  Each run keeps what it has alone (`_Run`: its data, loader order, crops and test fold; `_Fold`:
  its checkpoints, results.json, TensorBoard, NaN policy); only the train step is shared: the
  states stacked on a run axis, `multirun.multi_train_step`. Writers and stores are closed on every
  way out, as in `_train_fold`.
  """
  with _lock(workdirs):  # re-entrant: _many_runs holds them already
    return _train_locked_together(configs, workdirs)


def _train_locked_together(configs: list[ml_collections.ConfigDict],
                           workdirs: list[str]) -> list[dict]:
  t0 = time.time()
  runs, stores, writers, ok = [], [], [], False
  try:
    for config, workdir in zip(configs, workdirs):
      run = _Run(config, workdir)
      store = checkpoints.CheckpointStore(os.path.join(workdir, workdir_lib.CHECKPOINTS_DIR),
                                          config.keep_checkpoints)
      runs.append(run)
      stores.append(store)
      workdir_lib.check_or_store_dataset(workdir, run.run_data.identity,
                                         resuming=store.latest_step() is not None,
                                         write=run.is_main)
      writers.append(summaries.SummaryWriter(workdir, enabled=run.is_main))
    results = _Together(runs, stores, writers, t0).train()
    ok = True
    return results
  finally:
    _close(writers + stores, quietly=not ok)


class _Together:
  """The unfinished runs of `_train_together`, stepped in lockstep by one train step of K runs.

  They start from the newest step whose checkpoint every one of them has: the checkpoints of one
  step are written for every run before any run's old ones are rotated away (`_Fold.rotate`), so a
  kill at any moment leaves such a step, and the rerun continues exactly as the program would have
  (bitwise: same K, same steps). Checkpoints newer than that step (written by some runs before the
  kill) are deleted. Evaluation and checkpoints take each run's slice of the stacked state
  (`multirun.take_run`), so they are those of the run alone. A run whose loss turns non-finite
  follows its own `nan_policy`: under 'stop' it writes its results.json and is left out from then
  on (its slice still rides along in the step; its values are never read again) while the others
  train to the end.
  """

  def __init__(self, runs: list[_Run], stores: list, writers: list, t0: float):
    from intermix_jax import multirun
    self.multirun = multirun
    spe = {r.config.fold: r.steps_per_epoch for r in runs}
    if len({r.steps_per_epoch for r in runs}) > 1:
      raise config_checks.ConfigError(
          f'config.stack_runs: the folds give different steps per epoch ({spe}, fold: steps), but '
          f'runs in one program step together; set config.steps_per_epoch to at most '
          f'{min(spe.values())}, or stack_runs=False')
    first = self.first = runs[0]
    self.spe, self.total = first.steps_per_epoch, first.total_steps
    folds = [_Fold(r, s, w, t0) for r, s, w in zip(runs, stores, writers)]
    self.done = {k: f for k, f in enumerate(folds) if f.start >= self.total}
    todo = [k for k in range(len(folds)) if k not in self.done]
    # The newest step every unfinished run can resume from (a run whose newest checkpoint is
    # unreadable falls back further, so this may take more than one round).
    while todo:
      common = min(folds[k].start for k in todo)
      ahead = [k for k in todo if folds[k].start > common]
      if not ahead:
        break
      for k in ahead:
        logging.info('%s: resuming from step %d, with the other runs of this program',
                     runs[k].workdir, common)
        folds[k] = _Fold(runs[k], stores[k], writers[k], t0, at_most=common)
    self.folds = [folds[k] for k in todo]
    self.live = list(range(len(self.folds)))  # indices into self.folds (= the run axis)
    self.order = todo
    self.all_folds = folds
    self.stopped: dict[int, dict] = {}
    if not self.folds:
      return
    self.step = self.folds[0].start
    self.saves = _SaveShare()  # every run's saves count together
    for f in self.folds:
      f.rotate = False
      f.label = f' (fold {f.cfg.fold}, seed {f.cfg.seed})'
      f.saves, f.check_saves = self.saves, False
      # Rewriting every run's results.json (its whole history, fsynced) after every epoch cost
      # 18 ms per run and epoch on a 2-core CPU (15 runs x 200 epochs: 56 s of 150 s), time that
      # grows with the history; on an accelerator whose epoch takes a fraction of a second it
      # would dominate. Runs in one program rewrite it at evaluations and checkpoints only.
      f.results_every_epoch = False
      deleted = f.store.discard_after(self.step)
      if deleted:
        logging.info('%s: deleted checkpoints %s (newer than step %d, where the runs resume '
                     'together)', f.run.workdir, deleted, self.step)
    mesh = self.mesh = first.mesh
    self.method = multirun.resolve_method(first.config.stack_method, mesh, first.model)
    self.train_step = multirun.multi_train_step(first.model, first.strategy, first.opt,
                                                first.info.num_classes, mesh, method=self.method)
    self.eval_step = multirun.multi_eval_step(first.model, mesh)
    self.state = multirun.stack_on_mesh([f.state for f in self.folds], mesh)
    self.keys = multirun.stack_on_mesh([f.train_key for f in self.folds], mesh)
    self.device_inputs = None
    if first.config.data_on_device:  # one table of every run's clips (shared rows), on the mesh
      from intermix_jax.data import on_device
      self.device_inputs = on_device.device_inputs([f.run.train_data for f in self.folds], mesh,
                                                   pairs=first.mixes, stacked=True)
      self.train_step = self.device_inputs.fuse(self.train_step)  # crops cut inside the step
    for f in self.folds:
      f.state = None  # the stacked copy is the only one from here on
    self.sums = tuple(jnp.stack([f.sums[i] for f in self.folds]) for i in (0, 1))
    self.n_in_epoch = self.folds[0].n_in_epoch
    self.metrics = None
    self.last_log = (time.time(), self.step)
    self.pace = _Pace()
    logging.info('%d runs in one program (%s) from step %d of %d (%s)', len(self.folds),
                 self.method, self.step, self.total,
                 ', '.join(os.path.relpath(f.run.workdir, os.path.dirname(first.workdir))
                           for f in self.folds))

  # --- per-run views -----------------------------------------------------------------------------
  def _each(self, fn, *, state: bool = False) -> list[int]:
    """fn(k, fold) for every live run, fold.step set (and fold.state its slice while `state`);
    a run that raises NonFiniteError is left out from then on. Returns the runs that raised."""
    stopped = []
    for k in list(self.live):
      f = self.folds[k]
      f.step = self.step
      if state:
        f.state = self.multirun.take_run(self.state, k, self.mesh)
      try:
        fn(k, f)
      except NonFiniteError as e:
        self.live.remove(k)
        self.stopped[k] = f.results('stopped_nonfinite', str(e))
        stopped.append(k)
      finally:
        f.state = None
    for k in stopped:  # once every run had its turn: which ones go on is known
      if self.live:
        logging.warning('%s: left out of the program from step %d (the other %d run(s) go on)',
                        self.folds[k].run.workdir, self.step, len(self.live))
      else:
        logging.warning('%s: left out of the program from step %d; no run of the program is '
                        'left to train', self.folds[k].run.workdir, self.step)
    return stopped

  def _check_finite(self) -> None:
    bad, first = jax.device_get((self.state.nonfinite_count, self.state.first_nonfinite_step))
    self._each(lambda k, f: f.check_finite(counts=(bad[k], first[k])))

  def _rotate(self) -> None:
    """Once every live run has written this step's checkpoint: the old ones may go."""
    for k in self.live:
      self.folds[k].store.rotate()

  def _save(self) -> None:
    """Every live run's checkpoint of the current (mid-epoch) step, then the rotation."""
    loss, err = jax.device_get(self.sums)
    self._each(lambda k, f: f.save(dict(loss=float(loss[k]), error=float(err[k]),
                                        n=self.n_in_epoch)), state=True)
    self._rotate()

  # --- training ----------------------------------------------------------------------------------
  def train(self) -> list[dict]:
    out = {k: f.train() for k, f in self.done.items()}  # already trained: results.json only
    if self.folds:
      for f in self.folds:
        f.write_results('running')
      status, message = 'finished', ''
      with _TerminationFlag() as term:
        for epoch in range(self.step // self.spe, self.first.num_epochs):
          if not self.live:
            break
          if self._train_epoch(epoch, term):
            status, message = 'preempted', f'{term.name} at step {self.step}: saved checkpoint'
            break
          if not self.live:
            break
          self._end_epoch(epoch, term)
          if term.requested and epoch + 1 < self.first.num_epochs:
            status, message = 'preempted', f'{term.name} at step {self.step}: saved checkpoint'
            break
      for k, f in enumerate(self.folds):
        f.step = self.step
        if k in self.stopped:
          out[self.order[k]] = self.stopped[k]
        elif status == 'preempted':
          out[self.order[k]] = f._preempted(f'{message} {f.store.path(self.step)}; rerun the same '
                                            f'command to resume')
        else:
          r = out[self.order[k]] = f.write_results('finished')
          if f.run.is_main:
            logging.info('finished %s: test error %.2f%% at epoch %d (wall time %s)',
                         f.run.workdir, r['final_error'], r['final_epoch'],
                         _fmt_time(r['wall_time_s']))
    return [out[k] for k in range(len(self.all_folds))]

  def _train_epoch(self, epoch: int, term: _TerminationFlag) -> bool:
    """As `_Fold._train_epoch`, for every run at once (each from its own loader, or every run's
    rows cut on the devices: config.data_on_device)."""
    first = self.step - epoch * self.spe
    cfg = self.first.config
    if self.device_inputs is not None:
      stacked = self.device_inputs.batches(epoch, first)
    else:
      stacked = self._host_batches(epoch, first)
    for i in range(first, self.spe):
      try:
        batch = next(stacked)
      except StopIteration:
        raise RuntimeError(
            f'the training data of epoch {epoch} ended after {i} batches, but '
            f'steps_per_epoch={self.spe}; lower config.steps_per_epoch') from None
      self.state, self.metrics = self.train_step(self.state, batch, self.keys)
      self.sums = (self.sums[0] + self.metrics['loss'], self.sums[1] + self.metrics['error'])
      self.n_in_epoch += 1
      self.step += 1
      if self.step % cfg.log_every_steps == 0:
        self._log_progress(epoch)
        self._check_finite()
        if not self.live:  # every run left out: nothing left to step
          return False
      if term.reached(self.step) and i + 1 < self.spe:
        self._check_finite()
        self._save()
        return True
    return False

  def _host_batches(self, epoch: int, first: int):
    """The runs' host batches first.. of `epoch`, stacked on the mesh."""
    its = [iter(f.run.train_data.batches(epoch, start_step=first)) for f in self.folds]
    while True:
      try:
        host = [{k: v for k, v in next(it).items() if k in ('x', 'y')} for it in its]
      except StopIteration:
        return
      yield self.multirun.host_batches_to_global(host, self.mesh, pairs=self.first.mixes)

  def _log_progress(self, epoch: int) -> None:
    m = jax.device_get(self.metrics)
    rate, self.last_log = _steps_per_sec(self.last_log, self.step)
    if not self.first.is_main:
      return
    loss = np.asarray(m['loss'])[self.live]
    logging.info('epoch %d/%d step %d/%d | %d runs: loss %.4f (%.4f..%.4f) | %.2f steps/s '
                 '| ETA %s', epoch + 1, self.first.num_epochs, self.step, self.total,
                 len(self.live), loss.mean(), loss.min(), loss.max(), rate,
                 self.pace.eta(self.step, self.total, rate))
    for k in self.live:
      self.folds[k].writer.write_scalars(self.step, {
          'train/loss': m['loss'][k], 'train/error': m['error'][k], 'train/lr': m['lr'][k],
          'train/steps_per_sec': rate})

  def _end_epoch(self, epoch: int, term: _TerminationFlag) -> None:
    """`_Fold._end_epoch` of every live run on its slice (history, evaluation, checkpoint,
    results.json), then the rotation of the checkpoints."""
    loss, err = jax.device_get(self.sums)
    lr = np.asarray(jax.device_get(self.metrics['lr']))

    evals = None
    cfg = self.first.config
    if self.method == 'vmap' and ((epoch + 1) % cfg.eval_every_epochs == 0
                                  or epoch + 1 == self.first.num_epochs):
      # Every run's test fold through one vmapped eval step (under 'unroll', as alone: below).
      evals = trained.evaluate_runs(self.eval_step, self.state,
                                    [f.run.eval_data for f in self.folds], self.mesh)

    def end(k, f):
      f.sums, f.n_in_epoch, f.metrics = (loss[k], err[k]), self.n_in_epoch, dict(lr=lr[k])
      if evals is not None:
        f.given_eval = _Run.eval_summary(evals[k])
      f._end_epoch(epoch, term)  # pylint: disable=protected-access

    self._each(end, state=True)
    self._rotate()
    if ((epoch + 1) % cfg.checkpoint_every_epochs == 0 and epoch + 1 < self.first.num_epochs
        and not term.requested and self.first.is_main):
      self.saves.check(cfg.checkpoint_every_epochs)
    self.sums = tuple(jnp.zeros_like(s) for s in self.sums)
    self.n_in_epoch = 0
    self.last_log = (time.time(), self.step)
