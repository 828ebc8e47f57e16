"""A/B of EnvNet-v2's forward-pass variants (`models.accel_ops`): one table row per variant.

    python -m benchmarks.envnet_ab                        # an accelerator: batch 64, published size,
                                                          # bfloat16 and float32, one run and 5 folds
    python -m benchmarks.envnet_ab --cpu --tiny           # CPU dry run (< 1 min): width 0.3, fc 32,
                                                          # batch 4, float32, one run, 1 timed step
    python -m benchmarks.envnet_ab --hlo_only ...         # compile only: FLOPs and HLO counts, no run
    python -m benchmarks.envnet_ab --out rows.jsonl ...   # rows as JSON lines too

For each precision, program (`--runs`: 1 = the trainer's one-run step, K > 1 = the K-run step with
the K folds unrolled, `harness.build(..., method='unroll')`, the table-1 row's program) and
variant (`--variants`, default every one of `accel_ops.VARIANTS`; 'plain' is today's default):
the InterMix train step (`harness.build`: the paper's optimiser, state donated, one batch on the
device) traced under `accel_ops.force(variant)`, compiled, 2 warm-up steps, `--repeats` steps
back to back. Columns: ms per step; TFLOP/s = XLA's cost-analysis FLOPs of that variant's
lowered program (before optimisation: XLA:GPU's analysis of the compiled program counts no cuDNN
convolution FLOPs) / step time; "useful" TFLOP/s = the 'plain' program's FLOPs / step time (the 'blocked'
variant computes zero taps too, which its own count includes: compare variants by ms or by
useful TFLOP/s); x plain (plain's ms / this ms); and the transposes and copies in the compiled
HLO and the MB their outputs hold (`hlo_counts`: instructions whose opcode is transpose or
copy, inside fusions too; most are kernel relayouts and scalar copies, the MB show whether
activations move).
float32 rows run at JAX's default matmul precision (TF32 on an H100/H200, as the trainer runs).

`--cpu` forces `cpu_ops.force('plain')` (the accelerator's program, lax convolutions and pools,
whatever this backend: the HLO counts are those of that program as XLA:CPU compiles it; on a GPU
the layout assignment differs, so the counts printed there are the ones that matter).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import re
import sys
import time

import jax

from benchmarks import harness
from intermix_jax.models import accel_ops, cpu_ops

_OPCODE = re.compile(r'= ([a-z]+[0-9]*)\[([0-9,]*)\]\S* (transpose|copy|copy-start)\(')
_BYTES = dict(pred=1, s8=1, u8=1, bf16=2, f16=2, s16=2, u16=2, f32=4, s32=4, u32=4, f64=8, s64=8,
              u64=8)


def hlo_counts(text: str) -> dict:
  """The transpose and copy instructions of an HLO module's text (inside fusions too; copy-start
  counts as copy) and the bytes of their outputs: {'transpose': n, 'copy': n, 'transpose_mb':
  MB, 'copy_mb': MB}. Most are small (kernel relayouts, scalar RNG state); the bytes say whether
  activations are moved."""
  counts = dict(transpose=0, copy=0, transpose_mb=0.0, copy_mb=0.0)
  for dtype, dims, op in _OPCODE.findall(text):
    kind = 'transpose' if op == 'transpose' else 'copy'
    counts[kind] += 1
    counts[kind + '_mb'] += _BYTES.get(dtype, 4) * math.prod(
        int(d) for d in dims.split(',') if d) / 1e6
  counts['transpose_mb'] = round(counts['transpose_mb'], 3)
  counts['copy_mb'] = round(counts['copy_mb'], 3)
  return counts


def bench(variant: str, precision: str, runs: int, *, batch: int, width: float, fc_units,
          repeats: int, hlo_only: bool, strategy: str = 'intermix') -> dict:
  start = time.perf_counter()
  harness.clear()  # a fresh jitted step: the variant is read when it is traced
  with accel_ops.force(variant):
    step = harness.build('envnetv2', strategy, None if runs == 1 else runs, batch=batch,
                         method='unroll', width=width, fc_units=fc_units, precision=precision,
                         abstract=hlo_only)
    lowered = step.fn.lower(step.state, step.data, step.key)
    compiled = lowered.compile()
  compile_s = time.perf_counter() - start
  # FLOPs of the lowered (unoptimised) program: XLA:GPU's cost analysis of the compiled one
  # counts no FLOPs of cuDNN convolutions (benchmarks/README.md, gpu_aot); bytes: the compiled one.
  flops = harness.cost_of(lowered).get('flops')
  cost = harness.cost_of(compiled)
  row = dict(variant=variant, precision=precision, runs=runs, batch=batch, width=width,
             fc_units=fc_units, strategy=strategy, compile_s=round(compile_s, 2),
             flops=flops, bytes_accessed=cost.get('bytes accessed'),
             **hlo_counts(compiled.as_text()), xla_bytes=harness.memory_bytes(compiled),
             step_s=None, finite=None, repeats=repeats,
             device=jax.local_devices()[0].device_kind, backend=jax.default_backend(),
             load=harness.load())
  if not hlo_only:
    harness.loop_seconds(step, 2, compiled)
    seconds, metrics = harness.loop_seconds(step, repeats, compiled)
    row.update(step_s=seconds, finite=harness.finite(metrics))
  del step, compiled, lowered
  harness.clear()
  return row


def _fmt(v, spec, none='-'):
  return none if v is None else format(v, spec)


def table(rows: list[dict]) -> str:
  lines = ['| variant | precision | runs | ms/step | TFLOP/s | useful TFLOP/s | x plain | '
           'transposes (MB) | copies (MB) | GFLOP | compile s |', '|' + '---|' * 11]
  plain = {(r['precision'], r['runs']): r for r in rows if r['variant'] == 'plain'}
  for r in rows:
    base = plain.get((r['precision'], r['runs']))
    s = r['step_s']
    tf = r['flops'] / s / 1e12 if s and r['flops'] else None
    useful = base['flops'] / s / 1e12 if s and base and base['flops'] else None
    x = base['step_s'] / s if s and base and base['step_s'] else None
    lines.append(f"| {r['variant']} | {r['precision']} | {r['runs']} | {_fmt(s and s * 1e3, '.2f')} "
                 f"| {_fmt(tf, '.2f')} | {_fmt(useful, '.2f')} | {_fmt(x, '.2f')} "
                 f"| {r['transpose']} ({r['transpose_mb']:.1f}) | {r['copy']} ({r['copy_mb']:.1f}) | {_fmt(r['flops'] and r['flops'] / 1e9, '.1f')} "
                 f"| {r['compile_s']:.1f} |")
  return '\n'.join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--variants', default=','.join(accel_ops.VARIANTS))
  p.add_argument('--precisions', default='bfloat16,float32')
  p.add_argument('--runs', default='1,5', help='1 = one run; K > 1 = K folds unrolled')
  p.add_argument('--batch', type=int, default=64)
  p.add_argument('--width', type=float, default=1.0)
  p.add_argument('--fc_units', type=int, default=0, help='0 = published (4096)')
  p.add_argument('--repeats', type=int, default=10)
  p.add_argument('--strategy', default=None,
                 help='default intermix (standard with --tiny: no mix branches to compile)')
  p.add_argument('--hlo_only', action='store_true', help='compile only (no step is run)')
  p.add_argument('--cpu', action='store_true',
                 help="trace the accelerator's program (cpu_ops 'plain') on this CPU")
  p.add_argument('--tiny', action='store_true',
                 help='width 0.3, fc 32, batch 4, float32, one run, 1 timed step, standard')
  p.add_argument('--out', default='', help='append rows as JSON lines to this file')
  args = p.parse_args(argv)
  if args.tiny:
    args.width, args.fc_units, args.batch, args.repeats = 0.3, 32, 4, 1
    args.runs, args.precisions = '1', 'float32'
    args.strategy = args.strategy or 'standard'
  args.strategy = args.strategy or 'intermix'
  variants = [v for v in args.variants.split(',') if v]
  for v in variants:
    if v not in accel_ops.VARIANTS:
      p.error(f'--variants: {v!r} is not one of {list(accel_ops.VARIANTS)}')
  precisions = [q for q in args.precisions.split(',') if q]
  runs = [int(k) for k in args.runs.split(',') if k]
  print(f'# {harness.machine()}; EnvNet-v2 {args.strategy}, batch {args.batch} per run, width '
        f'{args.width}, fc_units {args.fc_units or "published"}, {args.repeats} steps timed'
        f'{", compile only" if args.hlo_only else ""}', flush=True)
  rows = []
  with cpu_ops.force('plain') if args.cpu else contextlib.nullcontext():
    for precision in precisions:
      for k in runs:
        for v in variants:
          row = bench(v, precision, k, batch=args.batch, width=args.width,
                      fc_units=args.fc_units or None, repeats=args.repeats,
                      hlo_only=args.hlo_only, strategy=args.strategy)
          rows.append(row)
          print(json.dumps(row), flush=True)
          if args.out:
            with open(args.out, 'a') as f:
              f.write(json.dumps(row) + '\n')
  print(table(rows))
  bad = [r['variant'] for r in rows if r['finite'] is False]
  if bad:
    print(f'# non-finite loss: {bad}')
  print(f'# load after: {harness.load()}')
  return 1 if bad else 0


if __name__ == '__main__':
  sys.exit(main())
