"""Data parallelism over a device mesh: batch placement and per-device mixing.

The trainer runs its steps under `jax.jit` over a one-axis mesh ('data') spanning every device of
every process. The batch is sharded on its leading axis; parameters, optimiser state and batch
statistics are replicated. The compiler (GSPMD) then inserts the collectives itself:

  - Gradients: the loss is a mean over the *global* batch, so its gradient is already the global
    average; jit all-reduces the per-device partial sums. Never add a `pmean` of the gradients on
    top (with `shard_map(check_vma=True)` that gives gradients `num_devices` times too large).
  - BatchNorm: flax's batch mean/variance over axis 0 of a sharded activation is a global
    reduction, i.e. *synchronised* BatchNorm: the statistics (and `batch_stats`) are those of the
    global batch, identical to a 1-device run on the same batch. This is the project's choice: it
    keeps results independent of the device count (tests/test_parallel.py checks it).
  - Mixing (`shard_strategy`) runs per device inside `jax.shard_map` on the local shard: pairs
    (2k, 2k+1) never cross devices, and each device draws its own plan from the step key folded with
    its index along 'data' (no cross-device traffic). On a 1-device mesh the plan is drawn from the
    step key itself: exactly the unwrapped strategy's draw.
  - Dropout masks come from the global key; with `jax_threefry_partitionable` (default) they do not
    depend on the sharding.

The trainer's use, on any number of devices, one included (steps.mesh_train_step does the first
two lines; see docs/scaling.md):

    mesh = parallel.make_mesh()
    strategy = parallel.shard_strategy(mixing.get_strategy(...), mesh)
    step = steps.jit_train_step(steps.make_train_step(model, strategy, tx, num_classes),
                                **parallel.train_step_shardings(mesh))
    state = parallel.replicate(jax.device_get(state), mesh)
    key = parallel.replicate(key, mesh)
    state, metrics = step(state, parallel.host_batch_to_global(host_batch, mesh, pairs=True), key)
"""
import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'


# --- mesh and shardings -------------------------------------------------------------------------

def make_mesh(num_devices: int | None = None, devices=None) -> Mesh:
  """A one-axis mesh ('data') over `num_devices` devices (default: all global devices).

  The axis type is `Auto` (the compiler propagates shardings through the model), not jax's default
  `Explicit`, so models need no sharding annotations.

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


def mesh_process_count(mesh: Mesh) -> int:
  """How many processes own devices of the mesh."""
  return len({d.process_index for d in mesh.devices.flat})


def per_process_batch_size(global_batch_size: int, mesh: Mesh, *, pairs: bool = False) -> int:
  """Rows each process loads so that the processes together make a global batch.

  Raises:
    config_lib.ConfigError (a ValueError): naming `batch_size` if the global batch cannot be cut
      into equal per-device shards (of whole pairs when `pairs`): the one batch rule,
      `config_lib.check_batch_split`.
  """
  from intermix_jax import config_lib  # pylint: disable=g-import-not-at-top
  config_lib.check_batch_split(global_batch_size, pairs=pairs, devices=num_shards(mesh),
                               processes=mesh_process_count(mesh))
  return global_batch_size // mesh_process_count(mesh)


def train_step_shardings(mesh: Mesh, *, runs: bool = False) -> dict:
  """jit shardings for `step(state, batch, key) -> (state, metrics)`: state, key and metrics
  replicated, every batch array sharded on its batch axis (`batch_sharding`; `runs`: K stacked
  runs). Use as `steps.jit_train_step(fn, **parallel.train_step_shardings(mesh))`."""
  repl = replicated_sharding(mesh)
  return dict(in_shardings=(repl, batch_sharding(mesh, runs=runs), repl),
              out_shardings=(repl, repl))


def eval_step_shardings(mesh: Mesh, *, runs: bool = False) -> dict:
  """jit in_shardings for `step(state, batch) -> outputs`: state replicated, batch sharded on its
  clip axis (`batch_sharding`); outputs follow the compiler (fetch them with `global_to_host`)."""
  return dict(in_shardings=(replicated_sharding(mesh), batch_sharding(mesh, runs=runs)))


# --- host <-> global arrays ---------------------------------------------------------------------

def check_local_rows(r: int, mesh: Mesh, *, pairs: bool, who: str) -> None:
  """ValueError (naming `who`) unless this process's `r` rows split evenly over its local devices,
  into whole pairs per device when `pairs` (a mixing batch)."""
  local = len(mesh.local_devices)
  if r % local:
    raise ValueError(f'{who}: this process has {r} rows, not a multiple of its {local} local '
                     f'devices: set batch_size to a multiple of {num_shards(mesh)}')
  if pairs and (r // local) % 2:
    raise ValueError(f'{who}: a mixing batch needs whole pairs on each device, but {r} rows / '
                     f'{local} local devices = {r // local} rows per device (odd): set batch_size '
                     f'to a multiple of {2 * num_shards(mesh)}')


def host_batch_to_global(batch: Any, mesh: Mesh, *, pairs: bool = False,
                         runs: bool = False) -> Any:
  """This process's numpy batch -> global jax.Arrays sharded over 'data'.

  Every process calls this with its own rows (same row count on every process); the global batch
  is the concatenation over processes in process order (the order of `mesh.devices`).

  Args:
    batch: pytree of arrays with a common leading axis of R rows (this process's share); with
      `runs`, K such pytrees (a list) or their stack (leaves (K, R, ...)): one batch per run.
    mesh: mesh from `make_mesh`.
    pairs: True for a mixing batch: each device's shard must then hold whole pairs (an even number
      of rows), so that rows (2k, 2k+1) stay on one device.
    runs: the batch has a leading run axis (K runs in one program, multirun.py).
  Returns:
    Same pytree of jax.Arrays with the row axis R * (number of processes),
    `batch_sharding(mesh, runs=runs)`.
  Raises:
    ValueError: if R differs between leaves (or runs), is not a multiple of the local device
      count, or (with `pairs`) gives a device an odd number of rows.
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
  check_local_rows(r, mesh, pairs=pairs, who='host_batch_to_global')
  sharding = batch_sharding(mesh, runs=runs)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Host values (numpy or fully addressable jax.Arrays, same on every process) -> replicated arrays.

  Typed PRNG keys keep their type. For large models, prefer creating the state directly replicated:
  `jax.jit(init_fn, out_shardings=replicated_sharding(mesh))`.
  """
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

@jax.tree_util.register_pytree_node_class
class ShardedPlan:
  """A mixing plan drawn per device, as one global pytree.

  `plan` has the structure of the wrapped strategy's plan: per-row fields (r, phi, ...) keep their
  shape with the global batch as leading axis (device d holds rows [d*b, (d+1)*b)); per-step fields
  (layer, ...) gain a leading device axis, e.g. `layer` has shape (num_devices,). Attribute access
  is forwarded: `sharded_plan.layer` is `sharded_plan.plan.layer`.
  Static: `batch_leaves` (which leaves of `plan` are per-row) and `num_devices`.
  """

  def __init__(self, plan, batch_leaves: tuple[bool, ...], num_devices: int):
    self.plan = plan
    self.batch_leaves = batch_leaves
    self.num_devices = num_devices

  def tree_flatten(self):
    return (self.plan,), (self.batch_leaves, self.num_devices)

  @classmethod
  def tree_unflatten(cls, aux, children):
    return cls(children[0], *aux)

  def __getattr__(self, name):
    if name in ('plan', 'batch_leaves', 'num_devices') or name.startswith('__'):
      raise AttributeError(name)
    return getattr(self.plan, name)

  def device_plan(self, device_index: int):
    """The plan device `device_index` used (what the unwrapped strategy saw there)."""
    if not 0 <= device_index < self.num_devices:
      raise IndexError(f'device_index {device_index} not in [0, {self.num_devices})')
    leaves, treedef = jax.tree.flatten(self.plan)
    out = []
    for x, is_b in zip(leaves, self.batch_leaves):
      if is_b:
        b = x.shape[0] // self.num_devices
        out.append(x[device_index * b:(device_index + 1) * b])
      else:
        out.append(x[device_index])
    return jax.tree.unflatten(treedef, out)

  def __repr__(self):
    return f'ShardedPlan({self.plan!r}, num_devices={self.num_devices})'


@dataclasses.dataclass(frozen=True)
class ShardedStrategy:
  """A mixing Strategy run per device inside `jax.shard_map` (same interface as the wrapped one).

  - `plan(key, batch_size, K)`: device d draws `strategy.plan(fold_in(key, d), batch_size / n, K)`
    on its own (n > 1 devices on 'data'); returns a `ShardedPlan`. On a 1-device mesh the key is
    not folded: the plan is the unwrapped `strategy.plan(key, batch_size, K)` (so a 1-device run
    draws what the unwrapped strategy draws).
  - `prepare_input`, `mixer`, `targets`: the wrapped functions applied to each device's shard with
    that device's plan; no cross-device communication.
  - `loss`: the wrapped loss on the global arrays (a mean over the global batch, so jit's gradient
    is the global average).
  Other attributes (`name`, `mixes`, options) are forwarded to the wrapped strategy. Hashable
  (static under jit) if the wrapped strategy is.
  """
  strategy: Any
  mesh: Mesh
  check_vma: bool = True

  def __getattr__(self, name):
    if name in ('strategy', 'mesh', 'check_vma') or name.startswith('__'):
      raise AttributeError(name)
    return getattr(self.strategy, name)

  @property
  def name(self) -> str:
    return self.strategy.name

  @property
  def mixes(self) -> bool:
    return self.strategy.mixes

  @property
  def num_devices(self) -> int:
    return num_shards(self.mesh)

  def _shard_map(self, f, in_specs, out_specs):
    return jax.shard_map(f, mesh=self.mesh, in_specs=in_specs, out_specs=out_specs,
                         check_vma=self.check_vma)

  def rows_per_device(self, batch_size: int) -> int:
    n = self.num_devices
    if batch_size % n:
      raise ValueError(f'{self.name}: global batch of {batch_size} rows does not split over {n} '
                       f'devices; set batch_size to a multiple of {2 * n if self.mixes else n}')
    b = batch_size // n
    if self.mixes and b % 2:
      raise ValueError(f'{self.name}: {batch_size} rows / {n} devices = {b} rows per device (odd): '
                       f'each device must hold whole pairs; set batch_size to a multiple of {2 * n}')
    return b

  def plan(self, key: jax.Array, batch_size: int, num_mix_points: int) -> ShardedPlan:
    """Per-device plans for a global batch of `batch_size` rows (see class docstring)."""
    b = self.rows_per_device(batch_size)
    batch_leaves = _batch_leaf_mask(self.strategy, key, b, num_mix_points)

    def local(k):
      if self.num_devices > 1:
        k = jax.random.fold_in(k, jax.lax.axis_index(DATA_AXIS))
      p = self.strategy.plan(k, b, num_mix_points)
      leaves, treedef = jax.tree.flatten(p)
      leaves = [x if is_b else jnp.asarray(x)[None] for x, is_b in zip(leaves, batch_leaves)]
      return jax.tree.unflatten(treedef, leaves)

    if not batch_leaves:  # a plan without arrays (nothing to shard)
      k = jax.random.fold_in(key, 0) if self.num_devices > 1 else key
      return ShardedPlan(self.strategy.plan(k, b, num_mix_points), (), self.num_devices)
    plan = self._shard_map(local, in_specs=P(), out_specs=P(DATA_AXIS))(key)
    return ShardedPlan(plan, batch_leaves, self.num_devices)

  def _local(self, plan_shard, batch_leaves):
    leaves, treedef = jax.tree.flatten(plan_shard)
    return jax.tree.unflatten(
        treedef, [x if is_b else x[0] for x, is_b in zip(leaves, batch_leaves)])

  def _per_device(self, fn: Callable, plan: ShardedPlan, *arrays):
    """Runs fn(device_plan, *device_shards) on every device; arrays sharded on their batch axis."""
    if not isinstance(plan, ShardedPlan):
      raise TypeError(f'{self.name}: expected the ShardedPlan returned by this sharded strategy\'s '
                      f'plan(), got {type(plan).__name__}')
    batch_leaves = plan.batch_leaves
    if not batch_leaves:
      return fn(plan.plan, *arrays)

    def local(p, *xs):
      return fn(self._local(p, batch_leaves), *xs)

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

  def loss(self, logits: jax.Array, targets: jax.Array, *args, **kwargs) -> jax.Array:
    """Scalar: the wrapped loss over the global batch (no per-device averaging); extra arguments
    (e.g. a row mask) are passed through."""
    return self.strategy.loss(logits, targets, *args, **kwargs)


def _batch_leaf_mask(strategy, key, b: int, num_mix_points: int) -> tuple[bool, ...]:
  """Which leaves of strategy.plan(...) have the batch as leading axis (found by varying b)."""
  def shapes(rows):
    out = jax.eval_shape(lambda k: strategy.plan(k, rows, num_mix_points), key)
    return [tuple(x.shape) for x in jax.tree.leaves(out)]
  s1, s2 = shapes(b), shapes(b + 2)
  if len(s1) != len(s2):
    raise ValueError(f'{strategy.name}: plan structure depends on the batch size')
  mask = []
  for a, c in zip(s1, s2):
    if a == c:
      mask.append(False)
    elif len(a) >= 1 and a[0] == b and c[0] == b + 2 and a[1:] == c[1:]:
      mask.append(True)
    else:
      raise ValueError(f'{strategy.name}: plan field of shape {a} (batch {b}) is neither per-row '
                       'nor per-step')
  return tuple(mask)


def shard_strategy(strategy, mesh: Mesh, *, check_vma: bool = True) -> ShardedStrategy:
  """Wraps a mixing Strategy so that its plan and mixing run per device on `mesh` (see
  `ShardedStrategy`). Wrapping twice is a no-op."""
  if isinstance(strategy, ShardedStrategy):
    if strategy.mesh != mesh:
      raise ValueError('shard_strategy: strategy is already sharded over another mesh')
    return strategy
  return ShardedStrategy(strategy, mesh, check_vma)
