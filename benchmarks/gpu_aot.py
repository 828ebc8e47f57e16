"""The GPU program of a train step, compiled on a machine WITHOUT a GPU: what it moves and where.

XLA can compile for an NVIDIA GPU it cannot see (deviceless ahead-of-time compilation: a PJRT
topology made from a GPU target description, `jax.experimental.topologies.get_topology_desc`).
This script compiles the trainer's one-run step and the K-run step (`harness.compile_step`) for an
sm_90 target (H100 SXM's compute description, the H200's 141 GB and 4.8 TB/s), then prints per
run: XLA:GPU's bytes accessed and FLOPs (`harness.cost_of`: the cost analysis of the optimised
program, which counts the operands and outputs of cuDNN convolution calls but not their FLOPs),
the 7P + 2O floor (`benchmarks.roofline`), copies of 1 MB or more, grouped convolutions, and the
instructions that move the most bytes (`profile_step bytes`). No autotuning happens without a
device, so kernel choices (cuBLAS or Triton tiles) may differ on the chip; the fusion structure,
the buffers and the bytes are the compiler's.

It needs an environment of its own (a CUDA-enabled jaxlib; about 4.4 GB, no GPU needed):

    python3.12 -m venv /tmp/gpu_aot && /tmp/gpu_aot/bin/pip install "jax[cuda13]==0.11.2" \\
        flax optax chex ml_collections absl-py
    /tmp/gpu_aot/bin/python -m benchmarks.gpu_aot --backbone piczakcnn --ks 0,1,2,20
    /tmp/gpu_aot/bin/python -m benchmarks.gpu_aot ... --hlo_dir /tmp/hlo   # the programs' text too

`--ks`: 0 is the one-run step, K >= 1 the K-run step of `--method`. Written against jax 0.11.2.
Without a CUDA plugin it exits with one line.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time

if __name__ == '__main__':
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')  # never look for a local CUDA device

import jax  # noqa: E402  (after JAX_PLATFORMS)

from benchmarks import harness, profile_step, roofline  # noqa: E402

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


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--backbone', default='piczakcnn')
  p.add_argument('--ks', default='0,1,2,20', help='0: the one-run step; K: K runs in one step')
  p.add_argument('--method', default='vmap', help='of multirun.METHODS (for K >= 1)')
  p.add_argument('--precision', default='float32', choices=('float32', 'bfloat16'))
  p.add_argument('--batch', type=int, default=64, help='per run')
  p.add_argument('--top', type=int, default=12, help='instructions listed per program')
  p.add_argument('--hlo_dir', default=None, help='also write each optimised program here')
  args = p.parse_args(argv)
  device = gpu_device()
  floor = roofline.floors(roofline.state_bytes(dict(
      backbone=args.backbone, strategy='intermix', width=1.0, fc_units=None,
      precision=args.precision)))[0]
  print(f'# deviceless {device.device_kind} (sm_90 target, H200 memory); jax {jax.__version__}; '
        f'{args.backbone} InterMix, {args.precision}, batch {args.batch} per run, published size')
  print('| program | runs | XLA:GPU MB / run | floor MB / run | program / floor | '
        'GFLOP / run but cuDNN | copies >= 1 MB | grouped convolutions | compile s |')
  print('|---|---|---|---|---|---|---|---|---|')
  listings = []
  for k in [int(k) for k in args.ks.split(',')]:
    start = time.perf_counter()
    compiled = harness.compile_step(args.backbone, k or None, method=args.method,
                                    precision=args.precision, batch=args.batch, device=device)
    seconds = time.perf_counter() - start
    text = compiled.as_text()
    c, runs = harness.cost_of(compiled), max(k, 1)
    rows = profile_step.hlo_bytes(text)
    copies = sum(1 for r in rows if r[3] == 'copy' and r[1] >= 1e6)
    grouped = len(re.findall(r'feature_group_count=([2-9]|\d\d+)', text))
    name = 'one run' if k == 0 else args.method
    print(f'| {name} | {runs} | {c["bytes accessed"] / 1e6 / runs:.0f} | {floor / 1e6:.0f} | '
          f'{c["bytes accessed"] / runs / floor:.2f} | {c["flops"] / 1e9 / runs:.2f} | {copies} | '
          f'{grouped} | {seconds:.0f} |', flush=True)
    listings.append((name, runs, rows))
    if args.hlo_dir:
      os.makedirs(args.hlo_dir, exist_ok=True)
      with open(os.path.join(args.hlo_dir, f'{args.backbone}_{args.precision}_'
                                           f'{name.replace(" ", "_")}_{runs}.hlo.txt'), 'w') as f:
        f.write(text)
  for name, runs, rows in listings:
    print(f'\n# {name}, {runs} run(s): the {args.top} instructions moving the most bytes '
          f'(operands + output), MB per run')
    for total, out, inst, opcode, shape, op in rows[:args.top]:
      print(f'{total / 1e6 / runs:9.1f}  {inst[:28]:28s} {opcode[:10]:10s} {shape[:34]:34s} '
            f'{op[-56:]}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
