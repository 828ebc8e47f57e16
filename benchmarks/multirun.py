"""Runs in one program: examples/s of K runs trained by ONE vmapped step vs one run alone.

    .venv/bin/python benchmarks/multirun.py                                   # CPU sizes, see below
    .venv/bin/python benchmarks/multirun.py --backbones piczakcnn,envnetv2 --ks 1,2,5,10,20 \\
        --batch 64 --width 1 --fc_units 0 --repeats 10 --methods vmap         # an accelerator
    .venv/bin/python benchmarks/multirun.py --out rows.jsonl ...              # rows as JSON lines too

For each backbone and strategy: the trainer's one-run step (`steps.mesh_train_step`, what
train.py runs for one fold) and the K-run step (`multirun.multi_train_step`, what train.py runs
for fold=all with config.stack_runs=True) of each method of --methods ('vmap': one vmapped step;
'unroll': the one-run step K times in one program) for every K of --ks, on a 1-device mesh, the state
donated, the batch already on the device (one distinct random batch per run: this measures the
step, not the input pipeline). Times: `--repeats` steps dispatched back to back (as the trainer
does between two log steps) after two warm-up steps; examples/s = K x batch / step time; "x one
run" = that rate over the one-run step's. Memory: the compiled step's arguments + outputs +
temporaries (XLA's memory analysis). Optimiser and schedule: the paper's (Nesterov 0.9, L2 5e-4,
LR 0.01 decayed at 0.5 / 0.75 of 1200 epochs). Strategy options at their defaults.

`--data device` measures the whole path of config.data_on_device instead: 400 synthetic 5 s int16
clips (white noise) in one table on the device, each run's TrainLoader (its own seed, strong
augmentation, pairs for mixing) drawing a crop plan on the host every step, the crops cut inside
the step (`on_device.DeviceInputs.fuse`); a new plan per timed step, so the host's share counts.
XLA memory is not reported there.

Defaults are sized for this project's 2-core CPU (PiczakCNN and EnvNet at width 0.25, fc 64,
batch 16): a full-width K=20 step there would take minutes and tens of GiB. benchmarks/README.md
has the measured tables, with machine, command and load.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for p in (HERE, ROOT):
  if p not in sys.path:
    sys.path.insert(0, p)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from intermix_jax import config_lib, mixing, models, multirun, parallel, steps  # noqa: E402
import machine  # noqa: E402  (benchmarks/machine.py)


# The paper's optimiser and schedule (module docstring), for every row.
PAPER_OPT = steps.OptimizerSpec(lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4,
                                num_epochs=1200, steps_per_epoch=25, schedule=(0.5, 0.75),
                                warmup_epochs=0)


def _model_and_strategy(backbone, strategy_name, width, fc_units, precision, num_classes):
  options = dict(width=width, precision=precision)
  if fc_units:
    options['fc_units'] = fc_units
  model = models.get_model(backbone, num_classes, **options)
  base = config_lib.base_config().mixing
  strategy = mixing.get_strategy(
      strategy_name, **{k: base[k] for k in mixing.strategy_options(strategy_name)})
  return model, strategy


def _cost(compiled) -> dict:
  """XLA's cost analysis of the compiled step on this backend: FLOPs and bytes accessed (None where
  the backend does not say, or `compiled` is None)."""
  try:
    cost = machine.cost_of(compiled) if compiled is not None else {}
  except Exception:  # pylint: disable=broad-except
    cost = {}
  return dict(xla_flops=cost.get('flops'), xla_bytes_accessed=cost.get('bytes accessed'))


def _profile(compiled, state, data, key, steps_n, out_dir, meta):
  """Trace `steps_n` more steps into out_dir (JAX profiler, with a Perfetto JSON trace that
  `profile_step.py kernels` reads without xprof) beside the compiled HLO and `meta`."""
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, 'step.hlo.txt'), 'w') as f:
    f.write(compiled.as_text())
  with jax.profiler.trace(out_dir, create_perfetto_trace=True):
    for _ in range(steps_n):
      state, metrics = compiled(state, data, key)
    jax.block_until_ready((state, metrics))
  with open(os.path.join(out_dir, 'meta.json'), 'w') as f:
    json.dump(dict(meta, steps=steps_n), f)


def _plan_bytes(compiled):
  try:
    m = compiled.memory_analysis()
    return (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
            - m.alias_size_in_bytes)
  except Exception:  # pylint: disable=broad-except
    return None


def _time(compiled, state, data, key, repeats):
  for _ in range(2):
    state, metrics = compiled(state, data, key)
  jax.block_until_ready((state, metrics))
  start = time.perf_counter()
  for _ in range(repeats):
    state, metrics = compiled(state, data, key)
  jax.block_until_ready((state, metrics))
  seconds = (time.perf_counter() - start) / repeats
  loss = np.asarray(jax.device_get(metrics['loss']))
  return seconds, bool(np.isfinite(loss).all()), state


class _Clips:
  """A tfds-like source of `n` white-noise int16 clips (labels i % num_classes)."""

  def __init__(self, n, length, num_classes):
    self.n, self.length, self.num_classes = n, length, num_classes

  def __len__(self):
    return self.n

  def __getitems__(self, keys):
    return [dict(audio=np.random.default_rng(i).integers(-3000, 3000, self.length, np.int16),
                 label=i % self.num_classes, filename=f'clip{i:05d}') for i in keys]


def _device_data(model, strategy, step, k, batch, num_classes, mesh):
  """(fused step, iterator of placed plans): config.data_on_device for k runs (None: one)."""
  from intermix_jax.data import on_device, pipeline  # pylint: disable=g-import-not-at-top
  index = pipeline.ClipIndex([_Clips(400, 5 * model.sample_rate, num_classes)])
  loaders = [pipeline.TrainLoader(index, input_length=model.input_length, batch_size=batch,
                                  seed=s, pairs=strategy.mixes, strong_augment=True,
                                  num_threads=0) for s in range(k or 1)]
  inputs = on_device.device_inputs(loaders, mesh, pairs=strategy.mixes, stacked=k is not None)
  plans = (inputs.plan(e, s) for e in itertools.count() for s in range(inputs.steps_per_epoch))
  return inputs.fuse(step), plans


def _time_device(fused, state, plans, key, repeats):
  start = time.perf_counter()
  for _ in range(2):
    state, metrics = fused(state, next(plans), key)
  jax.block_until_ready((state, metrics))
  compile_s = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(repeats):
    state, metrics = fused(state, next(plans), key)
  jax.block_until_ready((state, metrics))
  seconds = (time.perf_counter() - start) / repeats
  return compile_s, seconds, bool(np.isfinite(np.asarray(jax.device_get(metrics['loss']))).all())


def bench(backbone: str, strategy_name: str, k: int | None, *, batch: int, repeats: int,
          width: float, fc_units: int | None, precision: str = 'float32',
          num_classes: int = 50, method: str = 'vmap', data_mode: str = 'batch',
          profile_dir: str | None = None, profile_steps: int = 3) -> dict:
  """One row: the one-run step (k None) or the K-run step; step seconds, examples/s, memory, XLA's
  cost analysis (`data_mode` 'device': the data_on_device path, module docstring). `profile_dir`:
  then trace `profile_steps` more steps into profile_dir/<backbone>_<strategy>_<runs>_<method>_
  <precision>_b<batch> (batch mode only)."""
  model, strategy = _model_and_strategy(backbone, strategy_name, width, fc_units, precision,
                                        num_classes)
  opt = PAPER_OPT
  mesh = parallel.make_mesh(1)
  rng = np.random.default_rng(0)
  runs = 1 if k is None else k
  x = (0.1 * rng.standard_normal((runs, batch, model.input_length))).astype(np.float32)
  y = np.broadcast_to(np.arange(batch) % num_classes, (runs, batch)).astype(np.int32)
  start = time.perf_counter()
  if k is None:
    step = steps.mesh_train_step(model, strategy, opt, num_classes, mesh)
    state = steps.state_initializer(model, opt, mesh)(jax.random.key(1))
    data = parallel.host_batch_to_global(dict(x=x[0], y=y[0]), mesh, pairs=strategy.mixes)
    key = parallel.replicate(jax.random.key(0), mesh)
  else:
    step = multirun.multi_train_step(model, strategy, opt, num_classes, mesh, method=method)
    state = multirun.init_states(model, opt, mesh, list(jax.random.split(jax.random.key(1), k)))
    data = multirun.host_batches_to_global(dict(x=x, y=y), mesh, pairs=strategy.mixes)
    key = multirun.replicate_runs(jax.random.split(jax.random.key(0), k), mesh)
  if data_mode == 'device':
    compiled = plan = None
    fused, plans = _device_data(model, strategy, step, k, batch, num_classes, mesh)
    compile_s, seconds, finite = _time_device(fused, state, plans, key, repeats)
    cost = _cost(None)  # the fused device-data step is not compiled here as one program
  else:
    compiled = step.lower(state, data, key).compile()
    compile_s = time.perf_counter() - start
    seconds, finite, state = _time(compiled, state, data, key, repeats)  # the state is donated
    plan = _plan_bytes(compiled)
    cost = _cost(compiled)
    if profile_dir:
      tag = (f'{backbone}_{strategy_name}_{"alone" if k is None else k}_{method if k else "one"}_'
             f'{precision}_b{batch}')
      _profile(compiled, state, data, key, profile_steps, os.path.join(profile_dir, tag),
               dict(backbone=backbone, strategy=strategy_name, runs=k, method=method,
                    precision=precision, batch=batch, step_s=seconds))
  # One process measures dozens of programs: drop each before the next (XLA's CPU backend ran out
  # of memory for code at the 23rd otherwise).
  del compiled, step, state, data
  multirun._JITTED.clear()  # pylint: disable=protected-access
  steps._JITTED.clear()  # pylint: disable=protected-access
  jax.clear_caches()
  return dict(backbone=backbone, strategy=strategy_name, runs=k,
              method=None if k is None else method, batch=batch, width=width,
              fc_units=fc_units, precision=precision, data=data_mode, compile_s=compile_s,
              step_s=seconds,
              examples_per_s=runs * batch / seconds, xla_bytes=plan, **cost,
              finite=finite, repeats=repeats, device=jax.local_devices()[0].device_kind,
              backend=jax.default_backend(), load=machine.load())


def table(rows: list[dict]) -> str:
  lines = ['| backbone | strategy | data | method | runs | step ms | examples/s | x one run | '
           'compile s | XLA MiB | precision | batch |', '|---|---|---|---|---|---|---|---|---|---|---|---|']
  group = lambda r: (r['backbone'], r['strategy'], r.get('data', 'batch'), r['precision'],
                     r['batch'])
  one = {group(r): r['examples_per_s'] for r in rows if r['runs'] is None}
  for r in rows:
    base = one.get(group(r))
    ratio = '' if base is None else f'{r["examples_per_s"] / base:.2f}'
    mib = '' if r['xla_bytes'] is None else f'{r["xla_bytes"] / 2**20:.0f}'
    lines.append(f'| {r["backbone"]} | {r["strategy"]} | {r.get("data", "batch")} | '
                 f'{r.get("method") or "-"} | '
                 f'{"one run alone" if r["runs"] is None else r["runs"]} | {1e3 * r["step_s"]:.1f} | '
                 f'{r["examples_per_s"]:.0f} | {ratio} | {r["compile_s"]:.1f} | {mib} | '
                 f'{r["precision"]} | {r["batch"]} |')
  return '\n'.join(lines)


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
                 help='also trace each row (batch mode) into DIR/<row> (profile_step.py kernels)')
  args = p.parse_args(argv)
  ks = [int(k) for k in args.ks.split(',') if k]
  print(f'# {machine.cpu_name()}; {jax.local_devices()[0].device_kind} ({jax.default_backend()}); '
        f'jax {jax.__version__}; batch {args.batch} per run, width {args.width}, fc_units '
        f'{args.fc_units or "published"}, {args.precision}, data: {args.data}; load before: '
        f'{machine.load()}',
        flush=True)
  rows = []
  for backbone in args.backbones.split(','):
    for strategy in args.strategies.split(','):
      todo = [(None, None)] + [(m, k) for m in args.methods.split(',') for k in ks]
      for method, k in todo:
        row = bench(backbone, strategy, k, batch=args.batch, repeats=args.repeats,
                    width=args.width, fc_units=args.fc_units or None, precision=args.precision,
                    method=method, data_mode=args.data, profile_dir=args.profile)
        rows.append(row)
        print(f'  {backbone} {strategy} {method or ""} runs={k or "alone"}: '
              f'{1e3 * row["step_s"]:.1f} ms, '
              f'{row["examples_per_s"]:.0f} ex/s, load {row["load"]}', flush=True)
        if args.out:
          with open(args.out, 'a') as f:
            f.write(json.dumps(row) + '\n')
  print(table(rows))
  print(f'# load after: {machine.load()}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
