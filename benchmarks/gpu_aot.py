"""The GPU program of a train step, compiled on a machine WITHOUT a GPU: what it moves and where.

XLA compiles for a GPU it cannot see (deviceless AOT: a PJRT topology from a GPU target
description, `jax.experimental.topologies.get_topology_desc`): here the one-run and K-run steps
(`harness.compile_step`) for sm_90 (an H100 SXM's compute description, the H200's 141 GB and 4.8
TB/s). Per run: XLA:GPU's bytes accessed and FLOPs (`harness.cost_of`: cuDNN convolution calls
count their operands and outputs, not their FLOPs), the 7P + 2O floor (`roofline`), transposes and
copies (`harness.hlo_counts`), ENTRY kernels, grouped convolutions, the instructions moving the most
bytes; `--convs`: per cuDNN convolution call its FLOPs (2 x |y| x |w| / y's channels), the MB of
its operands and output, their ratio. No autotuning without a device: kernel choices may differ on
the chip; fusions, buffers and bytes are the compiler's. Its own environment (~4.4 GB; the jax
version of the project's, $JAX_VERSION):

    python3 -m venv /tmp/gpu_aot && /tmp/gpu_aot/bin/pip install "jax[cuda13]==$JAX_VERSION" \\
        flax optax chex ml_collections absl-py
    /tmp/gpu_aot/bin/python -m benchmarks.gpu_aot --backbone piczakcnn --ks 0,1,2,20
    /tmp/gpu_aot/bin/python -m benchmarks.gpu_aot --backbone envnetv2 --precision bfloat16 \\
        --ks 0 --variants plain,blocked --convs [--hlo_dir /tmp/hlo]   # accel_ops variants

`--ks`: 0 is the one-run step, K >= 1 the K-run step of `--method`. Ran with jax 0.10.2 and
0.11.2. Without a CUDA plugin it exits with one line.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import sys
import time

if __name__ == '__main__':
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')  # never look for a local CUDA device

import jax  # noqa: E402  (after JAX_PLATFORMS)

from benchmarks import harness, roofline  # noqa: E402
from intermix_jax.models import accel_ops  # noqa: E402

# GpuTargetConfigProto (text format) of an H100 SXM (sm_90, 132 SMs): the H200 has the same die,
# so only the memory fields are the H200's (141 GB, 4.8 TB/s). device_description_str names the
# H100 so that XLA's per-device heuristics apply.
SM90_H200 = """
gpu_device_info {
  threads_per_block_limit: 1024
  threads_per_warp: 32
  shared_memory_per_block: 49152
  shared_memory_per_core: 233472
  threads_per_core_limit: 2048
  core_count: 132
  fpus_per_core: 128
  block_dim_limit_x: 2147483647
  block_dim_limit_y: 65535
  block_dim_limit_z: 65535
  memory_bandwidth: 4800000000000
  l2_cache_size: 52428800
  clock_rate_ghz: 1.98
  device_memory_size: 150754820096
  shared_memory_per_block_optin: 232448
  cuda_compute_capability { major: 9 minor: 0 }
  registers_per_core_limit: 65536
  registers_per_block_limit: 65536
}
platform_name: "CUDA"
dnn_version_info { major: 9 minor: 8 }
runtime_version { major: 13 minor: 0 }
device_description_str: "NVIDIA H100 80GB HBM3"
"""


def gpu_device(target_config: str = SM90_H200):
  """The one device of a deviceless CUDA topology for `target_config` (exits with one line where
  this jaxlib has no CUDA plugin)."""
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  try:
    topo = topologies.get_topology_desc(platform='cuda', topology='1x1x1',
                                        target_config=target_config)
  except Exception as e:  # pylint: disable=broad-except
    sys.exit(f'gpu_aot: no deviceless CUDA compiler in this environment ({type(e).__name__}: '
             f'{str(e).splitlines()[0][:160]}); install "jax[cuda13]" as the docstring shows')
  return topo.devices[0]


CONV = re.compile(r'custom_call_target="__cudnn\$conv(\w+)"')


def conv_rows(text: str) -> list[tuple]:
  """(kind, op_name, x, w, y shapes, GFLOP, MB) of each cuDNN convolution call in a compiled GPU
  program. Operands: Forward (x, w) -> y, BackwardInput (dy, w) -> dx, BackwardFilter (x, dy) ->
  dw; FLOPs = 2 |y| |w| / (y's channels), grouped ones included."""
  shapes, rows = {}, []
  for name, shape, opcode, operands, rest in harness.hlo_instructions(text, entry_only=False):
    shapes[name] = shape = re.sub(r'\{[^}]*\}', '', shape).strip('()').split(', u8')[0]
    kind = CONV.search(rest) if opcode == 'custom-call' else None
    if not kind:
      continue
    a, b = (shapes.get(o, '') for o in operands[:2])
    x, w, y = dict(Forward=(a, b, shape), BackwardInput=(shape, b, a),
                   BackwardFilter=(a, shape, b))[kind.group(1)]
    out = re.search(r'->(\w+)', rest).group(1)
    dims = lambda s: [int(d) for d in s[s.index('[') + 1:-1].split(',')]
    flops = 2 * math.prod(dims(y)) * math.prod(dims(w)) / dims(y)[out.index('f')]
    mb = sum(harness.shape_bytes(s) for s in (a, b, shape)) / 1e6
    op = re.search(r'op_name="([^"]*)"', rest)
    rows.append((kind.group(1), op.group(1).split('/')[-3] if op else '', x, w, y, flops / 1e9, mb))
  return rows


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--backbone', default='piczakcnn')
  p.add_argument('--strategy', default='intermix')
  p.add_argument('--ks', default='0,1,2,20', help='0: the one-run step; K: K runs in one step')
  p.add_argument('--method', default='vmap', help='of multirun.METHODS (for K >= 1)')
  p.add_argument('--precision', default='float32', choices=('float32', 'bfloat16'))
  p.add_argument('--batch', type=int, default=64, help='per run')
  p.add_argument('--variants', default='plain', help=f'of {accel_ops.VARIANTS}')
  p.add_argument('--convs', action='store_true', help='a row per cuDNN convolution too')
  p.add_argument('--top', type=int, default=12, help='instructions listed per program')
  p.add_argument('--hlo_dir', default=None, help='also write each optimised program here')
  args = p.parse_args(argv)
  device = gpu_device()
  floor = roofline.floors(roofline.state_bytes(dict(
      backbone=args.backbone, strategy=args.strategy, width=1.0, fc_units=None,
      precision=args.precision)))[0]
  print(f'# deviceless {device.device_kind} (sm_90 target, H200 memory); jax {jax.__version__}; '
        f'{args.backbone} {args.strategy}, {args.precision}, batch {args.batch} per run, '
        'published size', flush=True)
  rows, listings = [], []
  for variant in args.variants.split(','):
    for k in [int(k) for k in args.ks.split(',')]:
      start = time.perf_counter()
      _, compiled = harness.compile_step(
          args.backbone, k or None, variant=variant, method=args.method, strategy=args.strategy,
          precision=args.precision, batch=args.batch, device=device)
      seconds, text = time.perf_counter() - start, compiled.as_text()
      c, runs, name = harness.cost_of(compiled), max(k, 1), 'one run' if k == 0 else args.method
      top, n, convs = harness.hlo_bytes(text), harness.hlo_counts(text), conv_rows(text)
      rows.append([
          name, variant, runs, f'{c["bytes accessed"] / 1e6 / runs:.0f}', f'{floor / 1e6:.0f}',
          f'{c["bytes accessed"] / runs / floor:.2f}', f'{c["flops"] / 1e9 / runs:.2f}',
          f'{sum(r[5] for r in convs) / runs:.2f} ({len(convs)})',
          f'{n["transpose"]} ({n["transpose_mb"]:.0f})', f'{n["copy"]} ({n["copy_mb"]:.0f})',
          sum(1 for r in top if r[3] == 'copy' and r[1] >= 1e6), len(top),
          len(re.findall(r'feature_group_count=([2-9]|\d\d+)', text)), f'{seconds:.0f}'])
      print(rows[-1], flush=True)
      listings.append((f'{name} {variant}', runs, top, convs))
      if args.hlo_dir:
        os.makedirs(args.hlo_dir, exist_ok=True)
        with open(os.path.join(args.hlo_dir, f'{args.backbone}_{args.strategy}_{args.precision}_'
                               f'{variant}_{name.replace(" ", "_")}_{runs}.hlo.txt'), 'w') as f:
          f.write(text)
  print(harness.md_table(
      ['program', 'variant', 'runs', 'XLA:GPU MB / run', 'floor MB / run', 'program / floor',
       'GFLOP / run but cuDNN', 'cuDNN conv GFLOP / run (calls)',
       'transposes (MB)', 'copies (MB)', 'copies >= 1 MB', 'ENTRY kernels',
       'grouped convolutions', 'compile s'], rows))
  for name, runs, top, convs in listings:
    print(f'\n# {name}, {runs} run(s): the {args.top} instructions moving the most bytes '
          f'(operands + output), MB per run')
    for total, out, inst, opcode, shape, op in top[:args.top]:
      print(f'{total / 1e6 / runs:9.1f}  {inst[:28]:28s} {opcode[:10]:10s} {shape[:34]:34s} '
            f'{op[-56:]}')
    if args.convs:
      print(harness.md_table(['layer', 'cuDNN call', 'x', 'w', 'y', 'GFLOP', 'MB', 'FLOP / byte'],
                             [[layer, kind, x, w, y, f'{g:.2f}', f'{mb:.1f}', f'{g * 1e3 / mb:.0f}']
                              for kind, layer, x, w, y, g, mb in convs]))
  return 0


if __name__ == '__main__':
  sys.exit(main())
