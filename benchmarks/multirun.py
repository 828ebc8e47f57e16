"""Runs in one program: examples/s of K runs trained by ONE step vs one run alone.

    python -m benchmarks.multirun                                    # CPU sizes, see below
    python -m benchmarks.multirun --backbones piczakcnn,envnetv2 --ks 1,2,5,10,20 \\
        --batch 64 --width 1 --fc_units 0 --repeats 10 --methods vmap      # an accelerator
    python -m benchmarks.multirun --out rows.jsonl ...               # rows as JSON lines too

Per backbone and strategy: the one-run step (one fold) and the K-run step (fold=all with
config.stack_runs=True) of each of --methods ('vmap': one vmapped step; 'unroll': the one-run step
K times in one program) for every K of --ks (`harness.build`: a distinct random batch per run
already on the device: the step, not the input pipeline). `--repeats` steps back to back after two
warm-up steps; examples/s = K x batch / step time; "x one run" = that over the one-run step's;
memory: XLA's buffer plan. `--data device`: the whole path of config.data_on_device instead (400
synthetic 5 s clips in one table on the device, each run's TrainLoader drawing a crop plan on the
host every step, strong augmentation, the crops cut inside the step: the host's share counts).
Defaults are sized for a 2-core CPU (PiczakCNN and EnvNet at width 0.25, fc 64, batch 16).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time

import jax
import numpy as np

from benchmarks import harness


def _profile(compiled, step, steps_n, out_dir, meta):
  """Trace `steps_n` more steps into out_dir (JAX profiler, with a Perfetto JSON trace that
  `profile_step kernels` reads without xprof) beside the compiled HLO and `meta`."""
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, 'step.hlo.txt'), 'w') as f:
    f.write(compiled.as_text())
  with jax.profiler.trace(out_dir, create_perfetto_trace=True):
    harness.loop_seconds(step, steps_n, compiled)
  with open(os.path.join(out_dir, 'meta.json'), 'w') as f:
    json.dump(dict(meta, steps=steps_n), f)


class _Clips:
  """A tfds-like source of `n` white-noise int16 clips (labels i % num_classes)."""

  def __init__(self, n, length, num_classes):
    self.n, self.length, self.num_classes = n, length, num_classes

  def __len__(self):
    return self.n

  def __getitems__(self, keys):
    return [dict(audio=np.random.default_rng(i).integers(-3000, 3000, self.length, np.int16),
                 label=i % self.num_classes, filename=f'clip{i:05d}') for i in keys]


def _time_device(step, k, batch, num_classes, repeats):
  """(compile s, step s, finite) of config.data_on_device's fused step for k runs (None: one)."""
  from intermix_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  model, strategy = step.model, step.strategy
  index = pipeline.ClipIndex([_Clips(400, 5 * model.sample_rate, num_classes)])
  loaders = [pipeline.TrainLoader(index, input_length=model.input_length, batch_size=batch,
                                  seed=s, pairs=strategy.mixes, strong_augment=True,
                                  num_threads=0) for s in range(k or 1)]
  inputs = harness.device_inputs(loaders, step.mesh, strategy.mixes, k is not None)
  plans = (inputs.plan(e, s) for e in itertools.count() for s in range(inputs.steps_per_epoch))
  fused, state, seconds = inputs.fuse(step.fn), step.state, []
  for n in (2, repeats):  # warm-up (and compile), then timed
    start = time.perf_counter()
    for _ in range(n):
      state, metrics = fused(state, next(plans), step.key)
    jax.block_until_ready((state, metrics))
    seconds.append(time.perf_counter() - start)
  return seconds[0], seconds[1] / repeats, harness.finite(metrics)


def bench(backbone: str, strategy: str, k: int | None, *, batch: int, repeats: int,
          width: float, fc_units: int | None, precision: str = 'float32',
          num_classes: int = 50, method: str = 'vmap', data_mode: str = 'batch',
          profile_dir: str | None = None, profile_steps: int = 3) -> dict:
  """One row: the one-run step (k None) or the K-run step; step seconds, examples/s, memory, XLA's
  cost analysis (`data_mode` 'device': the data_on_device path). `profile_dir`: then trace
  `profile_steps` more steps into profile_dir/<backbone>_<strategy>_<runs>_<method>_<precision>_
  b<batch> (batch mode only)."""
  start = time.perf_counter()
  step = harness.build(backbone, strategy, k, batch=batch, method=method, width=width,
                       fc_units=fc_units, precision=precision, num_classes=num_classes)
  plan, cost = None, {}
  if data_mode == 'device':
    compile_s, seconds, finite = _time_device(step, k, batch, num_classes, repeats)
  else:
    compiled = step.lower().compile()
    compile_s = time.perf_counter() - start
    harness.loop_seconds(step, 2, compiled)
    seconds, metrics = harness.loop_seconds(step, repeats, compiled)
    finite, plan = harness.finite(metrics), harness.memory_bytes(compiled)
    cost = harness.cost_of(compiled)
    if profile_dir:
      tag = (f'{backbone}_{strategy}_{"alone" if k is None else k}_{method if k else "one"}_'
             f'{precision}_b{batch}')
      _profile(compiled, step, profile_steps, os.path.join(profile_dir, tag),
               dict(backbone=backbone, strategy=strategy, runs=k, method=method,
                    precision=precision, batch=batch, step_s=seconds))
    del compiled
  del step
  harness.clear()
  return dict(backbone=backbone, strategy=strategy, runs=k, method=None if k is None else method,
              batch=batch, width=width, fc_units=fc_units, precision=precision, data=data_mode,
              compile_s=compile_s, step_s=seconds, examples_per_s=(k or 1) * batch / seconds,
              xla_bytes=plan, xla_flops=cost.get('flops'),
              xla_bytes_accessed=cost.get('bytes accessed'), finite=finite, repeats=repeats,
              device=jax.local_devices()[0].device_kind, backend=jax.default_backend(),
              load=harness.load())


def table(rows: list[dict]) -> str:
  group = lambda r: (r['backbone'], r['strategy'], r.get('data', 'batch'), r['precision'],
                     r['batch'])
  one = {group(r): r['examples_per_s'] for r in rows if r['runs'] is None}
  return harness.md_table(
      ['backbone', 'strategy', 'data', 'method', 'runs', 'step ms', 'examples/s', 'x one run',
       'compile s', 'XLA MiB', 'precision', 'batch'],
      [[r['backbone'], r['strategy'], r.get('data', 'batch'), r.get('method') or '-',
        'one run alone' if r['runs'] is None else r['runs'], f'{1e3 * r["step_s"]:.1f}',
        f'{r["examples_per_s"]:.0f}',
        '' if group(r) not in one else f'{r["examples_per_s"] / one[group(r)]:.2f}',
        f'{r["compile_s"]:.1f}', '' if r['xla_bytes'] is None else f'{r["xla_bytes"] / 2**20:.0f}',
        r['precision'], r['batch']] for r in rows])


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--backbones', default='piczakcnn,envnet')
  p.add_argument('--strategies', default='intermix,standard')
  p.add_argument('--ks', default='1,2,5,10,20')
  p.add_argument('--methods', default='vmap,unroll', help='of multirun.METHODS')
  p.add_argument('--batch', type=int, default=16)
  p.add_argument('--width', type=float, default=0.25)
  p.add_argument('--fc_units', type=int, default=64, help='0: the published size')
  p.add_argument('--precision', default='float32', choices=('float32', 'bfloat16'))
  p.add_argument('--repeats', type=int, default=5)
  p.add_argument('--out', default=None, help='also append each row to this JSON-lines file')
  p.add_argument('--data', default='batch', choices=('batch', 'device'),
                 help="'batch': one fixed batch on the device; 'device': data_on_device's path")
  p.add_argument('--profile', default=None, metavar='DIR',
                 help='also trace each row (batch mode) into DIR/<row> (profile_step kernels)')
  args = p.parse_args(argv)
  ks = [int(k) for k in args.ks.split(',') if k]
  print(f'# {harness.machine()}; batch {args.batch} per run, width {args.width}, fc_units '
        f'{args.fc_units or "published"}, {args.precision}, data: {args.data}', flush=True)
  rows = []
  for backbone in args.backbones.split(','):
    for strategy in args.strategies.split(','):
      for method, k in [(None, None)] + [(m, k) for m in args.methods.split(',') for k in ks]:
        row = bench(backbone, strategy, k, batch=args.batch, repeats=args.repeats,
                    width=args.width, fc_units=args.fc_units or None, precision=args.precision,
                    method=method or 'vmap', data_mode=args.data, profile_dir=args.profile)
        rows.append(row)
        print(f'  {backbone} {strategy} {method or ""} runs={k or "alone"}: '
              f'{1e3 * row["step_s"]:.1f} ms, {row["examples_per_s"]:.0f} ex/s, load {row["load"]}',
              flush=True)
        if args.out:
          with open(args.out, 'a') as f:
            f.write(json.dumps(row) + '\n')
  print(table(rows))
  print(f'# load after: {harness.load()}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
