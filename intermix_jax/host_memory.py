"""Host allocator setting for XLA:CPU: keep freed memory in the process instead of unmapping it.

Why: on the CPU backend every execution of a compiled step allocates its temporaries (about 1.2 GB
for an EnvNet step at batch 32, more for EnvNet-v2) with malloc and frees them at the end. glibc
serves any allocation above its mmap threshold (at most 32 MiB) with fresh `mmap` pages and returns
them with `munmap` on free, so each step page-faults and the kernel zero-fills every page again.
Measured on 2 AMD EPYC cores (jaxlib 0.10.2, the trainer's EnvNet step at batch 32, 6 steps):
310 k minor page faults and 0.6 s of kernel CPU time per step; with `reuse_freed_memory()` none
(0 - 50 k, depending on how the heap fragments) and the median step went from 1.36 s to 1.16 s.
The price is resident memory: that process peaked at 3.4 GB instead of 2.2 GB, because the heap
keeps its high-water mark (and some fragmentation) instead of returning it between steps.

What it does (glibc `mallopt`, process-wide, for allocations made after the call):
  M_ARENA_MAX = 1          every thread allocates from the main heap (a thread arena is at most
                           64 MiB and would fall back to mmap for large blocks);
  M_MMAP_MAX = 0           no allocation is served by mmap;
  M_TRIM_THRESHOLD = -1    (SIZE_MAX) freed memory at the top of the heap is never trimmed
                           (with 2 GiB, an EnvNet-v2 step at batch 32 still faulted 2 GB a step);
  M_TOP_PAD = 256 MiB      the heap grows in large steps.
benchmarks/steps.py measures a whole training run's peak resident memory with the setting.

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
    (M_TRIM_THRESHOLD, -1),
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
