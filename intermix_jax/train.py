"""Training and evaluation of one run, or of fold='all' / `seeds`: `train_and_evaluate`.

What lands in the workdir, how a rerun resumes (bitwise, on CPU), SIGTERM / Ctrl-C and the
nan_policy: WORKSPACE.md. A workdir is trained by one process at a time (workdir_lib.lock).
"""
from __future__ import annotations

import contextlib
import copy
import functools
import os
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
from intermix_jax import distributed
from intermix_jax import mixing
from intermix_jax import multirun
from intermix_jax import parallel
from intermix_jax import records
from intermix_jax import schedules
from intermix_jax import steps
from intermix_jax import summaries
from intermix_jax import termination
from intermix_jax import trained
from intermix_jax import workdir as workdir_lib
from intermix_jax.report import aggregation

CV_RESULTS_FILE = 'cv_results.json'
SEEDS_RESULTS_FILE = 'seeds_results.json'


NonFiniteError = records.NonFiniteError  # raised by train_and_evaluate


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains and evaluates `config` in `workdir`; returns the results dict (see results.json).

  Several runs (fold='all' and/or `seeds`; their workdirs and files: WORKSPACE.md): returns their
  summary (seeds_results.json; cv_results.json for fold='all' without `seeds`).

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
  if config.stack_runs and not (config.fold == 'all' or len(config.seeds or ()) > 1):
    raise config_checks.ConfigError(
        f"config.stack_runs=True stacks the runs of fold='all' or of several config.seeds in one "
        f"program, but config.fold={config.fold!r} and config.seeds={config.seeds!r}; use fold=all "
        f"or seeds=(0,1,...), or stack_runs=False for one run")
  checkpoints.quiet_orbax_logging()
  workdir = os.path.abspath(workdir)
  if config.fold == 'all' or config.seeds is not None:
    return _many_runs(config, workdir)
  return _train_fold(config, workdir)


def _lock(workdirs: list[str]):
  """The training lock of `workdirs` (workdir_lib.lock), taken by process 0 alone (WORKSPACE.md)."""
  return workdir_lib.lock(workdirs) if distributed.is_main_process() else contextlib.nullcontext()


def _many_runs(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """fold='all' and/or `seeds`: the runs, then cv_results.json per seed and seeds_results.json.
  Every workdir involved is locked first (WORKSPACE.md, "One training per workdir")."""
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
    workdir_lib.check_or_store_config(workdir, config, write=distributed.is_main_process())
    if config.stack_runs:
      results = _train([c for c, _ in plan], [w for _, w in plan], stack=config.stack_method)
    else:
      results = []
      for run_config, run_workdir in plan:
        results.append(_train_fold(run_config, run_workdir))
        if results[-1]['status'] != 'finished':
          break
    done = dict(zip([w for _, w in plan], results))
    per_seed = []
    for group, group_dir, runs in groups:
      got = [done[w] for _, w in runs if w in done]
      if config.fold == 'all':
        if group_dir != workdir:  # workdir/seed_<s> is a fold='all' workdir of its own
          workdir_lib.check_or_store_config(group_dir, group, write=distributed.is_main_process())
        per_seed.append(_write_summary(group, group_dir, CV_RESULTS_FILE, 'cross-validation',
                                       'fold', 'final_error', seed=group.seed,
                                       **aggregation.cv_summary(got, num_folds)))
      else:
        per_seed.append(dict(seed=group.seed, status=got[0]['status'] if got else 'not_started',
                             final_error=got[0]['final_error'] if got else None))
    summary = per_seed[0] if config.seeds is None else _write_summary(
        config, workdir, SEEDS_RESULTS_FILE, f'{len(per_seed)} seeds', 'seed', 'error',
        fold=config.fold, **aggregation.seeds_summary(
            per_seed, 'mean_error' if config.fold == 'all' else 'final_error'))
    stopped = [r for r in results if r['status'] == 'stopped_nonfinite']
    if stopped:  # runs in one program: the others trained to the end first
      raise NonFiniteError(' | '.join(f"{r['workdir']}: {r['message']}" for r in stopped))
    return summary


def _write_summary(config: ml_collections.ConfigDict, workdir: str, name: str, what: str,
                   unit: str, error_key: str, **fields) -> dict:
  """{dataset, backbone, method, **fields} written as workdir/name (process 0); logs its mean and
  the error (`error_key`) of each entry of fields[unit + 's']. Returns the summary."""
  summary = dict(dataset=config.dataset, backbone=config.backbone,
                 method=mixing.method_label(config), **fields)
  if distributed.is_main_process():
    workdir_lib.write_json_atomic(os.path.join(workdir, name), summary)
    if summary['mean_error'] is not None:
      logging.info('%s %s: error %.2f%% (%s)', what, workdir, summary['mean_error'], ', '.join(
          f'{unit} {r[unit]}: {r[error_key]:.2f}' for r in summary[unit + 's']))
  return summary


# ------------------------------------------------------------------------------------------------
# One run or K runs in one program: the same loop
# ------------------------------------------------------------------------------------------------
class _Run:
  """Everything one run's training needs, built once: model, data, optimiser and the mesh."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, *,
               before_writing: Callable[[], None] | None = None):
    """`before_writing`: called once the config is checked, before the first file is written
    (takes the workdir's lock)."""
    from intermix_jax import data
    self.config = config
    self.workdir = workdir
    self.is_main = distributed.is_main_process()
    self.info = data.dataset_info(config)
    self.model = trained.build_model(config, self.info.num_classes)  # checked by validate
    self.strategy = mixing.build_strategy(config)
    self.mixes = self.strategy.mixes
    config_checks.validate(
        config, num_folds=self.info.num_folds, num_mix_points=self.model.num_mix_points,
        device_count=jax.device_count(), process_count=jax.process_count(), mixes=self.mixes)
    if before_writing is not None:
      before_writing()
    workdir_lib.check_or_store_config(workdir, config, write=self.is_main)
    note = config_lib.row_note(config)  # --config.backbone after the row was chosen
    if note:
      logging.warning(note)

    distributed.prepare_data_once(config, self.model.sample_rate)
    # With the clips on the device, the host keeps none in memory (on_device.ClipTable reads them).
    cache = 0 if config.data_on_device else data.pipeline.DEFAULT_CACHE_BYTES
    args = (config, self.model.sample_rate, self.model.input_length)
    where = dict(process_index=jax.process_index(), process_count=jax.process_count())
    self.train_data = data.make_train_loader(*args, cache_bytes=cache, **where)
    self.eval_data = data.make_eval_loader(*args, **where)
    termination.stop_if_noted()  # a SIGTERM during preparation whose exception was swallowed
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
    self.mesh = parallel.make_mesh()  # every device; the jitted steps are shared by equal statics
    self.init_state = steps.state_initializer(self.model, self.opt, self.mesh)
    self.abstract_state = functools.partial(steps.abstract_state, self.model, self.opt, self.mesh)


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


def _train(configs: list[ml_collections.ConfigDict], workdirs: list[str],
           stack: str | None = None) -> list[dict]:
  """Trains (or resumes) run k of `configs` in `workdirs[k]`; returns their results dicts (see
  results.json), in the order given: one run (`stack` None), or K runs as ONE program, stacked on a
  run axis (`stack`: config.stack_method, multirun.py)."""
  t0 = time.time()
  parts, stores, writers, ok = [], [], [], False
  with contextlib.ExitStack() as held:
    try:
      for config, workdir in zip(configs, workdirs):
        run = _Run(config, workdir, before_writing=lambda w=workdir: held.enter_context(_lock([w])))
        store = checkpoints.CheckpointStore(os.path.join(workdir, workdir_lib.CHECKPOINTS_DIR),
                                            config.keep_checkpoints)
        stores.append(store)
        # A resume must read the data the checkpoints were trained on (workdir/dataset.json).
        workdir_lib.check_or_store_dataset(workdir, run.run_data.identity,
                                           resuming=store.latest_step() is not None,
                                           write=run.is_main)
        writers.append(summaries.SummaryWriter(workdir, enabled=run.is_main))
        parts.append((run, store, writers[-1]))
      results = _Loop(parts, t0, stack).train()
      ok = True
      return results
    finally:
      _close(writers + stores, quietly=not ok)


def _train_fold(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains (or resumes) one run in `workdir`; returns its results dict. Raises NonFiniteError
  (after results.json says so) when its loss turned non-finite under its nan_policy."""
  result = _train([config], [workdir])[0]
  if result['status'] == 'stopped_nonfinite':
    raise NonFiniteError(result['message'])
  return result


class _Loop:
  """The unfinished runs of `_train`, stepped in lockstep by one train step: one run, or K runs
  stacked on a run axis (`stack`). Every cadence (log, NaN check, evaluation, checkpoint,
  results.json, stop) is written once, here, for both (stacked: docs/architecture.md)."""

  def __init__(self, parts: list, t0: float, stack: str | None):
    spe = {run.config.fold: run.steps_per_epoch for run, _, _ in parts}
    if len(set(spe.values())) > 1:
      raise config_checks.ConfigError(
          f'config.stack_runs: the folds give different steps per epoch ({spe}, fold: steps), but '
          f'runs in one program step together; set config.steps_per_epoch to at most '
          f'{min(spe.values())}, or stack_runs=False')
    first = self.first = parts[0][0]
    self.spe, self.total = first.steps_per_epoch, first.total_steps
    self.num_epochs = first.num_epochs
    self.stack, self.num_all = stack, len(parts)
    books = [records.RunRecord(run, store, writer, t0) for run, store, writer in parts]
    self.done = {k: b for k, b in enumerate(books) if b.start >= self.total}
    unfinished = [k for k in range(len(books)) if k not in self.done]
    # The newest step every unfinished run can resume from (a run whose newest checkpoint is
    # unreadable falls back further, so this may take more than one round).
    while len({books[k].start for k in unfinished}) > 1:
      common = min(books[k].start for k in unfinished)
      for k in [k for k in unfinished if books[k].start > common]:
        logging.info('%s: resuming from step %d, with the other runs of this program',
                     books[k].run.workdir, common)
        books[k] = records.RunRecord(*parts[k], t0, at_most=common)
    self.books, self.order = [books[k] for k in unfinished], unfinished
    self.live = list(range(len(self.books)))  # indices into self.books (= the run axis)
    self.stopped: dict[int, dict] = {}
    if not self.books:
      return
    self.step = self.books[0].start
    mesh = self.mesh = first.mesh
    self.saves = summaries.SaveShare()  # every run's saves count together
    if stack:
      for b in self.books:
        b.label = f' (fold {b.cfg.fold}, seed {b.cfg.seed})'
        deleted = b.store.discard_after(self.step)
        if deleted:
          logging.info('%s: deleted checkpoints %s (newer than step %d, where the runs resume '
                       'together)', b.run.workdir, deleted, self.step)
      self.state = multirun.stack_on_mesh([b.state for b in self.books], mesh)
      self.keys = multirun.stack_on_mesh([b.train_key for b in self.books], mesh)
      logging.info('%d runs in one program (%s) from step %d of %d (%s)', len(self.books),
                   multirun.resolve_method(stack, mesh, first.model), self.step, self.total,
                   ', '.join(os.path.relpath(b.run.workdir, os.path.dirname(first.workdir))
                             for b in self.books))
    else:
      self.state, self.keys = self.books[0].state, self.books[0].train_key
    self.train_step = steps.mesh_train_step(first.model, first.strategy, first.opt,
                                            first.info.num_classes, mesh, stack=stack)
    self.eval_step = steps.mesh_eval_step(first.model, mesh, stack=stack)
    # Host batches (or crop plans) -> the mesh; with `stack` a list of K, one per run.
    self.place = functools.partial(parallel.host_batch_to_global, mesh=mesh, pairs=first.mixes,
                                   runs=bool(stack))
    self.device_inputs = None
    if first.config.data_on_device:  # one table of every run's clips (shared rows), on the mesh
      from intermix_jax.data import on_device
      self.device_inputs = on_device.device_inputs(
          [b.run.train_data for b in self.books], mesh, place=self.place,
          replicate=parallel.replicate, stacked=bool(stack))
      self.train_step = self.device_inputs.fuse(self.train_step)  # crops cut inside the step
    for b in self.books:
      b.state = None  # the loop's copy is the only one from here on
    sums = [jnp.asarray([b.sums[i] for b in self.books], jnp.float32) for i in (0, 1)]
    self.sums = tuple(s if stack else s[0] for s in sums)  # what the step carries: (K,) or ()
    self.n_in_epoch = self.books[0].n_in_epoch
    self.metrics = None
    self.last_log = (time.time(), self.step)
    self.pace = summaries.Pace()

  # --- the run axis ------------------------------------------------------------------------------
  @staticmethod
  def _per_run(tree):
    """Device values of the step (scalars, or (K,) when stacked) -> numpy (K,) on the host."""
    return jax.tree.map(lambda x: np.atleast_1d(np.asarray(x)), jax.device_get(tree))

  def _each(self, fn, *, state: bool = False) -> None:
    """fn(k, book) for every live run, book.step set (and book.state its share while `state`);
    a run that raises records.NonFiniteError is left out from then on."""
    stopped = []
    for k in list(self.live):
      b = self.books[k]
      b.step = self.step
      if state:
        b.state = multirun.take_run(self.state, k, self.mesh) if self.stack else self.state
      try:
        fn(k, b)
      except records.NonFiniteError as e:
        self.live.remove(k)
        self.stopped[k] = b.results('stopped_nonfinite', str(e))
        stopped.append(k)
      finally:
        b.state = None
    for k in stopped:  # once every run had its turn: which ones go on is known
      if self.live:
        logging.warning('%s: left out of the program from step %d (the other %d run(s) go on)',
                        self.books[k].run.workdir, self.step, len(self.live))
      elif self.stack:
        logging.warning('%s: left out of the program from step %d; no run of the program is '
                        'left to train', self.books[k].run.workdir, self.step)

  def _check_finite(self) -> None:
    bad, first = self._per_run((self.state.nonfinite_count, self.state.first_nonfinite_step))
    self._each(lambda k, b: b.check_finite(counts=(bad[k], first[k])))

  def _save(self) -> None:
    """Every live run's checkpoint of the current step (with the epoch's metric sums so far:
    zero right after an epoch's end), then, once all are written, the rotation of the old ones."""
    loss, err = self._per_run(self.sums)
    self._each(lambda k, b: b.save(dict(loss=float(loss[k]), error=float(err[k]),
                                        n=self.n_in_epoch)), state=True)
    for k in self.live:
      self.books[k].store.rotate()

  # --- training ----------------------------------------------------------------------------------
  def train(self) -> list[dict]:
    out = {k: self._already_trained(b) for k, b in self.done.items()}
    if self.books:
      self._each(lambda k, b: b.write_results('running'))
      preempted = False
      with termination.Flag() as term:
        for epoch in range(self.step // self.spe, self.num_epochs):
          preempted = self._train_epoch(epoch, term)
          if preempted or not self.live:
            break
          self._end_epoch(epoch, term)
          if term.requested and epoch + 1 < self.num_epochs:
            preempted = True
            break
      for k, b in enumerate(self.books):
        b.step = self.step
        if k in self.stopped:
          out[self.order[k]] = self.stopped[k]
        elif preempted:
          message = (f'{term.name} at step {self.step}: saved checkpoint '
                     f'{b.store.path(self.step)}; rerun the same command to resume')
          logging.warning(message)
          out[self.order[k]] = b.write_results('preempted', message)
        else:
          r = out[self.order[k]] = b.write_results('finished')
          if b.run.is_main:
            logging.info('finished %s: test error %.2f%% at epoch %d (wall time %s)',
                         b.run.workdir, r['final_error'], r['final_epoch'],
                         summaries.fmt_time(r['wall_time_s']))
    return [out[k] for k in range(self.num_all)]

  def _already_trained(self, b: records.RunRecord) -> dict:
    """A rerun of a finished run: evaluates the final state only if its last evaluation is not
    the last epoch's."""
    run = b.run
    logging.info('%s: already trained (%d steps)', run.workdir, b.start)
    last = b.meta['last_eval']
    if last is None or last['epoch'] != run.num_epochs:
      ev = trained.evaluate_clips(steps.mesh_eval_step(run.model, run.mesh), b.state,
                                  run.eval_data, run.mesh)
      b.record_eval(run.num_epochs, records.eval_summary(ev), report=False)
    return b.write_results('finished')

  def _train_epoch(self, epoch: int, term: termination.Flag) -> bool:
    """The rest of `epoch` from the current step, for every run at once (each from its own
    loader, or every run's rows cut on the devices: config.data_on_device); True when SIGTERM
    stopped it (after a checkpoint of the partial epoch), False at the epoch's end."""
    cfg, first = self.first.config, self.step - epoch * self.spe
    if self.device_inputs is not None:
      batches = self.device_inputs.batches(epoch, first)
    else:
      its = [iter(b.run.train_data.batches(epoch, start_step=first)) for b in self.books]
      xy = lambda host: [{k: b[k] for k in ('x', 'y')} for b in host]
      batches = (self.place(xy(host) if self.stack else xy(host)[0]) for host in zip(*its))
    for i in range(first, self.spe):
      batch = next(batches, None)
      if batch is None:
        raise RuntimeError(
            f'the training data of epoch {epoch} ended after {i} batches, but '
            f'steps_per_epoch={self.spe} (config.steps_per_epoch={cfg.steps_per_epoch}, the loader '
            f'has {self.first.train_data.steps_per_epoch}); lower config.steps_per_epoch')
      self.state, self.metrics = self.train_step(self.state, batch, self.keys)
      self.sums = (self.sums[0] + self.metrics['loss'], self.sums[1] + self.metrics['error'])
      self.n_in_epoch += 1
      self.step += 1
      if self.step % cfg.log_every_steps == 0:
        self._log_progress(epoch)
        self._check_finite()
        if not self.live:  # every run left out: nothing left to step
          return False
      if term.reached(self.step) and i + 1 < self.spe:  # at an epoch's end, it is closed first
        self._check_finite()
        self._save()
        return True
    return False

  def _log_progress(self, epoch: int) -> None:
    m = self._per_run(self.metrics)
    rate, self.last_log = summaries.steps_per_sec(self.last_log, self.step)
    if not self.first.is_main:
      return
    eta = self.pace.eta(self.step, self.total, rate)
    if self.stack:
      loss = m['loss'][self.live]
      logging.info('epoch %d/%d step %d/%d | %d runs: loss %.4f (%.4f..%.4f) | %.2f steps/s '
                   '| ETA %s', epoch + 1, self.num_epochs, self.step, self.total, len(self.live),
                   loss.mean(), loss.min(), loss.max(), rate, eta)
    else:
      logging.info('epoch %d/%d step %d/%d | loss %.4f error %.1f%% lr %.3g | %.2f steps/s '
                   '| ETA %s', epoch + 1, self.num_epochs, self.step, self.total, m['loss'][0],
                   m['error'][0], m['lr'][0], rate, eta)
    for k in self.live:
      self.books[k].writer.write_scalars(self.step, {
          'train/loss': m['loss'][k], 'train/error': m['error'][k], 'train/lr': m['lr'][k],
          'train/steps_per_sec': rate})

  def _end_epoch(self, epoch: int, term: termination.Flag) -> None:
    """Closes `epoch` for every live run: history entry, evaluation, TensorBoard, checkpoint and
    results.json, each at its cadence (`evaluated`, `saved` below; WORKSPACE.md)."""
    cfg, last = self.first.config, epoch + 1 == self.num_epochs
    self._check_finite()
    (loss, err), lr = self._per_run((self.sums, self.metrics['lr']))
    evaluated = (epoch + 1) % cfg.eval_every_epochs == 0 or last
    evals = [None] * len(self.books)
    if evaluated and self.live:
      loaders = [b.run.eval_data for b in self.books] if self.stack else self.books[0].run.eval_data
      evs = trained.evaluate_clips(self.eval_step, self.state, loaders, self.mesh,
                                   runs=bool(self.stack))
      evals = [records.eval_summary(ev) for ev in (evs if self.stack else [evs])]
    self._each(lambda k, b: b.end_epoch(epoch, (loss[k], err[k]), self.n_in_epoch, lr[k], evals[k]))
    self.sums = tuple(jnp.zeros_like(s) for s in self.sums)
    self.n_in_epoch = 0
    saved = (epoch + 1) % cfg.checkpoint_every_epochs == 0 or last or term.requested
    if saved:
      self.saves.timed(self._save)
      if self.first.is_main and not (last or term.requested):
        self.saves.check(cfg.checkpoint_every_epochs)
    if not self.stack or saved or evaluated:  # stacked: not every epoch (benchmarks/README.md)
      self._each(lambda k, b: b.write_results('finished' if last else 'running'))
    self.last_log = (time.time(), self.step)  # steps/s counts training only
