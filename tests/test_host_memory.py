"""host_memory.reuse_freed_memory: freed large blocks are reused without new page faults, and the
setting applies only where the CPU backend will run (judged without initialising a JAX backend)."""
import os
import platform
import subprocess
import sys
import textwrap

import pytest

from intermix_jax import host_memory

HOST_MEMORY = host_memory.__file__
GLIBC = platform.system() == 'Linux' and platform.libc_ver()[0] == 'glibc'

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


def _env(**overrides):
  env = {k: v for k, v in os.environ.items()
         if k not in ('JAX_PLATFORMS', 'JAX_PLATFORM_NAME', 'PJRT_NAMES_AND_LIBRARY_PATHS',
                      'TPU_LIBRARY_PATH')}
  env.update(overrides)
  return env


def _faults(mode: str):
  out = subprocess.run([sys.executable, '-c', _PROBE, mode], capture_output=True, text=True,
                       check=True, env=_env(JAX_PLATFORMS='cpu')).stdout.split()
  return out[0], int(out[1])


@pytest.mark.skipif(not GLIBC, reason='mallopt is glibc-only; elsewhere reuse_freed_memory() is a no-op')
def test_reused_block_costs_no_page_faults():
  pages = (256 << 20) // 4096
  _, without = _faults('off')
  applied, with_reuse = _faults('on')
  assert applied == 'True'
  # glibc default: the 256 MiB block is mmap'd afresh on every malloc, every page faults again.
  assert without > pages // 2, without
  # with the setting, the third block reuses the freed heap: (almost) no new faults.
  assert with_reuse < pages // 50, with_reuse


# host_memory.py loaded on its own (as the first thing a program runs: JAX not imported yet).
_RULE_PROBE = textwrap.dedent("""
    import importlib.util, sys
    spec = importlib.util.spec_from_file_location('host_memory', sys.argv[1])
    hm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hm)
    print(hm.cpu_backend_expected(), hm.reuse_freed_memory(), 'jax' in sys.modules)
""")


def _rule(tmp_path, plugin=False, **env):
  pythonpath = [os.environ.get('PYTHONPATH', '')]
  if plugin:  # a GPU plugin as jax-cuda12-plugin installs it: a module of the jax_plugins namespace
    (tmp_path / 'jax_plugins' / 'fake_accelerator').mkdir(parents=True, exist_ok=True)
    (tmp_path / 'jax_plugins' / 'fake_accelerator' / '__init__.py').write_text('')
    pythonpath.insert(0, str(tmp_path))
  out = subprocess.run([sys.executable, '-c', _RULE_PROBE, HOST_MEMORY], capture_output=True,
                       text=True, check=True,
                       env=_env(PYTHONPATH=os.pathsep.join(p for p in pythonpath if p), **env))
  expected, applied, jax_imported = out.stdout.split()
  assert jax_imported == 'False'        # judged without importing (let alone starting) JAX
  assert applied == str(expected == 'True' and GLIBC)  # applied exactly where the CPU is expected
  return expected == 'True'


@pytest.mark.parametrize('env,plugin,cpu', [
    (dict(JAX_PLATFORMS='cpu'), False, True),
    (dict(JAX_PLATFORMS='cuda'), False, False),
    (dict(JAX_PLATFORMS='tpu,cpu'), False, False),     # the first platform listed is the default
    (dict(JAX_PLATFORMS='cpu,cuda'), True, True),
    (dict(), True, False),                             # a GPU/TPU plugin installed: not the CPU
    (dict(JAX_PLATFORMS='cpu'), True, True),           # ... unless the CPU is asked for
    (dict(JAX_PLATFORM_NAME='cpu'), True, True),       # (also by the deprecated name)
    (dict(JAX_PLATFORM_NAME='gpu'), False, False),
    (dict(PJRT_NAMES_AND_LIBRARY_PATHS='fake:/nonexistent.so'), False, False),
])
def test_applies_only_where_the_cpu_backend_will_run(tmp_path, env, plugin, cpu):
  assert _rule(tmp_path, plugin, **env) == cpu


def test_prediction_never_says_cpu_where_jax_then_uses_an_accelerator():
  """The rule's guess before JAX starts vs the backend JAX then picks, here (CPU or accelerator).
  It may only err towards 'not CPU' (a plugin installed on a host without its device)."""
  probe = textwrap.dedent("""
      from intermix_jax import host_memory
      from jax._src import xla_bridge
      guess = host_memory.cpu_backend_expected()
      started = xla_bridge.backends_are_initialized()
      import jax
      print(guess, started, jax.default_backend() == 'cpu', host_memory.cpu_backend_expected())
  """)
  out = subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True, check=True,
                       env=_env()).stdout.split()
  guess, started, actual, after = (v == 'True' for v in out)
  assert not started                    # the guess started no backend
  assert actual or not guess
  assert after == actual                # once a backend runs, the answer is exact
