"""One run's records (`RunRecord`, listed in docs/architecture.md), one per run of train._Loop."""
from __future__ import annotations

import os
import time

from absl import logging
import jax
import numpy as np

from intermix_jax import checkpoints
from intermix_jax import mixing
from intermix_jax import parallel
from intermix_jax import summaries
from intermix_jax import workdir as workdir_lib


class NonFiniteError(RuntimeError):
  """Training met a non-finite loss or gradient under nan_policy='stop'."""


def eval_summary(ev: dict) -> dict:
  """`trained.evaluate_clips`' result of one run -> what results.json keeps of it."""
  return dict(error=float(ev['error']), num_correct=int(ev['num_correct']), count=ev['count'],
              preds=ev['pred'].tolist(), labels=ev['labels'].tolist())


class RunRecord:
  """One run's records (`run`: train.py's `_Run`; `writer`: enabled on the main process only, as
  train.py builds it). Restores the newest usable checkpoint (of a step <= `at_most` when given) or
  initialises the state; the loop (train._Loop) owns the training state after that and sets
  `state` to the run's share of it while saving or reading counters."""

  def __init__(self, run, store: checkpoints.CheckpointStore,
               writer: summaries.SummaryWriter, t0: float, *, at_most: int | None = None):
    self.run, self.store, self.writer, self.t0 = run, store, writer, t0
    cfg = self.cfg = run.config
    init_key, train_key = jax.random.split(jax.random.key(cfg.seed))
    self.meta = dict(history=[], partial=dict(loss=0.0, error=0.0, n=0), wall_time=0.0,
                     rng=np.asarray(jax.random.key_data(train_key)).tolist(), last_eval=None,
                     nonfinite_steps=0)
    self.label = ''  # ' (fold k, seed s)' in the log lines of runs in one program
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
    self.train_key = parallel.replicate(train_key, run.mesh)
    self.start = self.step = int(jax.device_get(self.state.step))
    if self.start == 0:
      writer.write_texts(0, {'config': '```\n' + str(cfg) + '\n```'})
    info, data = run.info, run.run_data
    self.base = dict(
        config=workdir_lib.config_to_dict(cfg), dataset=cfg.dataset, backbone=cfg.backbone,
        strategy=cfg.strategy, method=mixing.method_label(cfg), fold=cfg.fold, seed=cfg.seed,
        num_classes=info.num_classes, class_names=list(info.class_names),
        num_folds=info.num_folds, num_epochs=run.num_epochs, steps_per_epoch=run.steps_per_epoch,
        total_steps=run.total_steps, num_train_examples=run.train_data.num_examples,
        num_test_examples=run.eval_data.num_examples, workdir=run.workdir,
        dataset_identity=data.identity, class_clips=data.class_clips,
        classes_without_test_clips=data.classes_without_test_clips,
        classes_without_clips=data.classes_without_clips, skipped_files=data.skipped_files)
    self.versions = workdir_lib.versions()
    # nan_policy=skip: steps checked so far and the run of consecutive non-finite steps seen.
    self.nonfinite = dict(step=self.start, streak=0)
    self.give_up_after = max(run.steps_per_epoch, 3)  # in a row: the state itself is broken
    partial = self.meta['partial']  # the epoch's metric sums and steps, as the checkpoint has them
    self.sums, self.n_in_epoch = (partial['loss'], partial['error']), int(partial['n'])

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
      workdir_lib.write_json_atomic(os.path.join(self.run.workdir, workdir_lib.RESULTS_FILE), r)
    return r

  def save(self, partial: dict) -> None:
    """Checkpoint of `state` at the current step (the loop rotates old ones away once every run
    saved); `partial`: the metric sums of the unfinished epoch."""
    spe = self.run.steps_per_epoch
    meta = dict(self.meta, epoch=self.step // spe, step_in_epoch=self.step % spe,
                global_step=self.step, partial=partial,
                wall_time=self.meta['wall_time'] + (time.time() - self.t0))
    self.store.save(self.step, self.state, meta)

  def last_good_checkpoint(self) -> str:
    """The checkpoint to name after a non-finite step: only a verified one is called good."""
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

  def record_eval(self, epoch: int, ev: dict, report: bool = True) -> None:
    """`ev` (`eval_summary`) is the evaluation of the state of `epoch` (meta['last_eval']);
    `report`: log the error and write it to TensorBoard."""
    self.meta['last_eval'] = dict(ev, epoch=epoch)
    if report and self.run.is_main:
      logging.info('epoch %d/%d%s: test error %.2f%% (%d/%d clips, %d crops each)', epoch,
                   self.run.num_epochs, self.label, ev['error'], ev['count'] - ev['num_correct'],
                   ev['count'], self.cfg.num_eval_crops)
      self.writer.write_scalars(self.step, {'test/error': ev['error']})

  def end_epoch(self, epoch: int, sums: tuple[float, float], n: int, lr: float,
                ev: dict | None) -> dict:
    """History entry of `epoch` (`sums` of loss and error over its `n` steps, its last LR; `ev`:
    its evaluation, or None), TensorBoard; returns the entry."""
    loss_sum, err_sum = sums
    n = max(n, 1)
    entry = dict(epoch=epoch + 1, step=self.step, train_loss=float(loss_sum) / n,
                 train_error=float(err_sum) / n, lr=float(lr),
                 nonfinite_steps=self.meta['nonfinite_steps'])
    if ev is not None:
      self.record_eval(epoch + 1, ev)
      entry['test_error'] = ev['error']
    self.meta['history'].append(entry)
    self.writer.write_scalars(self.step, {'epoch/train_loss': entry['train_loss'],
                                          'epoch/train_error': entry['train_error'],
                                          'epoch/nonfinite_steps': entry['nonfinite_steps']})
    self.writer.flush()
    return entry

  # --- the NaN policy ----------------------------------------------------------------------------
  def check_finite(self, counts: tuple[int, int]) -> None:
    """Host-side NaN policy at the current step.

    stop: NonFiniteError naming the step and the last verified checkpoint. skip: carry on, but stop
    the same way after `give_up_after` consecutive non-finite steps (before the checkpoint of the
    epoch, so no good checkpoint is rotated away for a state that cannot train). `counts`:
    (nonfinite_count, first_nonfinite_step) of this run, read by the loop.
    """
    cfg, store, step = self.cfg, self.store, self.step
    spe, total = self.run.steps_per_epoch, self.run.total_steps
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
