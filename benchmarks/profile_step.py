"""Where a train step's time goes: trace the trainer's step with the JAX profiler, then list the
XLA:CPU operations (HLO fusions, dots, FFTs, copies) by time, each with its shape and the model
op it comes from.

    # 1. in the project environment: trace 2 steps, write the profile and the compiled HLO
    .venv/bin/python benchmarks/profile_step.py trace --model envnet --batch 32 --out /tmp/prof_envnet
    # 2. in any environment with `xprof` (pip install xprof; kept out of the package's dependencies):
    python benchmarks/profile_step.py summarize /tmp/prof_envnet --top 40

`trace` runs the same step as benchmarks/vs_torch.py (the trainer's `steps.make_train_step`,
standard strategy, Nesterov SGD, the backend's own convolutions and pools: the `models.cpu_ops`
rewrites on the CPU backend, nothing forced; `host_memory.reuse_freed_memory()` unless
`--no-reuse_host_memory`), two warm-up steps, then `--steps` traced steps. `summarize` reads the
trace with xprof's trace_viewer converter and sums, per HLO instruction, the time of its events on
XLA's worker threads divided by the number of traced steps ("thread ms / step": a convolution that
runs on both threads counts twice; the total over all rows is the CPU time of the step's thunks).
Library kernels that run inside Eigen's own thread pool (e.g. an XLA `convolution`) show only
their launch: read their cost from benchmarks/models.py --layers instead.
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys


SKIP = ('ThreadpoolListener::Region', 'ThunkExecutor::Execute')  # XLA:CPU's wrappers of the ops


def trace(args) -> None:
  from intermix_jax import host_memory
  reused = args.reuse_host_memory and host_memory.reuse_freed_memory()  # before JAX's threads
  import jax
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  from vs_torch import JaxStep  # pylint: disable=import-outside-toplevel
  step = JaxStep(args.model, args.batch)
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, 'step.hlo.txt'), 'w') as f:
    f.write(step.compiled.as_text())
  untraced = step.run(2)
  jax.profiler.start_trace(args.out)
  traced = step.run(args.steps)
  jax.profiler.stop_trace()
  with open(os.path.join(args.out, 'meta.json'), 'w') as f:
    json.dump(dict(model=args.model, batch=args.batch, steps=args.steps, reuse_host_memory=reused,
                   untraced_s=untraced, traced_s=traced, gflops=step.gflops), f)
  print(f'{args.model} batch {args.batch}: untraced steps {" ".join(f"{t:.3f}" for t in untraced)} s, '
        f'traced {" ".join(f"{t:.3f}" for t in traced)} s; host memory reuse {reused}; wrote {args.out}')


def _instruction_lines(hlo: str) -> dict:
  """HLO instruction name -> (result shape, op_name metadata) of the compiled module."""
  out = {}
  for m in re.finditer(r'^\s*(?:ROOT )?%?([\w.\-]+) = (\S+) [^\n]*', hlo, re.M):
    op = re.search(r'op_name="([^"]*)"', m.group(0))
    out[m.group(1)] = (m.group(2), op.group(1) if op else '')
  return out


def summarize(args) -> None:
  from xprof.convert import raw_to_tool_data  # pylint: disable=import-outside-toplevel
  paths = sorted(glob.glob(os.path.join(args.dir, 'plugins', 'profile', '*', '*.xplane.pb')))
  if not paths:
    sys.exit(f'profile_step: no *.xplane.pb under {args.dir}/plugins/profile (run `trace` first)')
  with open(os.path.join(args.dir, 'meta.json')) as f:
    meta = json.load(f)
  with open(os.path.join(args.dir, 'step.hlo.txt')) as f:
    instructions = _instruction_lines(f.read())
  data, _ = raw_to_tool_data.xspace_to_tool_data([paths[-1]], 'trace_viewer', {})
  events = json.loads(data if isinstance(data, str) else data.decode())
  events = events['traceEvents'] if isinstance(events, dict) else events
  threads = {(e['pid'], e['tid']): e['args']['name'] for e in events
             if e.get('ph') == 'M' and e.get('name') == 'thread_name'}
  skip = set(SKIP)
  total = collections.Counter()
  for e in events:
    if (e.get('ph') == 'X' and 'XLAEigen' in threads.get((e['pid'], e['tid']), '')
        and e['name'] not in skip):
      total[e['name']] += e['dur'] / 1e3 / meta['steps']
  print(f'# {meta["model"]} batch {meta["batch"]}: traced steps {meta["traced_s"]} s, untraced '
        f'{meta["untraced_s"]} s, {meta["gflops"]:.1f} model GFLOP; thunk time on XLA threads '
        f'{sum(total.values()):.0f} ms / step')
  print(f'{"thread ms/step":>14s}  {"HLO instruction":28s} {"shape":42s} model op')
  for name, ms in total.most_common(args.top):
    shape, op = instructions.get(name, ('', ''))
    print(f'{ms:14.1f}  {name[:28]:28s} {shape[:42]:42s} {op[-80:]}')


def _perfetto_events(path: str) -> tuple[list, dict, dict]:
  """(events, pid -> process name, (pid, tid) -> thread name) of a Perfetto JSON trace."""
  with gzip.open(path, 'rt') as f:
    data = json.load(f)
  events = data['traceEvents'] if isinstance(data, dict) else data
  procs, threads = {}, {}
  for e in events:
    if e.get('ph') == 'M' and e.get('name') == 'process_name':
      procs[e.get('pid')] = e['args'].get('name', '')
    elif e.get('ph') == 'M' and e.get('name') == 'thread_name':
      threads[(e.get('pid'), e.get('tid'))] = e['args'].get('name', '')
  return events, procs, threads


def kernels(args) -> None:
  """Per-step time of the events on the device's tracks (every '/device:' process of the trace;
  on a CPU backend, XLA's own threads), by track and event name, from the Perfetto JSON trace
  that `multirun.py --profile` writes: no xprof needed."""
  paths = sorted(glob.glob(os.path.join(args.dir, 'plugins', 'profile', '*',
                                        'perfetto_trace.json.gz')))
  if not paths:
    sys.exit(f'profile_step: no perfetto_trace.json.gz under {args.dir}/plugins/profile '
             '(run benchmarks/multirun.py --profile first)')
  with open(os.path.join(args.dir, 'meta.json')) as f:
    meta = json.load(f)
  events, procs, threads = _perfetto_events(paths[-1])
  devices = {pid for pid, name in procs.items() if name.startswith('/device:')}
  if devices:
    track = lambda e: (procs[e['pid']], threads.get((e['pid'], e.get('tid')), ''))
    keep = lambda e: e['pid'] in devices
  else:  # a CPU backend: XLA's worker threads
    track = lambda e: ('host', threads.get((e['pid'], e.get('tid')), '').split('/')[0])
    keep = lambda e: 'XLA' in threads.get((e['pid'], e.get('tid')), '')
  per_track, per_event = collections.Counter(), collections.Counter()
  for e in events:
    if e.get('ph') == 'X' and keep(e) and not e['name'].startswith(SKIP):
      ms = e.get('dur', 0) / 1e3 / meta['steps']
      per_track[track(e)] += ms
      per_event[track(e) + (e['name'],)] += ms
  print(f'# {args.dir}: {meta["backbone"]} {meta["strategy"]} runs={meta["runs"] or "alone"} '
        f'{meta["method"] if meta["runs"] else ""} {meta["precision"]} batch {meta["batch"]}: '
        f'untraced step {1e3 * meta["step_s"]:.2f} ms; {meta["steps"]} traced steps')
  for (proc, thread), ms in per_track.most_common():
    print(f'# track {proc} / {thread}: {ms:.3f} ms per step')
  print(f'{"ms / step":>10s}  {"track":40s} event')
  for (proc, thread, name), ms in per_event.most_common(args.top):
    print(f'{ms:10.3f}  {(proc + " / " + thread)[-40:]:40s} {name[:100]}')


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  sub = parser.add_subparsers(dest='command', required=True)
  t = sub.add_parser('trace', help='trace the step (project environment)')
  t.add_argument('--model', default='envnet', help='a name of intermix_jax.models.MODELS')
  t.add_argument('--batch', type=int, default=32)
  t.add_argument('--steps', type=int, default=2, help='traced steps')
  t.add_argument('--out', required=True, help='profile directory')
  t.add_argument('--reuse_host_memory', action=argparse.BooleanOptionalAction, default=True)
  s = sub.add_parser('summarize', help='per-operation table (needs xprof)')
  s.add_argument('dir')
  s.add_argument('--top', type=int, default=40)
  k = sub.add_parser('kernels', help='device time by event, from multirun.py --profile '
                                     '(no xprof)')
  k.add_argument('dir')
  k.add_argument('--top', type=int, default=30)
  args = parser.parse_args(argv)
  dict(trace=trace, summarize=summarize, kernels=kernels)[args.command](args)


if __name__ == '__main__':
  main()
