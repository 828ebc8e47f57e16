"""Train-step benchmark of the mixing strategies: overhead, compile count and time, peak memory.

    python -m benchmarks.steps                          # envnet, piczakcnn; batch 32; + memory
    python -m benchmarks.steps --backbones envnet --rounds 3 --repeats 2 --memory_epochs ''
    python -m benchmarks.steps --backbones '' --memory_epochs 1,3      # peak memory only
    python -m benchmarks.steps --backbones envnet --precision bfloat16 --memory_epochs ''

Part 1 (per backbone): the one-run step (`harness.build`) of each strategy of the paper's table 1,
published widths, `--precision`, host batches placed every step as the trainer places them;
rounds alternate between strategies. Per strategy: compiles (XLA compilations of the first call,
a SECOND call with a fresh state and another batch, as the next fold of fold=all, and the timed
steps: 1 = exactly one); compile s (trace + lower + compile of the first call); XLA GFLOP (of the
lowered HLO); median and min step time, overhead vs the standard step.

Part 2: peak memory of `python -m intermix_jax.main` on configs/demo.py (synthetic sounds, EnvNet
width 0.25, InterMix) for each of `--memory_epochs` (before doubling for mixing), as a child
process: peak RSS = VmHWM polled from /proc/<pid>/status every 0.2 s (not ru_maxrss: subprocess
starts the child with vfork, so that is max(parent's, child's)). Equal peaks for 1 and 3 epochs
show memory does not grow with the epochs.

Load averages are printed with every measurement; on this shared 2-core machine timings are noisy:
compare rows of one run.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import jax

from benchmarks import harness
from benchmarks.harness import load
from intermix_jax import host_memory
from intermix_jax.report import paper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The paper's strategies (table 1's columns, in its order; 'standard' is the baseline).
STRATEGIES = tuple(dict.fromkeys(s for cells in paper.PAPER_TABLE1.values() for s in cells))
COMPILE_EVENTS = ('/jax/core/compile/jaxpr_trace_duration',  # trace, lower, XLA compile
                  '/jax/core/compile/jaxpr_to_mlir_module_duration',
                  '/jax/core/compile/backend_compile_duration')


class CompileLog:
  """XLA compilations and trace + lower + compile seconds (a jax.monitoring listener)."""

  def __init__(self):
    self.compiles, self.secs = 0, 0.0
    jax.monitoring.register_event_duration_secs_listener(self)

  def __call__(self, event, duration_secs, **kwargs):
    if event in COMPILE_EVENTS:
      self.secs += duration_secs
      self.compiles += event == COMPILE_EVENTS[-1]


class StrategyStep:
  """The trainer's one-run step of one (backbone, strategy, batch): first call, re-use, timed."""

  def __init__(self, backbone: str, strategy: str, batch: int, log: CompileLog,
               num_classes: int = 50, precision: str = 'float32'):
    self.step = harness.build(backbone, strategy, batch=batch, precision=precision,
                              num_classes=num_classes)
    model, self.log = self.step.model, log
    self.batches = [harness.host_batch(model, batch, None, num_classes, seed) for seed in (0, 1)]
    fn, key = self.step.fn, self.step.key
    cache0 = fn._cache_size()  # pylint: disable=protected-access
    compiles0, secs0 = log.compiles, log.secs
    start = time.perf_counter()
    self.state, metrics = fn(self.step.state, self.place(0), key)
    jax.block_until_ready(metrics)
    self.first_s = time.perf_counter() - start
    self.compiles_first, self.compile_s = log.compiles - compiles0, log.secs - secs0
    self.cache_growth = fn._cache_size() - cache0  # pylint: disable=protected-access
    # the next fold of fold=all: a fresh state, another batch, same shapes: no new compile
    fresh, compiles0 = harness.init_state(model, self.step.mesh, seed=2), log.compiles
    jax.block_until_ready(fn(fresh, self.place(1), key))
    self.extra = log.compiles - compiles0  # step compiles after the first (must be 0)
    lowered = fn.lower(self.state, self.place(0), key)
    self.gflops = harness.cost_of(lowered).get('flops', float('nan')) / 1e9
    self.times = []

  def place(self, i: int) -> dict:
    """Host batch i as the trainer places it, every step."""
    return harness.place(self.batches[i], self.step.mesh, self.step.strategy)

  def run(self, repeats: int):
    compiles0 = self.log.compiles
    for i in range(repeats):
      start = time.perf_counter()
      self.state, metrics = self.step.fn(self.state, self.place(i % 2), self.step.key)
      jax.block_until_ready(metrics)
      self.times.append(time.perf_counter() - start)
    self.extra += self.log.compiles - compiles0


def bench_strategies(backbone: str, batch: int, rounds: int, repeats: int, log: CompileLog,
                     precision: str = 'float32'):
  print(f'## {backbone} batch {batch} {precision}: compiling {len(STRATEGIES)} strategies; '
        f'load {load()}', flush=True)
  runs = {}
  for s in STRATEGIES:
    runs[s] = StrategyStep(backbone, s, batch, log, precision=precision)
    print(f'  {s}: first call {runs[s].first_s:.1f} s (compile events {runs[s].compiles_first}, '
          f'jit cache +{runs[s].cache_growth}); load {load()}', flush=True)
  for r in range(rounds):
    for s in STRATEGIES:
      runs[s].run(repeats)
    print(f'  round {r + 1}: ' + ', '.join(
        f'{s} {" ".join(f"{t:.2f}" for t in runs[s].times[-repeats:])}' for s in STRATEGIES)
        + f' s; load {load()}', flush=True)
  rows = []
  base_med = statistics.median(runs['standard'].times)
  base_min = min(runs['standard'].times)
  for s in STRATEGIES:
    run = runs[s]
    med, best = statistics.median(run.times), min(run.times)
    rows.append(dict(backbone=backbone, batch=batch, strategy=s, precision=precision,
                     compiles=run.compiles_first + run.extra, cache=run.cache_growth,
                     compile_s=run.compile_s, first_s=run.first_s, gflops=run.gflops,
                     median_s=med, min_s=best, over_med=100 * (med / base_med - 1),
                     over_min=100 * (best / base_min - 1), load=load()))
  return rows


def peak_memory(epochs: int, reuse_host_memory: bool = True) -> dict:
  """Peak RSS (MiB) of `python -m intermix_jax.main` on configs/demo.py for `epochs` epochs
  (with `--noreuse_host_memory` when `reuse_host_memory` is False)."""
  with tempfile.TemporaryDirectory() as workdir:
    cmd = [sys.executable, '-m', 'intermix_jax.main', '--config=configs/demo.py',
           f'--workdir={workdir}', f'--config.num_epochs={epochs}',
           '--config.eval_every_epochs=1000', f'--config.checkpoint_every_epochs={epochs * 2}']
    if not reuse_host_memory:
      cmd.append('--noreuse_host_memory')
    load_before, start, hwm_kib = load(), time.perf_counter(), 0
    with open(os.path.join(workdir, 'stderr.txt'), 'w+') as err:
      proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
      while proc.poll() is None:
        with contextlib.suppress(OSError), open(f'/proc/{proc.pid}/status') as f:
          hwm_kib = max([hwm_kib] + [int(k) for k in re.findall(r'VmHWM:\s+(\d+) kB', f.read())])
        time.sleep(0.2)
      wall = time.perf_counter() - start
      err.seek(0)
      if proc.returncode != 0:
        raise RuntimeError(f'steps: {" ".join(cmd)} failed ({proc.returncode}):\n'
                           f'{err.read()[-2000:]}')
  return dict(epochs=epochs, wall_s=wall,
              cmd=' '.join(['python'] + cmd[1:4] + ['--workdir=<tmp>'] + cmd[5:]),
              vmhwm_mib=hwm_kib / 1024,
              load=f'{load_before} -> {load()}')


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--backbones', default='envnet,piczakcnn', help='comma-separated ("" = none)')
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--precision', default='float32', choices=('float32', 'bfloat16'),
                      help="the model's compute precision (models.get_model option)")
  parser.add_argument('--rounds', type=int, default=2)
  parser.add_argument('--repeats', type=int, default=2, help='timed steps per round and strategy')
  parser.add_argument('--memory_epochs', default='1,3',
                      help='demo runs for peak memory, comma-separated epochs ("" = skip)')
  parser.add_argument('--reuse_host_memory', action=argparse.BooleanOptionalAction, default=True,
                      help='host_memory.reuse_freed_memory(), as intermix_jax.main does')
  args = parser.parse_args(argv)
  reused = args.reuse_host_memory and host_memory.reuse_freed_memory()  # before JAX's threads

  print(f'# command: {" ".join([os.path.basename(sys.executable)] + sys.argv)}')
  print(f'# machine: {harness.machine()}; XLA_FLAGS={os.environ.get("XLA_FLAGS", "")!r}',
        flush=True)
  print(f'# host_memory.reuse_freed_memory: {reused}')
  log = CompileLog()
  rows = []
  for backbone in filter(None, args.backbones.split(',')):
    rows += bench_strategies(backbone, args.batch, args.rounds, args.repeats, log, args.precision)
  if rows:
    print(harness.md_table(
        ['backbone', 'batch', 'precision', 'strategy', 'compiles', 'compile s', 'GFLOP',
         'median s', 'min s', 'over med', 'over min', 'load'],
        [[r['backbone'], r['batch'], r['precision'], r['strategy'], r['compiles'],
          f'{r["compile_s"]:.1f}', f'{r["gflops"]:.2f}', f'{r["median_s"]:.3f}',
          f'{r["min_s"]:.3f}', f'{r["over_med"]:+.1f}%', f'{r["over_min"]:+.1f}%', r['load']]
         for r in rows]))
    print('# compiles: XLA compilations of the step over first call + a fresh-state call + all '
          'timed steps (1 = exactly one); over: vs standard of the same backbone', flush=True)
  mem = []
  for epochs in filter(None, args.memory_epochs.split(',')):
    mem.append(peak_memory(int(epochs), args.reuse_host_memory))
    print(f'  demo {epochs} epoch(s): peak RSS (VmHWM) {mem[-1]["vmhwm_mib"]:.0f} MiB; '
          f'load {mem[-1]["load"]}', flush=True)
  if mem:
    print(harness.md_table(
        ['demo run', 'wall s', 'VmHWM MiB', 'load'],
        [[f'num_epochs={m["epochs"]} (x2 for mixing)', f'{m["wall_s"]:.1f}',
          f'{m["vmhwm_mib"]:.0f}', m['load']] for m in mem]))
    print(f'# command: {mem[0]["cmd"]} (num_epochs as above); VmHWM = the peak, polled every 0.2 s')
  return rows, mem


if __name__ == '__main__':
  main()
