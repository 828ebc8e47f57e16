"""Adversarial robustness (paper table 3, docs/method.md §7): one-step untargeted FGSM.

    python -m intermix_jax.adversarial --workdir=W [--eps=1e-2,1e-3,1e-4,1e-5] [--out=FILE]

Restores the LAST checkpoint of a finished training workdir (read-only: W/config.json and
W/checkpoints), rebuilds its test fold with the training run's own loader (10 evenly spaced crops per
clip, docs/method.md §5) and evaluates it clean and attacked:

    x_adv = x + eps * sign(grad_x CE(f(x), y))

on the normalised waveform x = int16 / 32768 of EACH crop (its clip's label, model in eval mode),
then the usual protocol (mean softmax over the attacked crops -> argmax); one gradient serves every
eps, no clipping to [-1, 1]. Writes W/adversarial.json (or --out), self-describing so that
`python -m intermix_jax.report` can find it anywhere and put it in table 3:

    {"attack": "fgsm", "epsilons": [...], "clean_error": %, "attacked_error": {"0.01": %, ...},
     "num_correct": {"clean": n, "0.01": n, ...}, "num_test_examples", "mean_crop_loss": {...},
     "results_final_error": % (W/results.json, must equal clean_error), "dataset", "backbone",
     "strategy", "method", "fold", "seed", "num_folds", "config", "checkpoint_step", "workdir",
     "run_status", "wall_time_s", "versions"}
"""
from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import os
import sys
import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from intermix_jax import io_errors
from intermix_jax import steps

DEFAULT_EPSILONS = (1e-2, 1e-3, 1e-4, 1e-5)  # docs/method.md §7
RESULTS_FILE = 'adversarial.json'


AdversarialWorkdirError = io_errors.WorkdirError  # the workdir cannot be attacked


def fgsm(loss_fn: Callable[[jax.Array], jax.Array], x: jax.Array, eps) -> jax.Array:
  """One-step untargeted FGSM: x + eps * sign(grad_x loss_fn(x)).

  Args:
    loss_fn: x -> scalar loss (to be increased).
    x: float32 array, any shape (e.g. (N, T) waveforms / 32768).
    eps: L-infinity step (scalar, units of the normalised waveform).
  Returns:
    float32 array of x's shape; entries whose gradient is exactly 0 are unchanged (sign(0) = 0).
  """
  return x + eps * jnp.sign(jax.grad(loss_fn)(x))


def _crop_losses(logits: jax.Array, y: jax.Array) -> jax.Array:
  """float32 (b, crops) cross-entropy (nats) of the crops' logits (b * crops, C) at their clip's
  label y (b,)."""
  log_probs = jax.nn.log_softmax(logits, -1).reshape(y.shape[0], -1, logits.shape[-1])
  labels = jnp.broadcast_to(y[:, None], log_probs.shape[:2])
  return -jnp.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]


def crop_gradients(variables: dict, x: jax.Array, y: jax.Array, mask: jax.Array, *,
                   model) -> tuple[jax.Array, jax.Array]:
  """(losses (b, crops), grad_x (b, crops, T)) of each crop's own cross-entropy in eval mode.

  Args: the model's `variables` (params, batch_stats); x float32 (b, crops, T) normalised
  waveforms; y int32 (b,) labels; mask bool (b,) (False rows get a zero gradient).
  """
  def total(xx):
    losses = _crop_losses(steps.crop_logits(variables, xx, model=model), y)
    return jnp.sum(jnp.where(mask[:, None], losses, 0.0)), losses
  (_, losses), grad = jax.value_and_grad(total, has_aux=True)(x)
  return losses, grad


def attack_step(state, batch: dict, *, model, epsilons: tuple[float, ...]) -> dict:
  """Clean and FGSM-attacked multi-crop evaluation of one batch (docs/method.md §5, §7).

  Args:
    state: anything with `params` and `batch_stats` (e.g. steps.TrainState).
    batch: x float32 (b, crops, T), y int32 (b,), mask bool (b,) (False: padding rows).
    model: the flax module (static).
    epsilons: E attack strengths (static tuple of floats).
  Returns:
    pred int32 (E+1, b), correct bool (E+1, b) (False where masked), num_correct int32 (E+1,),
    count int32 scalar (unmasked clips), loss_sum float32 (E+1,) (sum of the unmasked crops'
    cross-entropy); row 0 is the clean input, row e+1 is epsilons[e].
  """
  variables = steps.variables(state.params, state.batch_stats)
  x, y = batch['x'], batch['y']
  mask = batch['mask'].astype(bool)
  direction = jnp.sign(crop_gradients(variables, x, y, mask, model=model)[1])
  outs, losses = [], []
  for eps in (0.0,) + tuple(epsilons):
    logits = steps.crop_logits(variables, x + jnp.float32(eps) * direction if eps else x,
                               model=model)
    outs.append(steps.clip_outputs(logits, y, mask))  # the trainer's clip prediction
    losses.append(jnp.sum(jnp.where(mask[:, None], _crop_losses(logits, y), 0.0)))
  out = {k: jnp.stack([o[k] for o in outs]) for k in ('pred', 'correct', 'num_correct')}
  return dict(out, count=outs[0]['count'], loss_sum=jnp.stack(losses))


@functools.lru_cache(maxsize=None)
def attack_step_on(model, epsilons: tuple[float, ...], mesh) -> Callable:
  """`attack_step` for `model` and `epsilons` jitted on `mesh` with the eval step's shardings;
  one per (model, epsilons, mesh) in a process."""
  from intermix_jax import parallel  # pylint: disable=g-import-not-at-top
  return steps.jit_eval_step(functools.partial(attack_step, model=model, epsilons=tuple(epsilons)),
                             **parallel.eval_step_shardings(mesh))


def eps_key(eps: float) -> str:
  """JSON key of an eps: '0.01', '0.001', '0.0001', '1e-05' (Python's repr of the float)."""
  return repr(float(eps))


def load_workdir(workdir: str, *, allow_unfinished: bool = False):
  """The trained.TrainedRun of `workdir`: config, results, model and the state of its last
  checkpoint (read-only), on this process's first device.

  Raises:
    AdversarialWorkdirError: no such workdir / config.json / readable checkpoint, or the run has
      not finished (unless allow_unfinished), or the checkpoint of its last step is missing or
      corrupted.
  """
  from intermix_jax import trained  # pylint: disable=g-import-not-at-top
  from intermix_jax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  workdir = os.path.abspath(workdir)
  results_path = os.path.join(workdir, workdir_lib.RESULTS_FILE)

  def finished(_, results):  # (config, results), before the checkpoint is read
    status = results.get('status') if results else None
    if status != 'finished' and not allow_unfinished:
      raise AdversarialWorkdirError(
          f'--workdir={workdir}: the run has not finished ({results_path}: status {status!r}); '
          f'the attack evaluates the LAST checkpoint of a finished run (--allow_unfinished to '
          f'attack the newest checkpoint anyway)')

  run = trained.load_workdir(workdir, check=finished)
  results = run.results
  if results and results.get('status') == 'finished' and run.step != int(
      results.get('total_steps', run.step)):
    skipped = f' (skipped: {run.skipped})' if run.skipped else ''
    raise AdversarialWorkdirError(
        f'--workdir={workdir}: the newest readable checkpoint is step {run.step}, but the run '
        f'finished at step {results.get("total_steps")}: its last checkpoint is missing, '
        f'unreadable or corrupted{skipped}')
  return run


def evaluate_workdir(workdir: str, epsilons: Sequence[float] = DEFAULT_EPSILONS, *,
                     data_dir: str | None = None, manual_dir: str | None = None,
                     allow_unfinished: bool = False) -> dict:
  """Clean and FGSM-attacked 10-crop test error of a trained workdir (the adversarial.json dict).

  Args:
    workdir: a training run's workdir (one fold).
    epsilons: attack strengths (normalised-waveform units).
    data_dir, manual_dir: replace the config's data locations (e.g. the data moved).
    allow_unfinished: attack the newest checkpoint of a run that has not finished.
  """
  from intermix_jax import data, mixing, trained  # pylint: disable=g-import-not-at-top
  from intermix_jax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  t0 = time.time()
  run = load_workdir(workdir, allow_unfinished=allow_unfinished)
  config, results, model, step = run.config, run.results, run.model, run.step
  epsilons = tuple(float(e) for e in epsilons)
  moved = {k: v for k, v in dict(data_dir=data_dir, manual_dir=manual_dir).items() if v is not None}
  config.update(moved)  # run.config: this call's own ConfigDict (from config.json)
  loader = data.make_eval_loader(config, model.sample_rate, model.input_length)
  ev = trained.evaluate_clips(attack_step_on(model, epsilons, run.mesh), run.state, loader,
                              run.mesh, per_clip=(), totals=('num_correct', 'count', 'loss_sum'))
  count, crops = ev['count'], ev['count'] * int(config.num_eval_crops)
  keys = ['clean'] + [eps_key(e) for e in epsilons]
  return dict(
      attack='fgsm', norm='linf', space='waveform / 32768', epsilons=list(epsilons),
      clean_error=float(ev['error'][0]),
      attacked_error={eps_key(e): float(v) for e, v in zip(epsilons, ev['error'][1:])},
      num_correct={k: int(v) for k, v in zip(keys, ev['num_correct'])},
      mean_crop_loss={k: float(v / max(crops, 1)) for k, v in zip(keys, ev['loss_sum'])},
      num_test_examples=int(count), num_crops=int(config.num_eval_crops),
      results_final_error=None if results is None else results.get('final_error'),
      run_status=None if results is None else results.get('status'),
      dataset=config.dataset, backbone=config.backbone, strategy=config.strategy,
      method=mixing.method_label(config), fold=config.fold, seed=config.seed,
      num_folds=data.dataset_info(config).num_folds,
      config=json.loads(config.to_json()),
      checkpoint_step=step, workdir=run.workdir,
      wall_time_s=time.time() - t0, versions=workdir_lib.versions())


def parse_epsilons(text: str) -> tuple[float, ...]:
  """'1e-2,1e-3' -> (0.01, 0.001); ValueError naming --eps for anything else."""
  try:
    values = tuple(float(t) for t in text.split(',') if t.strip())
  except ValueError:
    raise ValueError(f'--eps={text!r}: expected comma-separated numbers, e.g. 1e-2,1e-3') from None
  if not values or any(not math.isfinite(v) or v <= 0 for v in values):
    raise ValueError(f'--eps={text!r}: every eps must be a finite number > 0')
  return values


def main(argv: Sequence[str] | None = None) -> int:
  """Exit status: 0 written; 1 one line `error: ...` for a data or the machine's error (e.g. --out
  not writable: cli.one_line_errors); 2 bad arguments or unusable workdir."""
  p = argparse.ArgumentParser(prog='python -m intermix_jax.adversarial',
                              description=__doc__.splitlines()[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
  p.add_argument('--workdir', required=True, help='workdir of a finished training run (one fold)')
  p.add_argument('--eps', default=','.join(str(e) for e in DEFAULT_EPSILONS),
                 help='comma-separated attack strengths (default: the paper\'s 1e-2..1e-5)')
  p.add_argument('--out', default=None, help=f'output JSON (default: WORKDIR/{RESULTS_FILE})')
  p.add_argument('--data_dir', default=None, help='TFDS data dir (default: the run\'s config)')
  p.add_argument('--manual_dir', default=None, help='raw data copy (default: the run\'s config)')
  p.add_argument('--allow_unfinished', action='store_true',
                 help='attack the newest checkpoint of a run that has not finished')
  args = p.parse_args(argv)  # None: sys.argv[1:]
  try:
    epsilons = parse_epsilons(args.eps)
  except ValueError as e:
    p.error(str(e))
  from intermix_jax import checkpoints, cli  # pylint: disable=g-import-not-at-top
  from intermix_jax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  checkpoints.quiet_orbax_logging(logging.ERROR)  # read-only restores: orbax's warnings too
  out = args.out or os.path.join(args.workdir, RESULTS_FILE)

  def attack() -> int:
    result = evaluate_workdir(args.workdir, epsilons, data_dir=args.data_dir,
                              manual_dir=args.manual_dir, allow_unfinished=args.allow_unfinished)
    try:
      os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
      workdir_lib.write_json_atomic(out, result)
    except OSError as e:  # after minutes of attacks: say where the result is missing
      line = io_errors.os_error_line(e, '--out')
      if line is None:
        raise
      return io_errors.error(f'the result could not be written: {line}')
    line = ' | '.join(f'eps {k}: {v:.1f}%' for k, v in result['attacked_error'].items())
    print(f'{result["dataset"]} {result["backbone"]} {result["method"]} fold {result["fold"]} '
          f'seed {result["seed"]}: clean {result["clean_error"]:.1f}% | {line}  -> {out}',
          flush=True)
    return 0
  return cli.one_line_errors(attack)


if __name__ == '__main__':
  sys.exit(main())
