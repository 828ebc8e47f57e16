"""Build, time and cost a train step: the one module every benchmark measures through (and the
accelerator check, launch/device/).

  where it ran   cpu_name(), load(), machine(), matmul_rate() (the MFU denominator)
  a step         model_and_strategy(), build() -> Step: the trainer's one-run step
                 (`steps.mesh_train_step`, k None) or K-run step (`multirun.multi_train_step`) on
                 a 1-device mesh, with a state, a batch (rows 2i, 2i+1 of different classes) and a
                 key, on the device or abstract (shapes only: `compile_step`, for any device,
                 also a deviceless GPU)
  its time       timed_steps() (each step waited for), loop_seconds() (back to back, as the
                 trainer dispatches between two log steps), finite()
  its cost       cost_of() (XLA's cost analysis: 'flops', 'bytes accessed'), memory_bytes() (XLA's
                 buffer plan), clear() (drop every program before the next one)

Optimiser and schedule: the paper's (`PAPER_OPT`); strategy options at
`config_lib.base_config()`'s defaults; published size unless width / fc_units say otherwise.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from intermix_jax import config_lib, mixing, models, multirun, parallel, steps

# Nesterov 0.9, L2 5e-4, LR 0.01 decayed at 0.5 / 0.75 of 1200 epochs.
PAPER_OPT = steps.OptimizerSpec(lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4,
                                num_epochs=1200, steps_per_epoch=25, schedule=(0.5, 0.75),
                                warmup_epochs=0)


def cpu_name() -> str:
  """The CPU model from /proc/cpuinfo, else what `platform` knows."""
  try:
    with open('/proc/cpuinfo') as f:
      return next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
  except (OSError, StopIteration):
    return platform.processor() or platform.machine()


def load() -> str:
  """The 1, 5 and 15 minute load averages, e.g. '1.20 1.35 1.40'."""
  return ' '.join(f'{v:.2f}' for v in os.getloadavg())


def machine() -> str:
  """One line for a table's heading: CPU, device, versions, load."""
  return (f'{cpu_name()}, {os.cpu_count()} cores; {jax.local_devices()[0].device_kind} '
          f'({jax.default_backend()}); python {platform.python_version()}, jax {jax.__version__}, '
          f'numpy {np.__version__}; load {load()}')


def matmul_rate(n: int = 4096, repeats: int = 3, dtype=jnp.float32) -> float:
  """Measured GFLOP/s of an n x n x n `jnp.dot` of `dtype` operands, under the caller's matmul
  precision: best of `repeats` after one warm-up."""
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


def model_and_strategy(backbone: str, strategy: str = 'intermix', *, width: float = 1.0,
                       fc_units: int | None = None, precision: str = 'float32',
                       num_classes: int = 50):
  options = dict(width=width, precision=precision)
  if fc_units:
    options['fc_units'] = fc_units
  config = config_lib.base_config()
  config.strategy = strategy
  return models.get_model(backbone, num_classes, **options), mixing.build_strategy(config)


def host_batch(model, batch: int, runs: int | None = None, num_classes: int = 50,
               seed: int = 0) -> dict:
  """numpy dict(x (runs,) + (batch, T) float32 noise, y labels i % num_classes)."""
  lead = () if runs is None else (runs,)
  x = 0.1 * np.random.default_rng(seed).standard_normal(lead + (batch, model.input_length))
  y = np.broadcast_to(np.arange(batch) % num_classes, lead + (batch,))
  return dict(x=x.astype(np.float32), y=y.astype(np.int32))


def place(host: dict, mesh, strategy, runs: int | None = None):
  """A host batch as the trainer places it on `mesh` (one run, or K stacked runs)."""
  if runs is None:
    return parallel.host_batch_to_global(host, mesh, pairs=strategy.mixes)
  return multirun.host_batches_to_global(host, mesh, pairs=strategy.mixes)


@dataclasses.dataclass
class Step:
  """fn(state, data, key) -> (state, metrics), with its arguments (the state is donated)."""
  fn: Any
  state: Any
  data: Any
  key: Any
  model: Any
  strategy: Any
  mesh: Any
  runs: int | None

  def compile(self):
    return self.fn.lower(self.state, self.data, self.key).compile()


def build(backbone: str, strategy: str = 'intermix', runs: int | None = None, *, batch: int = 64,
          method: str = 'vmap', width: float = 1.0, fc_units: int | None = None,
          precision: str = 'float32', num_classes: int = 50, opt=PAPER_OPT, device=None,
          abstract: bool = False) -> Step:
  """The one-run step (runs None) or the K-run step of `method` on a 1-device mesh (`device`, or
  this process's first), `batch` rows per run; `abstract`: its arguments as shapes only."""
  model, strat = model_and_strategy(backbone, strategy, width=width, fc_units=fc_units,
                                    precision=precision, num_classes=num_classes)
  mesh = parallel.make_mesh(1) if device is None else parallel.make_mesh(devices=[device])
  if runs is None:
    fn = steps.mesh_train_step(model, strat, opt, num_classes, mesh)
  else:
    fn = multirun.multi_train_step(model, strat, opt, num_classes, mesh, method=method)
  lead = () if runs is None else (runs,)
  if abstract:
    one = steps.abstract_state(model, opt, mesh)
    state = one if runs is None else jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(lead + s.shape, s.dtype), one)
    data = dict(x=jax.ShapeDtypeStruct(lead + (batch, model.input_length), jnp.float32),
                y=jax.ShapeDtypeStruct(lead + (batch,), jnp.int32))
    key = jax.ShapeDtypeStruct(lead, jax.random.key(0).dtype)
  elif runs is None:
    state = steps.state_initializer(model, opt, mesh)(jax.random.key(1))
    key = parallel.replicate(jax.random.key(0), mesh)
  else:
    state = multirun.init_states(model, opt, mesh, list(jax.random.split(jax.random.key(1), runs)))
    key = multirun.replicate_runs(jax.random.split(jax.random.key(0), runs), mesh)
  if not abstract:
    data = place(host_batch(model, batch, runs, num_classes), mesh, strat, runs)
  return Step(fn, state, data, key, model, strat, mesh, runs)


def compile_step(backbone: str, runs: int | None = None, *, plain: bool = True, **options):
  """The compiled step of `build(backbone, runs=runs, abstract=True, **options)` (nothing run);
  `plain`: the accelerator's program (`cpu_ops.force('plain')`), whatever this backend."""
  clear()  # a fresh jitted function: the convolution path is chosen when it is traced
  with models.cpu_ops.force('plain') if plain else contextlib.nullcontext():
    compiled = build(backbone, runs=runs, abstract=True, **options).compile()
  clear()
  return compiled


def timed_steps(step: Step, n: int) -> list[float]:
  """Runs n steps, each waited for; their seconds (step.state advances)."""
  times = []
  for _ in range(n):
    start = time.perf_counter()
    step.state, metrics = step.fn(step.state, step.data, step.key)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  return times


def loop_seconds(step: Step, n: int, fn=None) -> tuple[float, dict]:
  """Seconds per step of n steps dispatched back to back (`fn`, e.g. the compiled step, else
  step.fn); the last metrics."""
  fn = fn or step.fn
  start = time.perf_counter()
  for _ in range(n):
    step.state, metrics = fn(step.state, step.data, step.key)
  jax.block_until_ready((step.state, metrics))
  return (time.perf_counter() - start) / n, metrics


def finite(metrics) -> bool:
  return bool(np.isfinite(np.asarray(jax.device_get(metrics['loss']))).all())


def cost_of(compiled) -> dict:
  """XLA's cost analysis of a `jax.stages.Lowered` or `Compiled` as one dict. A compile-only
  executable (deviceless GPU) has none through jax: then XLA's HloCostAnalysis over its optimised
  modules, as PJRT runs it on a GPU host. {} where neither is available."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  if cost or not hasattr(compiled, '_executable'):
    return cost or {}
  try:
    from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
    from jax._src.lib import _jax  # pylint: disable=g-import-not-at-top
    total = {}
    for module in compiled._executable.xla_extension_executable().hlo_modules():  # pylint: disable=protected-access
      for k, v in _jax.hlo_module_cost_analysis(xla_bridge.get_backend('cpu'), module).items():
        total[k] = total.get(k, 0.0) + v
    return total
  except Exception:  # pylint: disable=broad-except
    return {}


def memory_bytes(compiled) -> int | None:
  """Arguments + outputs + temporaries - aliased bytes of a compiled step (None if unknown)."""
  try:
    m = compiled.memory_analysis()
    return (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
            - m.alias_size_in_bytes)
  except Exception:  # pylint: disable=broad-except
    return None


def clear() -> None:
  """Drops every jitted step and compiled program of this process (one process measures dozens:
  XLA's CPU backend ran out of memory for code at the 23rd otherwise)."""
  multirun._JITTED.clear()  # pylint: disable=protected-access
  steps._JITTED.clear()  # pylint: disable=protected-access
  jax.clear_caches()
