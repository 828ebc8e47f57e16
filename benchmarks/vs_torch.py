"""JAX vs PyTorch train step of EnvNet and EnvNet-v2, side by side in one run, on this CPU.

    .venv/bin/python benchmarks/vs_torch.py                                  # envnetv2, envnet; batch 32
    .venv/bin/python benchmarks/vs_torch.py --models envnet --batches 8,32 --rounds 3 --repeats 2
    .venv/bin/python benchmarks/vs_torch.py --torch_python /path/to/python --torch_script ref.py

The JAX step is the trainer's own: `steps.make_train_step` + `steps.jit_train_step` with the
'standard' strategy (soft-label cross-entropy of one-hot targets), forward + backward + optax SGD
(Nesterov momentum 0.9, coupled weight decay 5e-4, LR 0.01), BatchNorm statistics updated, dropout on,
the non-finite guard included; models from `models.get_model` (on the CPU backend its convolutions
and pools run as `models.cpu_ops` rewrites).
The PyTorch step is ../shared/bench/torch_reference.py beside the repository ($INTERMIX_SHARED/bench/
when set; same architecture, optimiser and soft-label loss), run as a SUBPROCESS in a separate
environment, ../torchvenv/bin/python by default ($INTERMIX_TORCH_PYTHON; torch is never a dependency
of this package),
with `--json` for each layout (channels_last, torch's fastest CPU layout, and default).

Rounds alternate: JAX `--repeats` timed steps, then one torch subprocess per layout with
`--repeats` timed steps (after its own two warm-up steps), so machine load hits both alike. The table
gives, per (model, batch, framework/layout): median and min step time over all rounds, the ratio of
medians to JAX (> 1: slower than JAX), the first step (JAX: trace + XLA compile + one step; torch: its first call),
the model's GFLOPs (XLA cost analysis of the same step with plain convolutions: the CPU rewrites
compute some weight gradients by FFT, which XLA counts differently; used for the achieved GFLOP/s of
every row: same maths) and the model FLOP utilisation = achieved GFLOP/s / measured float32 matmul
GFLOP/s (a 4096^3 `jnp.dot`, best of a few, measured at the start and the end; the better is used).
By default the run calls `intermix_jax.host_memory.reuse_freed_memory()` first, as
`intermix_jax.main` does (`--no-reuse_host_memory` measures without it). Load averages are printed before and after every measurement.
Timings on a shared 2-core machine are noisy: compare rows of one run only.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import optax

from intermix_jax import host_memory, mixing, models, steps
from intermix_jax.models import cpu_ops
from machine import cpu_name, flops_of, load, matmul_rate

# Beside the repository by default (../torchvenv, ../shared), or from the environment / the flags.
_OUTSIDE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED_DIR = os.environ.get('INTERMIX_SHARED', os.path.join(_OUTSIDE, 'shared'))
TORCH_PYTHON = os.environ.get('INTERMIX_TORCH_PYTHON',
                              os.path.join(_OUTSIDE, 'torchvenv', 'bin', 'python'))
TORCH_SCRIPT = os.path.join(SHARED_DIR, 'bench', 'torch_reference.py')


class JaxStep:
  """The trainer's jitted train step of one (model, batch), compiled once; `run(k)` times k steps."""

  def __init__(self, name: str, batch: int, num_classes: int = 50):
    self.model = models.get_model(name, num_classes)
    strategy = mixing.get_strategy('standard')
    opt = ml_collections.ConfigDict(dict(momentum=0.9, nesterov=True, weight_decay=5e-4))
    tx = steps.make_optimizer(opt, optax.constant_schedule(0.01))
    make = lambda model: steps.jit_train_step(steps.make_train_step(model, strategy, tx, num_classes))
    self.step = make(self.model)
    self.state = steps.init_state(self.model, tx, jax.random.key(0), self.model.input_length)
    x = 0.1 * jax.random.normal(jax.random.key(1), (batch, self.model.input_length), jnp.float32)
    y = jnp.arange(batch, dtype=jnp.int32) % num_classes
    self.batch = dict(x=x, y=y)
    self.key = jax.random.key(2)
    # The model's FLOPs: the same step with plain convolutions (the CPU rewrites compute some
    # weight gradients by FFT, which XLA counts differently); every row's GFLOP/s and MFU use it.
    with cpu_ops.force('plain'):
      plain = make(self.model)
      self.gflops = flops_of(plain.lower(self.state, self.batch, self.key)) / 1e9
    start = time.perf_counter()
    self.compiled = self.step.lower(self.state, self.batch, self.key).compile()
    self.compile_s = time.perf_counter() - start  # trace + lower + XLA compile
    self.compiled_gflops = flops_of(self.compiled) / 1e9
    self.first_s = self.compile_s + self._one()  # what the first call of the jitted step costs
    self.params = sum(p.size for p in jax.tree.leaves(self.state.params))
    self._one()  # second warm-up step, as the torch script does

  def _one(self) -> float:
    start = time.perf_counter()
    self.state, metrics = self.compiled(self.state, self.batch, self.key)
    jax.block_until_ready(metrics)
    return time.perf_counter() - start

  def run(self, repeats: int) -> list[float]:
    return [self._one() for _ in range(repeats)]


def torch_round(python: str, script: str, name: str, batch: int, layout: str, repeats: int) -> dict:
  """One torch_reference.py subprocess; its JSON row (median_ms, min_ms, first_step_s, ...)."""
  cmd = [python, script, '--model', name, '--batch', str(batch), '--layout', layout,
         '--repeats', str(repeats), '--json']
  out = subprocess.run(cmd, capture_output=True, text=True, check=False)
  if out.returncode != 0:
    raise RuntimeError(f'vs_torch: {" ".join(cmd)} failed:\n{out.stderr[-2000:]}')
  rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith('{')]
  if len(rows) != 1:
    raise RuntimeError(f'vs_torch: expected one JSON row from {script}, got {out.stdout!r}')
  return rows[0]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--models', default='envnetv2,envnet', help='comma-separated: envnet, envnetv2')
  parser.add_argument('--batches', default='32', help='comma-separated batch sizes')
  parser.add_argument('--layouts', default='channels_last,default', help='torch memory layouts')
  parser.add_argument('--rounds', type=int, default=3, help='alternating JAX / torch rounds')
  parser.add_argument('--repeats', type=int, default=2, help='timed steps per round and framework')
  parser.add_argument('--torch_python', default=TORCH_PYTHON)
  parser.add_argument('--torch_script', default=TORCH_SCRIPT)
  parser.add_argument('--reuse_host_memory', action=argparse.BooleanOptionalAction, default=True,
                      help='intermix_jax.host_memory.reuse_freed_memory(), as intermix_jax.main does')
  args = parser.parse_args(argv)
  reused = args.reuse_host_memory and host_memory.reuse_freed_memory()  # before JAX's threads
  for path in (args.torch_python, args.torch_script):
    if not os.path.exists(path):
      sys.exit(f'vs_torch: {path} not found (set --torch_python / --torch_script)')
  names = args.models.split(',')
  batches = [int(b) for b in args.batches.split(',')]
  layouts = args.layouts.split(',')

  torch_version = subprocess.run(
      [args.torch_python, '-c', 'import torch; print(torch.__version__, torch.get_num_threads())'],
      capture_output=True, text=True, check=True).stdout.split()
  print(f'# command: {" ".join([os.path.basename(sys.executable)] + sys.argv)}')
  print(f'# machine: {cpu_name()}, {os.cpu_count()} cores; jax {jax.__version__} '
        f'(backend {jax.default_backend()}, XLA_FLAGS={os.environ.get("XLA_FLAGS", "")!r}); '
        f'torch {torch_version[0]} ({torch_version[1]} threads) via {args.torch_python}; '
        f'host_memory.reuse_freed_memory: {reused}')
  print(f'# load average at start: {load()}', flush=True)
  peak = matmul_rate()
  print(f'# float32 matmul 4096^3 (jnp.dot): {peak:.1f} GFLOP/s (best of 3); load {load()}',
        flush=True)

  results = []
  for name in names:
    for batch in batches:
      load_before = load()
      jax_step = JaxStep(name, batch)
      print(f'## {name} batch {batch}: JAX first step {jax_step.first_s:.1f} s, '
            f'{jax_step.gflops:.1f} GFLOP/step (XLA, plain convolutions; the compiled step: '
            f'{jax_step.compiled_gflops:.1f}), {jax_step.params / 1e6:.1f} M params; '
            f'load {load_before}', flush=True)
      times = {'jax': []}
      firsts = {'jax': jax_step.first_s}
      for layout in layouts:
        times[f'torch {layout}'], firsts[f'torch {layout}'] = [], []
      for r in range(args.rounds):
        jt = jax_step.run(args.repeats)
        times['jax'] += jt
        line = f'  round {r + 1}: jax {" ".join(f"{t:.2f}" for t in jt)} s'
        for layout in layouts:
          row = torch_round(args.torch_python, args.torch_script, name, batch, layout, args.repeats)
          # the script reports only median and min of its repeats: keep both as samples
          times[f'torch {layout}'] += [row['median_ms'] / 1e3, row['min_ms'] / 1e3]
          firsts[f'torch {layout}'].append(row['first_step_s'])
          line += f' | torch {layout} median {row["median_ms"] / 1e3:.2f} min {row["min_ms"] / 1e3:.2f} s'
        print(line + f'; load {load()}', flush=True)
      jax_median = statistics.median(times['jax'])
      for fw, ts in times.items():
        median = statistics.median(ts)
        first = firsts[fw] if fw == 'jax' else statistics.median(firsts[fw])
        results.append(dict(model=name, batch=batch, fw=fw, median_s=median, min_s=min(ts),
                            ratio=median / jax_median, first_s=first, gflops=jax_step.gflops,
                            gflops_per_s=jax_step.gflops / median,
                            load=f'{load_before} -> {load()}'))
      del jax_step

  end_peak = matmul_rate()
  print(f'# float32 matmul again at the end: {end_peak:.1f} GFLOP/s; MFU uses the better of the two')
  peak = max(peak, end_peak)
  for r in results:
    r['mfu'] = r['gflops_per_s'] / peak
  print()
  print(f'{"model":9s} {"batch":>5s} {"framework":21s} {"median s":>8s} {"min s":>7s} '
        f'{"/jax":>5s} {"first s":>7s} {"GFLOP":>7s} {"GFLOP/s":>7s} {"MFU":>5s}  load (1/5/15 min)')
  for r in results:
    print(f'{r["model"]:9s} {r["batch"]:5d} {r["fw"]:21s} {r["median_s"]:8.2f} {r["min_s"]:7.2f} '
          f'{r["ratio"]:5.2f} {r["first_s"]:7.1f} {r["gflops"]:7.1f} {r["gflops_per_s"]:7.1f} '
          f'{100 * r["mfu"]:4.0f}%  {r["load"]}')
  print(f'# matmul peak {peak:.1f} GFLOP/s; MFU = XLA GFLOP per JAX step / median step / peak '
        f'(torch rows: same FLOPs, their time); /jax = median / JAX median; load at end {load()}')
  return results


if __name__ == '__main__':
  main()
