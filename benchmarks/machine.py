"""What the benchmarks report about the machine they ran on: CPU name, load average, the XLA FLOPs
of a lowered or compiled step, and a measured float32 matmul rate (the MFU denominator).

Imported by the scripts beside it (`python benchmarks/<script>.py` puts this folder on sys.path).
"""
from __future__ import annotations

import os
import platform
import time

import jax
import jax.numpy as jnp


def cpu_name() -> str:
  """The CPU model from /proc/cpuinfo, else what `platform` knows."""
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def load() -> str:
  """The 1, 5 and 15 minute load averages, e.g. '1.20 1.35 1.40'."""
  return ' '.join(f'{v:.2f}' for v in os.getloadavg())


def cost_of(compiled) -> dict:
  """XLA's cost analysis of a `jax.stages.Lowered` or `Compiled` as one dict ({} if absent)."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return cost or {}


def flops_of(compiled) -> float:
  """FLOPs from XLA's cost analysis of a `jax.stages.Lowered` or `Compiled` (NaN if absent)."""
  return float(cost_of(compiled).get('flops', float('nan')))


def matmul_rate(n: int = 4096, repeats: int = 3, dtype=jnp.float32) -> float:
  """Measured GFLOP/s of an n x n x n `jnp.dot` of `dtype` operands (default float32), under the
  caller's matmul precision: best of `repeats` after one warm-up."""
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  b = jax.random.normal(jax.random.key(1), (n, n), dtype)
  f = jax.jit(jnp.dot)
  jax.block_until_ready(f(a, b))
  best = float('inf')
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(f(a, b))
    best = min(best, time.perf_counter() - start)
  return 2 * n ** 3 / best / 1e9
