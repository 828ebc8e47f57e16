"""host_memory.reuse_freed_memory: freed large blocks are reused without new page faults."""
import platform
import subprocess
import sys
import textwrap

import pytest

from intermix_jax import host_memory

_PROBE = textwrap.dedent("""
    import ctypes, resource, sys
    from intermix_jax import host_memory
    applied = host_memory.reuse_freed_memory() if sys.argv[1] == 'on' else None
    libc = ctypes.CDLL('libc.so.6')
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    size = 256 << 20
    faults = []
    for _ in range(3):
      before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
      block = libc.malloc(size)
      ctypes.memset(block, 1, size)   # touch every page, as XLA's temporaries are
      libc.free(block)
      faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(applied, faults[-1])
""")


def _faults(mode: str):
  out = subprocess.run([sys.executable, '-c', _PROBE, mode], capture_output=True, text=True,
                       check=True).stdout.split()
  return out[0], int(out[1])


@pytest.mark.skipif(platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc',
                    reason='mallopt is glibc-only; elsewhere reuse_freed_memory() is a no-op')
def test_reused_block_costs_no_page_faults():
  pages = (256 << 20) // 4096
  _, without = _faults('off')
  applied, with_reuse = _faults('on')
  assert applied == 'True'
  # glibc default: the 256 MiB block is mmap'd afresh on every malloc, every page faults again.
  assert without > pages // 2, without
  # with the setting, the third block reuses the freed heap: (almost) no new faults.
  assert with_reuse < pages // 50, with_reuse

