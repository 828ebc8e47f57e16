"""The compute bill of the paper's table 1, on paper: XLA FLOPs x steps for every cell, and the
throughput that fits the whole table in a time budget on one accelerator.

    .venv/bin/python benchmarks/table1_budget.py                      # prints the markdown tables
    .venv/bin/python benchmarks/table1_budget.py --hours 24 --peak_tflops 989,495,67
    .venv/bin/python benchmarks/table1_budget.py --cache /tmp/table1_flops.json   # compile once

Table 1 (launch/sweep.py --table=1), read from the registries: its rows and strategies are the
paper's (`report.paper.PAPER_TABLE1`, in the paper's order: m18, soundnet5, envnet, piczakcnn,
envnetv2 and envnetv2 + strong augmentation, host-side, the same device step as envnetv2;
standard, bc, speechmix, intermix), its datasets `protocol.PAPER_DATASETS` (ESC-50, ESC-10,
UrbanSound8K) with their folds from `data.catalog.known_num_folds` (5, 5, 10); one seed; every
fold is one run.

Per run: train steps = epochs x floor(train clips / 64) (the trainer drops the last partial batch;
mixing strategies train twice the epochs of the docs/method.md §5 row, `protocol.optimisation_row`);
test clips per fold = the dataset's clips (`CLIPS`) / its folds, rounded down, train clips the rest:
ESC-50 1600 + 400, ESC-10 320 + 80, UrbanSound8K 7859 + 873 (8732 clips over 10 folds of 806..990:
the mean fold). FLOPs per train step: XLA's cost analysis of the trainer's compiled step (`steps.mesh_train_step` on one device:
forward, backward, mixing, optimiser) at batch 64, published widths, float32, the plain
convolutions (`models.cpu_ops` forced to 'plain': the accelerator's program; the CPU rewrites
compute some weight gradients by FFT, which XLA counts as fewer FLOPs) -- compiled HERE, on the
CPU backend: this is the CPU compile's count (a GPU compile fuses differently but performs the
same convolutions and matrix products). Evaluation: 10 crops per test clip, every
`eval_every_epochs` = 50 epochs and after the last one; FLOPs per clip from the compiled
`steps.mesh_eval_step` (16 clips x 10 crops).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position

from intermix_jax import config_lib, mixing, models, parallel, protocol, steps  # pylint: disable=g-import-not-at-top,wrong-import-position
from intermix_jax.data import catalog  # pylint: disable=g-import-not-at-top,wrong-import-position
from intermix_jax.report import paper  # pylint: disable=g-import-not-at-top,wrong-import-position
from machine import cpu_name, flops_of, load  # pylint: disable=g-import-not-at-top,wrong-import-position

# The paper's table 1 (report/paper_values.json): its rows ('<backbone>' or '<backbone>+aug', strong
# augmentation: the same device step) and its strategy columns, in the paper's order.
ROWS = tuple(paper.PAPER_TABLE1)
STRATEGIES = tuple(dict.fromkeys(s for cells in paper.PAPER_TABLE1.values() for s in cells))
# Clips of each dataset of the tables (the published sizes; no registry holds clip counts).
CLIPS = {'esc50': 2000, 'esc10': 400, 'urbansound8k': 8732}


def _split(dataset: str) -> tuple[int, int, int]:
  """(folds, train clips per fold, test clips per fold): the test fold is the mean fold."""
  folds = catalog.known_num_folds(dataset)
  test = CLIPS[dataset] // folds
  return folds, CLIPS[dataset] - test, test


DATASETS = {d: _split(d) for d in protocol.PAPER_DATASETS}  # name: (folds, train, test clips)
BATCH = protocol.FIXED['batch_size']
EVAL_EVERY = config_lib.base_config().eval_every_epochs
CROPS = protocol.FIXED['num_eval_crops']
BASE_MIXING = config_lib.base_config().mixing.to_dict()  # every strategy option at its default


def backbone_of(row: str) -> str:
  """The backbone of a table 1 row ('envnetv2+aug' -> 'envnetv2')."""
  return row.removesuffix('+aug')


def step_flops(backbone: str, strategy: str, num_classes: int = 50) -> tuple[float, float]:
  """(FLOPs of one compiled train step at batch 64, compile seconds)."""
  models.cpu_ops.set_forced('plain')  # the accelerator's program, whatever the backend
  model = models.get_model(backbone, num_classes)
  strat = mixing.get_strategy(strategy, **{k: BASE_MIXING[k] for k in mixing.strategy_options(strategy)})
  opt = steps.OptimizerSpec(lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4,
                            num_epochs=1200, steps_per_epoch=25, schedule=(0.5, 0.75),
                            warmup_epochs=0)
  mesh = parallel.make_mesh(1)
  state = steps.abstract_state(model, opt, mesh)
  batch = dict(x=jax.ShapeDtypeStruct((BATCH, model.input_length), jnp.float32),
               y=jax.ShapeDtypeStruct((BATCH,), jnp.int32))
  start = time.perf_counter()
  compiled = steps.mesh_train_step(model, strat, opt, num_classes, mesh).lower(
      state, batch, jax.random.key(0)).compile()
  return flops_of(compiled), time.perf_counter() - start


def eval_flops_per_clip(backbone: str, num_classes: int = 50, clips: int = 16) -> float:
  models.cpu_ops.set_forced('plain')  # the accelerator's program, whatever the backend
  model = models.get_model(backbone, num_classes)
  opt = steps.OptimizerSpec(lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4,
                            num_epochs=1, steps_per_epoch=1, schedule=(), warmup_epochs=0)
  mesh = parallel.make_mesh(1)
  state = steps.abstract_state(model, opt, mesh)
  batch = dict(x=jax.ShapeDtypeStruct((clips, CROPS, model.input_length), jnp.float32),
               y=jax.ShapeDtypeStruct((clips,), jnp.int32),
               mask=jax.ShapeDtypeStruct((clips,), jnp.bool_))
  return flops_of(steps.mesh_eval_step(model, mesh).lower(state, batch).compile()) / clips


def run_epochs(backbone: str, dataset: str, strategy: str) -> int:
  epochs = protocol.optimisation_row(backbone, dataset)['num_epochs']
  return epochs * (1 if strategy == 'standard' else 2)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--hours', type=float, default=24.0)
  p.add_argument('--peak_tflops', default='989,495,67',
                 help='dense peaks to compare with: bf16, tf32, fp32 (H200 SXM data sheet)')
  p.add_argument('--cache', default=None,
                 help='JSON file of the measured FLOPs: read if it exists, else written')
  args = p.parse_args(argv)
  peaks = dict(zip(('bfloat16', 'tf32', 'float32'), (float(v) for v in args.peak_tflops.split(','))))
  print(f'# {cpu_name()}, {os.cpu_count()} cores; jax {jax.__version__} '
        f'({jax.default_backend()} compile); load {load()}', flush=True)
  backbones = tuple(dict.fromkeys(backbone_of(r) for r in ROWS))
  train, evals = {}, {}
  if args.cache and os.path.exists(args.cache):
    with open(args.cache) as f:
      cached = json.load(f)
    train = {tuple(k.split('/')): v for k, v in cached['train'].items()}
    evals = cached['eval']
    print(f'# FLOPs read from {args.cache} ({cached["measured"]})')
  else:
    for b in backbones:
      for s in STRATEGIES:
        train[b, s], secs = step_flops(b, s)
        print(f'  {b} {s}: {train[b, s] / 1e9:.1f} GFLOP per step (compiled in {secs:.0f} s); '
              f'load {load()}', flush=True)
      evals[b] = eval_flops_per_clip(b)
      print(f'  {b} eval: {evals[b] / 1e9:.2f} GFLOP per clip ({CROPS} crops)', flush=True)
    if args.cache:
      with open(args.cache, 'w') as f:
        json.dump(dict(train={'/'.join(k): v for k, v in train.items()}, eval=evals,
                       measured=f'jax {jax.__version__} {jax.default_backend()} compile, '
                       f'{time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}'), f, indent=1)

  print()
  print(f'| backbone | GFLOP / train step ({", ".join(STRATEGIES)}) | GFLOP / test clip '
        f'({CROPS} crops) |')
  print('|---|---|---|')
  for b in backbones:
    print(f'| {b} | {" / ".join(f"{train[b, s] / 1e9:.1f}" for s in STRATEGIES)} | '
          f'{evals[b] / 1e9:.2f} |')

  total = dict(train=0.0, eval=0.0, steps=0, runs=0)
  per_row = {}
  print()
  print('| row | dataset | strategy | epochs | steps / run | PFLOP / run (train + eval) | folds | '
        'PFLOP (all folds) |')
  print('|---|---|---|---|---|---|---|---|')
  for row in ROWS:
    b = backbone_of(row)
    for dataset, (folds, train_clips, test_clips) in DATASETS.items():
      for s in STRATEGIES:
        epochs = run_epochs(b, dataset, s)
        n_steps = epochs * (train_clips // BATCH)
        n_evals = epochs // EVAL_EVERY + (1 if epochs % EVAL_EVERY else 0)
        f_train = n_steps * train[b, s]
        f_eval = n_evals * test_clips * evals[b]
        print(f'| {row} | {dataset} | {s} | {epochs} | {n_steps} | {f_train / 1e15:.1f} + '
              f'{f_eval / 1e15:.2f} | {folds} | {folds * (f_train + f_eval) / 1e15:.0f} |')
        total['train'] += folds * f_train
        total['eval'] += folds * f_eval
        total['steps'] += folds * n_steps
        total['runs'] += folds
        per_row[row] = per_row.get(row, 0.0) + folds * (f_train + f_eval)
  flops = total['train'] + total['eval']
  seconds = args.hours * 3600
  need = flops / seconds / 1e12
  print()
  print(f'Table 1: {total["runs"]} runs, {total["steps"]:,} train steps of {BATCH} '
        f'({total["steps"] * BATCH:,} examples); {total["train"] / 1e18:.2f} EFLOP train + '
        f'{total["eval"] / 1e18:.3f} EFLOP eval = {flops / 1e18:.2f} EFLOP.')
  print('Per row (EFLOP): ' + ', '.join(f'{r} {v / 1e18:.2f}' for r, v in per_row.items()))
  print()
  print(f'At that rate ({need:.0f} TFLOP/s) each backbone consumes (InterMix step FLOPs):')
  print()
  print('| backbone | GFLOP per example (train) | examples/s | steps/s | share of the table\'s FLOPs |')
  print('|---|---|---|---|---|')
  for b in backbones:
    per_example = train[b, 'intermix'] / BATCH
    share = sum(v for r, v in per_row.items() if backbone_of(r) == b) / flops
    print(f'| {b} | {per_example / 1e9:.2f} | {need * 1e12 / per_example:,.0f} | '
          f'{need * 1e12 / train[b, "intermix"]:,.0f} | {100 * share:.1f} % |')
  print()
  print(f'In {args.hours:g} h on one device: {need:.0f} TFLOP/s sustained, '
        f'{total["steps"] / seconds:.1f} train steps/s ({total["steps"] * BATCH / seconds:.0f} '
        f'examples/s) on average; as MFU: '
        + ', '.join(f'{100 * need / peak:.0f} % of the {name} peak {peak:g} TFLOP/s'
                    for name, peak in peaks.items()))


if __name__ == '__main__':
  main()
