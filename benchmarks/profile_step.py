"""Where a train step's time goes: `trace` the trainer's step with the JAX profiler, `summarize`
its XLA:CPU operations by time (needs `xprof`); for any backend and without xprof, `kernels`
(device time by kernel and kernel class of a `benchmarks.multirun --profile` row) and `bytes` (the
instructions of a compiled step that move the most bytes).

    python -m benchmarks.profile_step trace --model envnet --batch 32 --out /tmp/prof_envnet
    python -m benchmarks.profile_step summarize /tmp/prof_envnet --top 40   # pip install xprof
    python -m benchmarks.profile_step kernels DIR/<row> --top 40   # multirun --profile DIR
    python -m benchmarks.profile_step bytes DIR/<row>/step.hlo.txt --top 30

`trace`: the one-run standard step (`harness.build`, the backend's own convolutions: `cpu_ops` on
a CPU; `host_memory.reuse_freed_memory()` unless `--no-reuse_host_memory`), two warm-up steps,
`--steps` traced. `summarize` sums per HLO instruction the time of its events on XLA's worker
threads per traced step ("thread ms / step": a convolution on both threads counts twice); library
kernels in Eigen's own pool (an XLA `convolution`) show only their launch.
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
  import jax  # pylint: disable=import-outside-toplevel
  from benchmarks import harness  # pylint: disable=import-outside-toplevel
  step = harness.build(args.model, 'standard', batch=args.batch)
  compiled = step.lower().compile()
  step.fn = compiled
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, 'step.hlo.txt'), 'w') as f:
    f.write(compiled.as_text())
  untraced = harness.timed_steps(step, 2)
  jax.profiler.start_trace(args.out)
  traced = harness.timed_steps(step, args.steps)
  jax.profiler.stop_trace()
  with open(os.path.join(args.out, 'meta.json'), 'w') as f:
    json.dump(dict(model=args.model, batch=args.batch, steps=args.steps, reuse_host_memory=reused,
                   untraced_s=untraced, traced_s=traced,
                   gflops=harness.cost_of(compiled).get('flops', float('nan')) / 1e9), f)
  secs = lambda ts: ' '.join(f'{t:.3f}' for t in ts)
  print(f'{args.model} batch {args.batch}: untraced steps {secs(untraced)} s, traced '
        f'{secs(traced)} s; host memory reuse {reused}; wrote {args.out}')


def summarize(args) -> None:
  from xprof.convert import raw_to_tool_data  # pylint: disable=import-outside-toplevel
  paths = sorted(glob.glob(os.path.join(args.dir, 'plugins', 'profile', '*', '*.xplane.pb')))
  if not paths:
    sys.exit(f'profile_step: no *.xplane.pb under {args.dir}/plugins/profile (run `trace` first)')
  with open(os.path.join(args.dir, 'meta.json')) as f:
    meta = json.load(f)
  from benchmarks import harness  # pylint: disable=import-outside-toplevel
  with open(os.path.join(args.dir, 'step.hlo.txt')) as f:
    instructions = {name: (shape, (re.findall(r'op_name="([^"]*)"', rest) or [''])[0])
                    for name, shape, _, _, rest in harness.hlo_instructions(f.read(), False)}
  data, _ = raw_to_tool_data.xspace_to_tool_data([paths[-1]], 'trace_viewer', {})
  events, _, threads = _names(json.loads(data if isinstance(data, str) else data.decode()))
  total = collections.Counter()
  for e in events:
    if (e.get('ph') == 'X' and 'XLAEigen' in threads.get((e['pid'], e['tid']), '')
        and e['name'] not in SKIP):
      total[e['name']] += e['dur'] / 1e3 / meta['steps']
  print(f'# {meta["model"]} batch {meta["batch"]}: traced steps {meta["traced_s"]} s, untraced '
        f'{meta["untraced_s"]} s, {meta["gflops"]:.1f} model GFLOP; thunk time on XLA threads '
        f'{sum(total.values()):.0f} ms / step')
  print(f'{"thread ms/step":>14s}  {"HLO instruction":28s} {"shape":42s} model op')
  for name, ms in total.most_common(args.top):
    shape, op = instructions.get(name, ('', ''))
    print(f'{ms:14.1f}  {name[:28]:28s} {shape[:42]:42s} {op[-80:]}')


def _names(data) -> tuple[list, dict, dict]:
  """(events, pid -> process name, (pid, tid) -> thread name) of a Chrome / Perfetto JSON trace."""
  events = data['traceEvents'] if isinstance(data, dict) else data
  procs, threads = {}, {}
  for e in events:
    if e.get('ph') == 'M' and e.get('name') == 'process_name':
      procs[e.get('pid')] = e['args'].get('name', '')
    elif e.get('ph') == 'M' and e.get('name') == 'thread_name':
      threads[(e.get('pid'), e.get('tid'))] = e['args'].get('name', '')
  return events, procs, threads


# Kernel classes, first match wins (cuDNN's implicit-GEMM convolutions contain 'gemm': before
# the matmuls). Names as XLA:GPU's kernels and cuDNN / cuBLAS / CUTLASS show them on Hopper
# ('sm90_xmma_fprop_implicit_gemm_...', 'nvjet_...', 'loop_transpose_fusion', ...); on a CPU
# backend the HLO instruction names ('convolution.3', 'fusion.12', ...).
KERNEL_CLASSES = (
    ('convolution: weight gradient', r'wgrad|backward_filter|bwd_filter|conv(?!ert)\w*filter'),
    ('convolution: input gradient', r'dgrad|backward_data|bwd_data|conv(?!ert)\w*data'),
    ('convolution: forward', r'fprop|implicit_convolve|winograd|conv(?!ert)|cudnn|fft|flip_filter'),
    ('matmul', r'gemm|cutlass|cublas|nvjet|dot|triton'),
    ('memset / memcpy', r'memset|memcpy'),
    ('transpose / copy (layout)', r'transpose|copy'),
    ('reduction fusion', r'reduce|reduction'),
    ('elementwise fusion', r'fusion|loop_|input_'),
)


def kernel_class(name: str) -> str:
  """The class of a kernel (or HLO instruction) by its name: KERNEL_CLASSES, else 'other'."""
  low = name.lower()
  for label, pattern in KERNEL_CLASSES:
    if re.search(pattern, low):
      return label
  return 'other'


def kernels(args) -> None:
  """Per-step time of the events on the device's tracks (every '/device:' process of the trace;
  on a CPU backend, XLA's own threads), by track and event name, from the Perfetto JSON trace
  that `benchmarks.multirun --profile` writes: no xprof needed."""
  paths = sorted(glob.glob(os.path.join(args.dir, 'plugins', 'profile', '*',
                                        'perfetto_trace.json.gz')))
  if not paths:
    sys.exit(f'profile_step: no perfetto_trace.json.gz under {args.dir}/plugins/profile '
             '(run python -m benchmarks.multirun --profile first)')
  with open(os.path.join(args.dir, 'meta.json')) as f:
    meta = json.load(f)
  with gzip.open(paths[-1], 'rt') as f:
    events, procs, threads = _names(json.load(f))
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
  per_class = collections.Counter()
  for (_, _, name), ms in per_event.items():
    per_class[kernel_class(name)] += ms
  total = sum(per_class.values()) or 1.0
  for label, ms in per_class.most_common():  # what holds the step back, by kind of kernel
    print(f'# class {label}: {ms:.3f} ms per step ({100 * ms / total:.0f} % of kernel time)')
  print(f'{"ms / step":>10s}  {"track":40s} event')
  for (proc, thread, name), ms in per_event.most_common(args.top):
    print(f'{ms:10.3f}  {(proc + " / " + thread)[-40:]:40s} {name[:100]}')


def cmd_bytes(args) -> None:
  """The instructions of a compiled step (`step.hlo.txt` of `trace` or `multirun --profile`)
  that move the most bytes: where a memory-bound step's traffic goes."""
  from benchmarks import harness  # pylint: disable=import-outside-toplevel
  with open(args.hlo) as f:
    rows = harness.hlo_bytes(f.read())
  print(f'# {args.hlo}: {sum(r[0] for r in rows) / 1e6:.0f} MB over {len(rows)} instructions '
        '(operands + output of each)')
  print(f'{"MB":>9s} {"out MB":>8s}  {"instruction":28s} {"opcode":12s} {"shape":36s} model op')
  for total, out, name, opcode, shape, op in rows[:args.top]:
    print(f'{total / 1e6:9.1f} {out / 1e6:8.1f}  {name[:28]:28s} {opcode[:12]:12s} '
          f'{shape[:36]:36s} {op[-60:]}')


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
  k = sub.add_parser('kernels', help='device time by event, from multirun --profile (no xprof)')
  k.add_argument('dir')
  k.add_argument('--top', type=int, default=30)
  b = sub.add_parser('bytes', help='the instructions of a compiled step moving the most bytes')
  b.add_argument('hlo', help='an optimised HLO text (step.hlo.txt)')
  b.add_argument('--top', type=int, default=30)
  args = parser.parse_args(argv)
  dict(trace=trace, summarize=summarize, kernels=kernels, bytes=cmd_bytes)[args.command](args)


if __name__ == '__main__':
  main()
