"""Host allocator setting for XLA:CPU: keep freed memory in the process instead of unmapping it.

Why: on the CPU backend every execution of a compiled step allocates its temporaries (about 1.2 GB
for an EnvNet step at batch 32, more for EnvNet-v2) with malloc and frees them at the end. glibc
serves any allocation above its mmap threshold (at most 32 MiB) with fresh `mmap` pages and returns
them with `munmap` on free, so each step page-faults and the kernel zero-fills every page again.
Measured on 2 AMD EPYC cores (jaxlib 0.10.2, EnvNet, batch 32, 6 steps): 300 k minor page faults
and 0.65 s of kernel CPU time per step; with `reuse_freed_memory()` 85 k faults and 0.2 s, and the
step went from 1.54 s to 1.33 s median (`benchmarks/vs_torch.py` reports the step with the setting).

What it does (glibc `mallopt`, process-wide, for allocations made after the call):
  M_ARENA_MAX = 1          every thread allocates from the main heap (a thread arena is at most
                           64 MiB and would fall back to mmap for large blocks);
  M_MMAP_MAX = 0           no allocation is served by mmap;
  M_TRIM_THRESHOLD = 2 GiB freed memory at the top of the heap is kept for reuse, not trimmed;
  M_TOP_PAD = 256 MiB      the heap grows in large steps.
The process's resident memory then stays at its peak (it is not given back between steps); the
peak itself is what the step needs either way (benchmarks/steps.py measures a training run's peak).

Call it first thing in a program, before JAX creates its thread pools (`intermix_jax.main` does;
`--noreuse_host_memory` turns it off). It is a no-op returning False where the C library is not
glibc (macOS, musl). Accelerator backends allocate device memory themselves and are unaffected.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import platform

M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_MAX = -4
M_ARENA_MAX = -8

SETTINGS = (
    (M_ARENA_MAX, 1),
    (M_MMAP_MAX, 0),
    (M_TRIM_THRESHOLD, 2**31 - 1),
    (M_TOP_PAD, 2**28),
)


def _glibc():
  if platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc':
    return None
  try:
    return ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
  except OSError:
    return None


def reuse_freed_memory() -> bool:
  """Applies `SETTINGS` with glibc's mallopt; True when every setting was accepted."""
  libc = _glibc()
  if libc is None or not hasattr(libc, 'mallopt'):
    return False
  return all(libc.mallopt(param, value) == 1 for param, value in SETTINGS)
