"""Data parallelism over a device mesh: batch placement and per-device mixing.

One mesh axis ('data') over every device of every process: batches are sharded on their batch
axis, the state and keys replicated, and jit (GSPMD) inserts the collectives (the gradient
all-reduce, synchronised BatchNorm statistics); the mixing runs per device (`shard_strategy`). Why
and what it guarantees: docs/scaling.md. The trainer's use: steps.py's docstring.
"""
import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'


# --- mesh and shardings -------------------------------------------------------------------------

def make_mesh(num_devices: int | None = None, devices=None) -> Mesh:
  """A one-axis mesh ('data', axis type `Auto`: models need no sharding annotations).

  Args:
    num_devices: how many devices to use (the first ones of `jax.devices()`); None = all.
      In a multi-process job it must be all of them.
    devices: explicit device list (overrides num_devices).
  """
  if devices is None:
    all_devices = jax.devices()
    if num_devices is None:
      num_devices = len(all_devices)
    if not 1 <= num_devices <= len(all_devices):
      raise ValueError(f'make_mesh: num_devices={num_devices} but {len(all_devices)} devices are '
                       f'available ({all_devices[0].platform})')
    if jax.process_count() > 1 and num_devices != len(all_devices):
      raise ValueError(f'make_mesh: a multi-process job must use every device '
                       f'({len(all_devices)}), got num_devices={num_devices}')
    devices = all_devices[:num_devices]
  return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=devices)


def batch_sharding(mesh: Mesh, *, runs: bool = False) -> NamedSharding:
  """Batch axis split over 'data', other axes whole: the leading axis, or with `runs` axis 1
  behind a run axis kept whole on every device (K runs in one program, multirun.py)."""
  return NamedSharding(mesh, P(None, DATA_AXIS) if runs else P(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
  """A full copy on every device (parameters, optimiser state, batch_stats, keys, scalars)."""
  return NamedSharding(mesh, P())


def num_shards(mesh: Mesh) -> int:
  """Number of devices along 'data' (= how many pieces the global batch is cut into)."""
  return mesh.shape[DATA_AXIS]


def per_process_batch_size(global_batch_size: int, mesh: Mesh, *, pairs: bool = False) -> int:
  """Rows each process loads so that the processes together make a global batch.

  Raises:
    config_lib.ConfigError (a ValueError): naming `batch_size` (`config_lib.check_batch_split`).
  """
  from intermix_jax import config_lib  # pylint: disable=g-import-not-at-top
  processes = len({d.process_index for d in mesh.devices.flat})
  config_lib.check_batch_split(global_batch_size, pairs=pairs, devices=num_shards(mesh),
                               processes=processes)
  return global_batch_size // processes


def train_step_shardings(mesh: Mesh, *, runs: bool = False) -> dict:
  """jit shardings of `step(state, batch, key) -> (state, metrics)`: state, key and metrics
  replicated, every batch array sharded on its batch axis (`batch_sharding`)."""
  repl = replicated_sharding(mesh)
  return dict(in_shardings=(repl, batch_sharding(mesh, runs=runs), repl),
              out_shardings=(repl, repl))


def eval_step_shardings(mesh: Mesh, *, runs: bool = False) -> dict:
  """jit in_shardings of `step(state, batch) -> outputs`: state replicated, batch sharded on its
  clip axis (`batch_sharding`); outputs as the compiler places them."""
  return dict(in_shardings=(replicated_sharding(mesh), batch_sharding(mesh, runs=runs)))


# --- host <-> global arrays ---------------------------------------------------------------------

def _rows_per_device(rows: int, devices: int, mesh: Mesh, *, pairs: bool, who: str) -> int:
  """rows // devices; ValueError naming `who` and batch_size unless `rows` split evenly over
  `devices`, into whole pairs on each when `pairs` (a mixing batch)."""
  n = num_shards(mesh)
  if rows % devices:
    raise ValueError(f'{who}: {rows} rows do not split over {devices} devices; set batch_size to '
                     f'a multiple of {2 * n if pairs else n}')
  if pairs and (rows // devices) % 2:
    raise ValueError(f'{who}: {rows} rows / {devices} devices = {rows // devices} rows per device '
                     f'(odd): each device must hold whole pairs; set batch_size to a multiple of '
                     f'{2 * n}')
  return rows // devices


def host_batch_to_global(batch: Any, mesh: Mesh, *, pairs: bool = False,
                         runs: bool = False) -> Any:
  """This process's numpy batch -> global jax.Arrays sharded over 'data'.

  Every process calls this with its own R rows (the same R on every process); the global batch is
  their concatenation in process order.

  Args:
    batch: pytree of arrays with a common leading axis of R rows; with `runs`, K such pytrees (a
      list) or their stack (leaves (K, R, ...)), one batch per run (multirun.py).
    pairs: a mixing batch: each device must hold whole pairs (rows 2k, 2k+1).
  Returns:
    The pytree as jax.Arrays of R * (number of processes) rows, `batch_sharding(mesh, runs=runs)`.
  Raises:
    ValueError: R differs between leaves (or runs), or does not split over the local devices
      (into whole pairs with `pairs`).
  """
  if runs and isinstance(batch, (list, tuple)):
    batch = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *batch)
  leaves = jax.tree.leaves(batch)
  if not leaves:
    raise ValueError('host_batch_to_global: empty batch')
  axis = int(runs)
  rows = {np.shape(x)[:axis + 1] if np.ndim(x) > axis else None for x in leaves}
  if len(rows) != 1 or None in rows:
    shapes = jax.tree.map(np.shape, batch)
    raise ValueError(f'host_batch_to_global: every array needs the same leading '
                     f'{"(run, batch) axes" if runs else "(batch) axis"}; got shapes {shapes}')
  r = rows.pop()[axis]
  _rows_per_device(r, len(mesh.local_devices), mesh, pairs=pairs, who='host_batch_to_global')
  sharding = batch_sharding(mesh, runs=runs)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Host values (numpy or fully addressable jax.Arrays, same on every process) -> replicated
  arrays; typed PRNG keys keep their type."""
  sharding = replicated_sharding(mesh)

  def put(x):
    if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(put(jax.random.key_data(x)), impl=jax.random.key_impl(x))
    value = np.asarray(x)
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

  return jax.tree.map(put, tree)


def global_to_host(tree: Any) -> Any:
  """Global jax.Arrays -> full numpy arrays on every process (gathers across processes if needed)."""
  def get(x):
    if not isinstance(x, jax.Array) or x.is_fully_addressable or x.is_fully_replicated:
      return np.asarray(x)
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return jax.tree.map(get, tree)


# --- per-device mixing --------------------------------------------------------------------------

@functools.partial(jax.tree_util.register_dataclass, data_fields=['plan'],
                   meta_fields=['batch_leaves', 'num_devices'])
@dataclasses.dataclass(eq=False)
class ShardedPlan:
  """A mixing plan drawn per device, as one global pytree (attributes forwarded to `plan`).

  `plan`: the wrapped strategy's plan; per-row fields (r, phi, ...) keep the global batch as their
  leading axis, per-step fields (layer, ...) gain a leading device axis (num_devices,). Static:
  `batch_leaves` (which leaves of `plan` are per-row) and `num_devices`.
  """
  plan: Any
  batch_leaves: tuple[bool, ...]
  num_devices: int

  def __getattr__(self, name):
    if name in ('plan', 'batch_leaves', 'num_devices') or name.startswith('__'):
      raise AttributeError(name)
    return getattr(self.plan, name)

  def device_plan(self, device_index: int):
    """The plan device `device_index` used (what the unwrapped strategy saw there)."""
    if not 0 <= device_index < self.num_devices:
      raise IndexError(f'device_index {device_index} not in [0, {self.num_devices})')
    return _by_kind(self.plan, self.batch_leaves,
                    lambda x: x.reshape((self.num_devices, -1) + x.shape[1:])[device_index],
                    lambda x: x[device_index])


def _by_kind(plan, batch_leaves: tuple[bool, ...], per_row: Callable, per_step: Callable):
  """`plan` with per_row(x) on its per-row leaves and per_step(x) on the others."""
  leaves, treedef = jax.tree.flatten(plan)
  return jax.tree.unflatten(
      treedef, [per_row(x) if is_b else per_step(x) for x, is_b in zip(leaves, batch_leaves)])


@dataclasses.dataclass(frozen=True)
class ShardedStrategy:
  """A mixing Strategy run per device inside `jax.shard_map` (same interface as the wrapped one).

  - `plan(key, batch_size, K)`: device d draws `strategy.plan(fold_in(key, d), batch_size / n, K)`
    (n > 1 devices), as a `ShardedPlan`; on a 1-device mesh the key is not folded.
  - `prepare_input`, `mixer`, `targets`: the wrapped functions on each device's shard with that
    device's plan.
  Other attributes are forwarded to the wrapped strategy, `loss` too: the wrapped loss on the
  global arrays (no per-device averaging). Hashable if the wrapped strategy is.
  """
  strategy: Any
  mesh: Mesh
  check_vma: bool = True

  def __getattr__(self, name):
    if name in ('strategy', 'mesh', 'check_vma') or name.startswith('__'):
      raise AttributeError(name)
    return getattr(self.strategy, name)

  def _shard_map(self, f, in_specs, out_specs):
    return jax.shard_map(f, mesh=self.mesh, in_specs=in_specs, out_specs=out_specs,
                         check_vma=self.check_vma)

  def plan(self, key: jax.Array, batch_size: int, num_mix_points: int) -> ShardedPlan:
    """Per-device plans for a global batch of `batch_size` rows (see class docstring)."""
    n = num_shards(self.mesh)
    b = _rows_per_device(batch_size, n, self.mesh, pairs=self.mixes, who=self.name)

    def leaf_shapes(rows):
      plan = jax.eval_shape(lambda k: self.strategy.plan(k, rows, num_mix_points), key)
      return [tuple(x.shape) for x in jax.tree.leaves(plan)]

    # Which leaves of the plan are per-row (the batch as leading axis): found by varying b.
    shapes, batch_leaves = (leaf_shapes(b), leaf_shapes(b + 2)), ()
    if len(shapes[0]) != len(shapes[1]):
      raise ValueError(f'{self.name}: plan structure depends on the batch size')
    for s1, s2 in zip(*shapes):
      if s1 != s2 and not (len(s1) >= 1 and s1[0] == b and s2[0] == b + 2 and s1[1:] == s2[1:]):
        raise ValueError(f'{self.name}: plan field of shape {s1} (batch {b}) is neither per-row '
                         'nor per-step')
      batch_leaves += (s1 != s2,)

    def local(k):
      if n > 1:
        k = jax.random.fold_in(k, jax.lax.axis_index(DATA_AXIS))
      return _by_kind(self.strategy.plan(k, b, num_mix_points), batch_leaves, lambda x: x,
                      lambda x: jnp.asarray(x)[None])

    if not batch_leaves:  # a plan without arrays (nothing to shard)
      k = jax.random.fold_in(key, 0) if n > 1 else key
      return ShardedPlan(self.strategy.plan(k, b, num_mix_points), (), n)
    plan = self._shard_map(local, in_specs=P(), out_specs=P(DATA_AXIS))(key)
    return ShardedPlan(plan, batch_leaves, n)

  def _per_device(self, fn: Callable, plan: ShardedPlan, *arrays):
    """Runs fn(device_plan, *device_shards) on every device; arrays sharded on their batch axis."""
    if not isinstance(plan, ShardedPlan):
      raise TypeError(f'{self.name}: expected the ShardedPlan returned by this sharded strategy\'s '
                      f'plan(), got {type(plan).__name__}')
    if not plan.batch_leaves:
      return fn(plan.plan, *arrays)

    def local(p, *xs):
      return fn(_by_kind(p, plan.batch_leaves, lambda x: x, lambda x: x[0]), *xs)

    specs = (P(DATA_AXIS),) * (1 + len(arrays))
    return self._shard_map(local, in_specs=specs, out_specs=P(DATA_AXIS))(plan.plan, *arrays)

  def prepare_input(self, plan: ShardedPlan, x: jax.Array) -> jax.Array:
    """x: (N, T) global waveforms -> (N, T), each device with its own plan."""
    return self._per_device(self.strategy.prepare_input, plan, x)

  def mixer(self, plan: ShardedPlan, sample_rate: float) -> Callable[[jax.Array, int], jax.Array]:
    """(h, k) -> h (shape kept): device-local mixing at mix point k (a Python int)."""
    if not self.mixes:
      return lambda h, k: h

    def mix(h, k):
      return self._per_device(lambda p, hh: self.strategy.mixer(p, sample_rate)(hh, k), plan, h)
    return mix

  def targets(self, plan: ShardedPlan, labels_onehot: jax.Array) -> jax.Array:
    """(N, C) one-hot -> (N, C) soft targets."""
    return self._per_device(self.strategy.targets, plan, labels_onehot)


def shard_strategy(strategy, mesh: Mesh, *, check_vma: bool = True) -> ShardedStrategy:
  """Wraps a mixing Strategy so that its plan and mixing run per device on `mesh` (see
  `ShardedStrategy`). Wrapping twice is a no-op."""
  if isinstance(strategy, ShardedStrategy):
    if strategy.mesh != mesh:
      raise ValueError('shard_strategy: strategy is already sharded over another mesh')
    return strategy
  return ShardedStrategy(strategy, mesh, check_vma)
