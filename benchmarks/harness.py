"""Build, time and cost a train step: the one module every benchmark measures through (and the
accelerator check, launch/device/).

  where it ran  load(), machine(), matmul_rate() (the MFU denominator)
  a step        train_step(), init_state(), place(), clear(): the ONLY calls of the trainer's step
                API (`steps.mesh_train_step`: one run, or K runs with `stack`), device_inputs();
                build() -> Step on a 1-device mesh with a state, a batch (rows 2i, 2i+1 of
                different classes) and a key, on the device or abstract; compile_step(): the
                abstract step compiled for any device (a deviceless GPU too), a variant forced
  its time      timed_steps() (each step waited for), loop_seconds() (back to back), finite()
  its cost      cost_of() (XLA's 'flops', 'bytes accessed'), memory_bytes() (buffer plan),
                hlo_bytes() / hlo_counts() (a compiled program's text), md_table()

The paper's optimiser (`PAPER_OPT`); strategy options at `config_lib.base_config()`'s defaults;
published size unless width / fc_units say otherwise.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import math
import os
import platform
import re
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from intermix_jax import config_lib, mixing, models, multirun, parallel, steps
from intermix_jax.models import accel_ops

# Nesterov 0.9, L2 5e-4, LR 0.01 decayed at 0.5 / 0.75 of 1200 epochs.
PAPER_OPT = steps.OptimizerSpec(lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4,
                                num_epochs=1200, steps_per_epoch=25, schedule=(0.5, 0.75),
                                warmup_epochs=0)


def load() -> str:
  """The 1, 5 and 15 minute load averages, e.g. '1.20 1.35 1.40'."""
  return ' '.join(f'{v:.2f}' for v in os.getloadavg())


def machine() -> str:
  """One line for a table's heading: CPU, device, versions, load."""
  cpu = platform.processor() or platform.machine()
  if os.path.exists('/proc/cpuinfo'):
    with open('/proc/cpuinfo') as f:
      cpu = next((l.split(':', 1)[1].strip() for l in f if l.startswith('model name')), cpu)
  return (f'{cpu}, {os.cpu_count()} cores; {jax.local_devices()[0].device_kind} '
          f'({jax.default_backend()}); python {platform.python_version()}, jax {jax.__version__}, '
          f'numpy {np.__version__}; load {load()}')


def matmul_rate(n: int = 4096, repeats: int = 3, dtype=jnp.float32) -> float:
  """Measured GFLOP/s of an n x n x n `jnp.dot` of `dtype` operands, under the caller's matmul
  precision: best of `repeats` after one warm-up."""
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  b = jax.random.normal(jax.random.key(1), (n, n), dtype)
  f, best = jax.jit(jnp.dot), float('inf')
  for i in range(repeats + 1):  # the first one compiles: a warm-up
    start = time.perf_counter()
    jax.block_until_ready(f(a, b))
    best = min(best, time.perf_counter() - start) if i else best
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


def train_step(model, strategy, mesh, runs: int | None = None, method: str = 'vmap',
               opt=PAPER_OPT, num_classes: int = 50):
  """The trainer's jitted step fn(state, data, key): one run (runs None) or K runs (`method`)."""
  return steps.mesh_train_step(model, strategy, opt, num_classes, mesh,
                               stack=None if runs is None else method)


def init_state(model, mesh, runs: int | None = None, seed: int = 1, opt=PAPER_OPT,
               abstract: bool = False):
  """The state of one run or of `runs` stacked runs on `mesh` (`abstract`: shapes only)."""
  if abstract:
    one = steps.abstract_state(model, opt, mesh)
    return one if runs is None else jax.tree.map(
        lambda s: jax.ShapeDtypeStruct((runs,) + s.shape, s.dtype), one)
  init = steps.state_initializer(model, opt, mesh)
  if runs is None:
    return init(jax.random.key(seed))
  return multirun.stack_on_mesh([init(k) for k in jax.random.split(jax.random.key(seed), runs)],
                                mesh)


def place(host: dict, mesh, strategy, runs: int | None = None):
  """A host batch as the trainer places it on `mesh` (one run, or K stacked runs)."""
  return parallel.host_batch_to_global(host, mesh, pairs=strategy.mixes, runs=runs is not None)


def device_inputs(loaders, mesh, pairs: bool, runs: bool):
  """config.data_on_device's inputs of `loaders` as the trainer builds them (data/on_device.py)."""
  from intermix_jax.data import on_device  # pylint: disable=g-import-not-at-top
  place = functools.partial(parallel.host_batch_to_global, mesh=mesh, pairs=pairs, runs=runs)
  return on_device.device_inputs(loaders, mesh, place=place, replicate=parallel.replicate,
                                 stacked=runs)


def clear() -> None:
  """Drops every jitted step and compiled program of this process (one process measures dozens:
  XLA's CPU backend ran out of memory for code at the 23rd otherwise)."""
  steps._JITTED.clear()  # pylint: disable=protected-access
  jax.clear_caches()


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

  def lower(self):  # then .compile()
    return self.fn.lower(self.state, self.data, self.key)


def build(backbone: str, strategy: str = 'intermix', runs: int | None = None, *, batch: int = 64,
          method: str = 'vmap', width: float = 1.0, fc_units: int | None = None,
          precision: str = 'float32', num_classes: int = 50, opt=PAPER_OPT, device=None,
          abstract: bool = False) -> Step:
  """The one-run step (runs None) or the K-run step of `method` on a 1-device mesh (`device`, or
  this process's first), `batch` rows per run; `abstract`: its arguments as shapes only."""
  model, strat = model_and_strategy(backbone, strategy, width=width, fc_units=fc_units,
                                    precision=precision, num_classes=num_classes)
  mesh = parallel.make_mesh(1) if device is None else parallel.make_mesh(devices=[device])
  fn = train_step(model, strat, mesh, runs, method, opt, num_classes)
  lead = () if runs is None else (runs,)
  state = init_state(model, mesh, runs, opt=opt, abstract=abstract)
  if abstract:
    data = dict(x=jax.ShapeDtypeStruct(lead + (batch, model.input_length), jnp.float32),
                y=jax.ShapeDtypeStruct(lead + (batch,), jnp.int32))
    key = jax.ShapeDtypeStruct(lead, jax.random.key(0).dtype)
  else:
    data = place(host_batch(model, batch, runs, num_classes), mesh, strat, runs)
    keys = jax.random.key(0) if runs is None else jax.random.split(jax.random.key(0), runs)
    key = parallel.replicate(keys, mesh)
  return Step(fn, state, data, key, model, strat, mesh)


def compile_step(backbone: str, runs: int | None = None, *, variant: str | None = None,
                 **options):
  """(lowered, compiled) of `build(backbone, runs=runs, abstract=True, **options)`, nothing run:
  the accelerator's program (`cpu_ops.force('plain')`) whatever this backend; `variant`: that
  `accel_ops` variant forced (else `accel_ops.variant()`'s)."""
  clear()  # a fresh jitted function: the convolution path is chosen when it is traced
  with models.cpu_ops.force('plain'), (
      accel_ops.force(variant) if variant else contextlib.nullcontext()):
    lowered = build(backbone, runs=runs, abstract=True, **options).lower()
    compiled = lowered.compile()
  clear()
  return lowered, compiled


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
    total = collections.Counter()
    executable = compiled._executable.xla_extension_executable()  # pylint: disable=protected-access
    for module in executable.hlo_modules():
      total.update(_jax.hlo_module_cost_analysis(xla_bridge.get_backend('cpu'), module))
    return dict(total)
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


_DTYPE_BYTES = dict(pred=1, s8=1, u8=1, bf16=2, f16=2, s16=2, u16=2, f32=4, s32=4, u32=4, f64=8,
                    s64=8, u64=8, c64=8, c128=16)
_INSTRUCTION = re.compile(r'^\s*(?:ROOT )?%?([\w.\-]+) = (\(.*?\)|\w+\[[^\]]*\](?:\{[^}]*\})?) '
                          r'([\w\-]+)\((.*?)\)(.*)$')
_FREE = ('parameter', 'get-tuple-element', 'tuple', 'bitcast', 'constant')  # no memory traffic


def shape_bytes(shape: str) -> int:
  """Bytes of an HLO shape ('f32[64,5000]{1,0}', or a tuple of them)."""
  return sum(_DTYPE_BYTES.get(t, 4) * math.prod(int(d) for d in dims.split(',') if d.strip())
             for t, dims in re.findall(r'(\w+)\[([^\]]*)\]', shape))


def hlo_instructions(hlo: str, entry_only: bool = True):
  """(name, shape, opcode, operand names, rest of the line) of each instruction of an HLO module's
  ENTRY computation (`entry_only`) or of all of them; parameters of ENTRY's header first."""
  entry = hlo[hlo.index('\nENTRY'):]
  for m in re.finditer(r'([\w.\-]+): (\w+\[[^\]]*\])', entry[:entry.index('{\n')]):
    yield m.group(1), m.group(2), 'parameter', [], ''
  text = entry if entry_only else hlo
  for line in text.split('\n'):
    m = _INSTRUCTION.match(line)
    if m:
      name, shape, opcode, operands, rest = m.groups()
      yield name, shape, opcode, [o.strip().lstrip('%') for o in operands.split(',')], rest


def hlo_bytes(hlo: str) -> list[tuple]:
  """(bytes, output bytes, name, opcode, shape, op_name) of each instruction of the ENTRY
  computation of an optimised HLO module, largest first: operands + output, the traffic a kernel
  that reads each operand once and writes its output once moves (XLA's cost model, per kernel)."""
  sizes, rows = {}, []
  for name, shape, opcode, operands, rest in hlo_instructions(hlo):
    sizes[name] = out = shape_bytes(shape)
    if opcode not in _FREE:
      op = re.search(r'op_name="([^"]*)"', rest)
      rows.append((out + sum(sizes.get(o, 0) for o in operands), out, name, opcode, shape,
                   op.group(1) if op else ''))
  return sorted(rows, reverse=True)


def hlo_counts(text: str) -> dict:
  """The transpose and copy instructions of an HLO module's text (inside fusions too; copy-start
  counts as copy) and the MB of their outputs: {'transpose': n, 'copy': n, 'transpose_mb': MB,
  'copy_mb': MB}. Most are small (kernel relayouts, scalar RNG state); the MB say whether
  activations move."""
  counts = dict(transpose=0, copy=0, transpose_mb=0.0, copy_mb=0.0)
  pattern = r'= ([a-z]+[0-9]*\[[0-9,]*\])\S* (transpose|copy|copy-start)\('
  for shape, op in re.findall(pattern, text):
    kind = 'transpose' if op == 'transpose' else 'copy'
    counts[kind] += 1
    counts[kind + '_mb'] += shape_bytes(shape) / 1e6
  return dict(counts, transpose_mb=round(counts['transpose_mb'], 3),
              copy_mb=round(counts['copy_mb'], 3))


def md_table(head: list[str], rows: list[list]) -> str:
  """A markdown table: the header cells, then one line per row (each cell str()'d)."""
  return '\n'.join(['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
                   + ['| ' + ' | '.join(map(str, r)) + ' |' for r in rows])
