"""A/B of EnvNet-v2's forward-pass variants (`models.accel_ops`): one table row per variant.

    python -m benchmarks.envnet_ab                 # an accelerator: batch 64, published size,
                                                   # bfloat16 and float32, one run and 5 folds
    python -m benchmarks.envnet_ab --cpu --tiny    # CPU dry run (< 1 min): width 0.3, fc 32,
                                                   # batch 4, float32, one run, 1 timed step
    python -m benchmarks.envnet_ab --hlo_only ...  # compile only: FLOPs and HLO counts, no run
    python -m benchmarks.envnet_ab --out rows.jsonl ...   # rows as JSON lines too

Per precision, program (`--runs`: 1 = the one-run step, K > 1 = K folds unrolled, the table-1
row's program) and variant (`--variants`, default all of `accel_ops.VARIANTS`; 'plain' is today's
default): the train step (`harness.build`) traced under `accel_ops.force(variant)`, compiled, 2
warm-up steps, `--repeats` steps back to back. Columns: ms per step; TFLOP/s = FLOPs of the
variant's lowered program (XLA:GPU's count of the compiled one misses cuDNN convolutions) / step
time; "useful" TFLOP/s = plain's FLOPs / step time ('blocked' also computes zero taps); x plain;
the transposes and copies of the compiled HLO and the MB of their outputs (`harness.hlo_counts`).
float32 rows run at the default matmul precision (TF32 on an H100/H200, as the trainer runs).
`--cpu`: `cpu_ops.force('plain')`, the accelerator's program on this CPU (on a GPU the layouts
differ). The GPU's program of each variant without a GPU: `benchmarks.gpu_aot --variants`.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time

import jax

from benchmarks import harness
from benchmarks.harness import hlo_counts  # noqa: F401  (this script's counts, also for tests)
from intermix_jax.models import accel_ops, cpu_ops


def bench(variant: str, precision: str, runs: int, *, batch: int, width: float, fc_units,
          repeats: int, hlo_only: bool, strategy: str = 'intermix') -> dict:
  start = time.perf_counter()
  harness.clear()  # a fresh jitted step: the variant is read when it is traced
  with accel_ops.force(variant):
    step = harness.build('envnetv2', strategy, None if runs == 1 else runs, batch=batch,
                         method='unroll', width=width, fc_units=fc_units, precision=precision,
                         abstract=hlo_only)
    lowered = step.lower()
    compiled = lowered.compile()
  row = dict(variant=variant, precision=precision, runs=runs, batch=batch, width=width,
             fc_units=fc_units, strategy=strategy, compile_s=round(time.perf_counter() - start, 2),
             flops=harness.cost_of(lowered).get('flops'),
             bytes_accessed=harness.cost_of(compiled).get('bytes accessed'),
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


def table(rows: list[dict]) -> str:
  plain = {(r['precision'], r['runs']): r for r in rows if r['variant'] == 'plain'}
  fmt = lambda v, spec: '-' if not v else format(v, spec)
  lines = []
  for r in rows:
    base, s = plain.get((r['precision'], r['runs']), {}), r['step_s']
    per_s = lambda flops: flops / s / 1e12 if s and flops else None
    lines.append([r['variant'], r['precision'], r['runs'], fmt(s and s * 1e3, '.2f'),
                  fmt(per_s(r['flops']), '.2f'), fmt(per_s(base.get('flops')), '.2f'),
                  fmt(s and base.get('step_s') and base['step_s'] / s, '.2f'),
                  f"{r['transpose']} ({r['transpose_mb']:.1f})",
                  f"{r['copy']} ({r['copy_mb']:.1f})",
                  fmt(r['flops'] and r['flops'] / 1e9, '.1f'), f"{r['compile_s']:.1f}"])
  return harness.md_table(['variant', 'precision', 'runs', 'ms/step', 'TFLOP/s', 'useful TFLOP/s',
                           'x plain', 'transposes (MB)', 'copies (MB)', 'GFLOP', 'compile s'],
                          lines)


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
  if set(variants) - set(accel_ops.VARIANTS):
    p.error(f'--variants: {variants} not all of {list(accel_ops.VARIANTS)}')
  print(f'# {harness.machine()}; EnvNet-v2 {args.strategy}, batch {args.batch} per run, width '
        f'{args.width}, fc_units {args.fc_units or "published"}, {args.repeats} steps timed'
        f'{", compile only" if args.hlo_only else ""}', flush=True)
  rows = []
  with cpu_ops.force('plain') if args.cpu else contextlib.nullcontext():
    for precision in args.precisions.split(','):
      for k in [int(k) for k in args.runs.split(',')]:
        for v in variants:
          rows.append(bench(v, precision, k, batch=args.batch, width=args.width,
                            fc_units=args.fc_units or None, repeats=args.repeats,
                            hlo_only=args.hlo_only, strategy=args.strategy))
          print(json.dumps(rows[-1]), flush=True)
          if args.out:
            with open(args.out, 'a') as f:
              f.write(json.dumps(rows[-1]) + '\n')
  print(table(rows))
  bad = [r['variant'] for r in rows if r['finite'] is False]
  if bad:
    print(f'# non-finite loss: {bad}')
  print(f'# load after: {harness.load()}')
  return 1 if bad else 0


if __name__ == '__main__':
  sys.exit(main())
