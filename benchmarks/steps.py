"""Train-step benchmark of the mixing strategies: overhead, compile count and time, peak memory.

    python -m benchmarks.steps                          # envnet, piczakcnn; batch 32; + memory
    python -m benchmarks.steps --backbones envnet --rounds 3 --repeats 2 --memory_epochs ''
    python -m benchmarks.steps --backbones '' --memory_epochs 1,3      # peak memory only
    python -m benchmarks.steps --backbones envnet --precision bfloat16 --memory_epochs ''

Part 1 (per backbone): the trainer's step on one device (`harness.build`: `steps.mesh_train_step`,
what train.py runs: jitted once per model / strategy / OptimizerSpec / mesh, the strategy per
device through parallel.shard_strategy, state donated; the paper's Nesterov SGD and LR schedule),
for the strategies of the paper's table 1 (`report.paper.PAPER_TABLE1`'s columns:
standard, bc, speechmix, intermix; options at `config_lib.base_config()`'s defaults),
published widths, `--precision` (the model option: float32 or bfloat16 compute), host numpy
batches (N, T) whose rows 2k, 2k+1 are of different classes, placed on the mesh every step as the
trainer places them (parallel.host_batch_to_global). Rounds alternate between strategies (load
hits all alike). Reported per strategy:
  - compiles: XLA backend compilations during the first call (jax.monitoring event
    /jax/core/compile/backend_compile_duration) and the jit cache growth; then a SECOND run (fresh
    state from steps.state_initializer, another batch of the same shapes, as the next fold of
    fold=all) and the timed steps must add none ("exactly one" is checked: the column shows the total);
  - compile s: trace + lower + XLA compile time of that first call (from the monitoring events);
  - XLA GFLOP of the step (cost analysis of the lowered, unoptimised HLO: no second compile);
  - median and min step time over all rounds, and the overhead vs the standard step of the same
    backbone (median and min; the min is the less load-sensitive of the two).

Part 2: peak memory of a short real training run, `python -m intermix_jax.main` on configs/demo.py
(synthetic sounds, EnvNet width 0.25, InterMix) for each of `--memory_epochs` (epochs before
doubling for mixing), as a child process: peak RSS = VmHWM polled from /proc/<pid>/status every
0.2 s (the child's own high-water mark after exec). ru_maxrss from os.wait4 is printed too but is NOT
the child's: subprocess starts it with vfork, and exec keeps the larger of the old (here the
parent's) and the new high-water mark, so it shows max(parent's peak, child's peak). Equal peaks for 1 and 3 epochs show memory does not
grow with the epochs (no dataset copied per epoch).

Load averages are printed with every measurement; on this shared 2-core machine timings are noisy:
compare rows of one run.
"""
from __future__ import annotations

import argparse
import collections
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
from intermix_jax import host_memory, steps
from intermix_jax.report import paper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The paper's strategies (table 1's columns, in its order; 'standard' is the baseline).
STRATEGIES = tuple(dict.fromkeys(s for cells in paper.PAPER_TABLE1.values() for s in cells))
COMPILE_EVENTS = {
    '/jax/core/compile/jaxpr_trace_duration': 'trace',
    '/jax/core/compile/jaxpr_to_mlir_module_duration': 'lower',
    '/jax/core/compile/backend_compile_duration': 'compile',
}


class CompileLog:
  """Counts and times JAX compilation events (a jax.monitoring duration listener)."""

  def __init__(self):
    self.count = collections.Counter()
    self.secs = collections.Counter()
    jax.monitoring.register_event_duration_secs_listener(self)

  def __call__(self, event, duration_secs, **kwargs):
    if event in COMPILE_EVENTS:
      self.count[COMPILE_EVENTS[event]] += 1
      self.secs[COMPILE_EVENTS[event]] += duration_secs

  def snapshot(self):
    return collections.Counter(self.count), collections.Counter(self.secs)


class StrategyStep:
  """The trainer's step (steps.mesh_train_step on a 1-device mesh) of one (backbone, strategy,
  batch): first call, re-use, timed steps."""

  def __init__(self, backbone: str, strategy: str, batch: int, log: CompileLog,
               num_classes: int = 50, precision: str = 'float32'):
    self.step = harness.build(backbone, strategy, batch=batch, precision=precision,
                              num_classes=num_classes)
    model, self.log = self.step.model, log
    self.batches = [harness.host_batch(model, batch, None, num_classes, seed) for seed in (0, 1)]
    fn, key = self.step.fn, self.step.key
    cache0 = fn._cache_size()  # pylint: disable=protected-access
    count0, secs0 = log.snapshot()
    start = time.perf_counter()
    self.state, metrics = fn(self.step.state, self.place(0), key)
    jax.block_until_ready(metrics)
    self.first_s = time.perf_counter() - start
    count1, secs1 = log.snapshot()
    self.compiles_first = count1['compile'] - count0['compile']
    self.compile_s = sum((secs1 - secs0).values())
    self.cache_growth = fn._cache_size() - cache0  # pylint: disable=protected-access
    # the next fold of fold=all: a fresh state, another batch, same shapes: no new compile
    fresh = steps.state_initializer(model, harness.PAPER_OPT, self.step.mesh)(jax.random.key(2))
    before = log.snapshot()[0]['compile']
    jax.block_until_ready(fn(fresh, self.place(1), key))
    self.extra = log.snapshot()[0]['compile'] - before  # step compiles after the first (must be 0)
    lowered = fn.lower(self.state, self.place(0), key)
    self.gflops = harness.cost_of(lowered).get('flops', float('nan')) / 1e9
    self.times = []

  def place(self, i: int) -> dict:
    """Host batch i as the trainer places it (parallel.host_batch_to_global), every step."""
    return harness.place(self.batches[i], self.step.mesh, self.step.strategy)

  def run(self, repeats: int):
    for i in range(repeats):
      before = self.log.snapshot()[0]['compile']
      start = time.perf_counter()
      self.state, metrics = self.step.fn(self.state, self.place(i % 2), self.step.key)
      jax.block_until_ready(metrics)
      self.times.append(time.perf_counter() - start)
      self.extra += self.log.snapshot()[0]['compile'] - before


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
    load_before = load()
    start = time.perf_counter()
    with open(os.path.join(workdir, 'stderr.txt'), 'w+') as err:
      proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
      hwm_kib = 0
      while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
          break
        try:
          with open(f'/proc/{proc.pid}/status') as f:
            m = re.search(r'VmHWM:\s+(\d+) kB', f.read())
            hwm_kib = max(hwm_kib, int(m.group(1))) if m else hwm_kib
        except OSError:
          pass
        time.sleep(0.2)
      proc.returncode = os.waitstatus_to_exitcode(status)
      wall = time.perf_counter() - start
      maxrss_kib = usage.ru_maxrss  # KiB; max(parent at vfork, child): see the docstring
      err.seek(0)
      stderr = err.read()
    if proc.returncode != 0:
      raise RuntimeError(f'steps: {" ".join(cmd)} failed ({proc.returncode}):\n{stderr[-2000:]}')
  return dict(epochs=epochs, cmd=' '.join(['python'] + cmd[1:4] + ['--workdir=<tmp>'] + cmd[5:]), wall_s=wall,
              vmhwm_mib=hwm_kib / 1024, maxrss_mib=maxrss_kib / 1024,
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
                      help='intermix_jax.host_memory.reuse_freed_memory(), as intermix_jax.main does')
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
    print()
    print(f'{"backbone":10s} {"batch":>5s} {"precision":9s} {"strategy":10s} {"compiles":>8s} '
          f'{"compile s":>9s} {"GFLOP":>7s} {"median s":>8s} {"min s":>6s} {"over med":>8s} '
          f'{"over min":>8s}  load')
    for r in rows:
      print(f'{r["backbone"]:10s} {r["batch"]:5d} {r["precision"]:9s} {r["strategy"]:10s} '
            f'{r["compiles"]:8d} '
            f'{r["compile_s"]:9.1f} {r["gflops"]:7.2f} {r["median_s"]:8.3f} {r["min_s"]:6.3f} '
            f'{r["over_med"]:+7.1f}% {r["over_min"]:+7.1f}%  {r["load"]}')
    print('# compiles: XLA compilations of the step over first call + a fresh-state call + all '
          'timed steps (1 = exactly one); over: vs standard of the same backbone', flush=True)
  mem = []
  for epochs in filter(None, args.memory_epochs.split(',')):
    mem.append(peak_memory(int(epochs), args.reuse_host_memory))
    print(f'  demo {epochs} epoch(s): peak RSS (VmHWM) {mem[-1]["vmhwm_mib"]:.0f} MiB; '
          f'load {mem[-1]["load"]}', flush=True)
  if mem:
    print()
    print(f'{"demo run":40s} {"wall s":>7s} {"VmHWM MiB":>9s} {"wait4 maxrss":>12s}  load')
    for m in mem:
      print(f'{"num_epochs=" + str(m["epochs"]) + " (x2 for mixing)":40s} {m["wall_s"]:7.1f} '
            f'{m["vmhwm_mib"]:9.0f} {m["maxrss_mib"]:12.0f}  {m["load"]}')
    print(f'# command: {mem[0]["cmd"]} (num_epochs as above); VmHWM (MiB) polled every 0.2 s = the '
          'peak; wait4 maxrss includes the parent (vfork + exec), see the docstring')
  return rows, mem


if __name__ == '__main__':
  main()
