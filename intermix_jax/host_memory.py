"""Host allocator setting for XLA:CPU: keep freed memory in the process instead of unmapping it.

`reuse_freed_memory()` applies `SETTINGS` with glibc's `mallopt` (process-wide, for allocations made
after the call): every thread on the main heap (M_ARENA_MAX 1), no mmap-served block (M_MMAP_MAX 0),
the heap never trimmed (M_TRIM_THRESHOLD -1), grown in 256 MiB steps (M_TOP_PAD), so a CPU step's
temporaries are not page-faulted and zero-filled anew each step, at the cost of resident memory
(the heap's high-water mark). Only where the CPU backend will run the steps
(`cpu_backend_expected`) and only with glibc; call it before JAX creates its thread pools.
Why and the numbers: docs/architecture.md "Speed on the CPU backend", benchmarks/README.md.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import importlib.metadata
import importlib.util
import os
import pkgutil
import platform
import sys

__all__ = ['reuse_freed_memory', 'cpu_backend_expected', 'SETTINGS']

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX, M_ARENA_MAX = -1, -2, -4, -8  # glibc's malloc.h
SETTINGS = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1), (M_TOP_PAD, 2**28))


def _jax_setting(name: str, env: str) -> str:
  """A JAX string option: from jax.config if JAX is already imported, else its environment
  variable (what jax.config will read at import). Lower case, stripped."""
  value = getattr(getattr(sys.modules.get('jax'), 'config', None), name, None)
  if value is None:
    value = os.environ.get(env, '')
  return str(value or '').strip().lower()


def _accelerator_plugin_installed() -> bool:
  """Whether JAX would find a GPU/TPU plugin: a module in the `jax_plugins` namespace package
  (jax-cuda*-plugin, jax-rocm*-plugin, ...), a `jax_plugins` entry point, a PJRT plugin named in
  PJRT_NAMES_AND_LIBRARY_PATHS, or libtpu. Nothing is imported but the namespace package."""
  if os.environ.get('PJRT_NAMES_AND_LIBRARY_PATHS') or os.environ.get('TPU_LIBRARY_PATH'):
    return True
  try:
    spec = importlib.util.find_spec('jax_plugins')
    plugin_dirs = list(spec.submodule_search_locations or []) if spec is not None else []
    return (importlib.util.find_spec('libtpu') is not None
            or any(pkgutil.iter_modules(plugin_dirs))
            or any(importlib.metadata.entry_points(group='jax_plugins')))
  except (ImportError, ValueError):
    return False


def cpu_backend_expected() -> bool:
  """Whether JAX's default backend is (or will be) the CPU, judged without initialising one: by
  the backend once JAX has one, else by the first platform of `jax_platforms` (jax.config or
  JAX_PLATFORMS), else by the deprecated `jax_platform_name`, else True iff no GPU/TPU plugin is
  installed. With a plugin JAX prefers the accelerator, so the answer is False even on a host
  without one (JAX then falls back to the CPU): set JAX_PLATFORMS=cpu there to get the setting."""
  jax = sys.modules.get('jax')
  if jax is not None:
    try:
      from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
      if xla_bridge.backends_are_initialized():
        return jax.default_backend() == 'cpu'
    except (ImportError, AttributeError):
      pass
  platforms = (_jax_setting('jax_platforms', 'JAX_PLATFORMS')
               or _jax_setting('jax_platform_name', 'JAX_PLATFORM_NAME'))  # a single name
  if platforms:
    return platforms.split(',')[0].strip() == 'cpu'
  return not _accelerator_plugin_installed()


def reuse_freed_memory() -> bool:
  """Applies `SETTINGS` as the module docstring says; True when every one was accepted, False
  when nothing was done (accelerator backend, not glibc) or glibc refused a setting."""
  if (not cpu_backend_expected() or platform.system() != 'Linux'
      or platform.libc_ver()[0] != 'glibc'):
    return False
  try:
    mallopt = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6').mallopt
  except (OSError, AttributeError):
    return False
  return all(mallopt(param, value) == 1 for param, value in SETTINGS)
