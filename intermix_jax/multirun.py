"""Many runs in one program: K independent training runs (folds x seeds) as ONE step.

Every pytree here carries a leading *run axis* of size K in front of the shapes of one run. The
trainer's step builders take it as an option (`stack`, steps.py), so one run and K runs share every
line of the loop (train.py):

    mesh = parallel.make_mesh()
    init = steps.state_initializer(model, opt, mesh)
    states = stack_on_mesh([init(k) for k in init_keys], mesh)                # (K, ...) leaves
    keys = parallel.replicate(stack(train_keys), mesh)                       # (K,) typed keys
    train = steps.mesh_train_step(model, strategy, opt, num_classes, mesh, stack='vmap')
    batches = parallel.host_batch_to_global([batch_0, ...], mesh, pairs=True, runs=True)
    states, metrics = train(states, batches, keys)   # batches: x (K, N, T) float32, y (K, N) int32
                                                     # metrics: loss, error, lr, ... each (K,)
    evaluate = steps.mesh_eval_step(model, mesh, stack='vmap')
    out = evaluate(states, parallel.host_batch_to_global([eval_0, ...], mesh, runs=True))
                                                     # x (K, b, crops, T), y (K, b), mask (K, b)
    state_k = take_run(states, k, mesh)              # one run's TrainState again

Run k computes what `steps.mesh_train_step` computes for it alone: its own state, batch (so its own
data order) and key (so its own mixing plans and dropout masks: both come from
`fold_in(key_k, state_k.step)`). Runs never exchange values: the loss, the gradients, BatchNorm's
batch statistics, the non-finite test and the decision to apply an update are all per run (a NaN in
run k's batch leaves every other run's state exactly what it would be without it; run k's update is
skipped and counted in its own `nonfinite_count`, as steps.train_step does for a single run).

Two ways to put the K runs into one program (`stack=` of the step builders): 'vmap' maps the
one-run step over the run axis (one wide step); 'unroll' calls the one-run step once per run inside
the same jitted program. Which is faster was measured, not assumed (benchmarks/README.md): XLA's CPU
backend runs vmapped, i.e. grouped, convolutions several times slower than K ordinary ones, and so
did an H200 for EnvNet-v2, while PiczakCNN gained from vmap there. `resolve_method('auto', mesh,
model)` picks by device and backbone (`vmap_runs_on_accelerators` of the model). Unrolled,
every run computes the one-run step's own operations (bitwise equal to its run alone for standard
and InterMix in tests/test_multirun.py; XLA fuses the whole program, so that is observed, not
guaranteed). What follows is about 'vmap'.

Equality with K separate runs: to float32 rounding, not bitwise. vmap turns the per-run
convolutions and matrix products into batched (grouped) ones and `lax.cond` on the per-run mixing
layer into a select that computes both branches; XLA may then sum in another order, so a run's
values differ from its separate run by float32 rounding (which training then carries along: over
a few steps of the tiny test models, relative differences up to about 1e-5 in parameters;
tests/test_multirun.py states its tolerances). For a fixed K the step is deterministic, and what
one run computes does not depend on the values of the other runs' inputs (tested bitwise).

Devices: like the one-run step, states and keys are replicated on the mesh and every batch array is
sharded over 'data' on its batch axis, axis 1 behind the run axis (`parallel.batch_sharding(mesh, runs=True)`); the
mixing runs per device (`parallel.shard_strategy`). vmap of that strategy's `jax.shard_map`
(a batching rule of JAX: the run axis stays whole on each device) is exact, but with the
varying-manual-axes check on (`check_vma=True`, the one-run default) jax 0.10.2 rejects the
vmapped `lax.cond` of the mixer inside the shard_map ("pvary is a invariant->variant collective").
So the strategy is wrapped here with `check_vma=False`. That check is a type check only: every
differentiated input of those shard_maps (waveforms, hidden tensors, labels) is sharded on 'data'
in and out, so no cotangent is ever summed across devices and the gradients are the ones the
checked version gives (tests/test_multirun.py compares with the one-run step on 1 and on 8
simulated devices).

Limits: every run of one call shares the statics (model, strategy, optimiser and its LR
schedule, thus num_epochs and steps_per_epoch, class count) and the per-step batch shape, so folds
of different sizes must agree on steps_per_epoch, and a fold with fewer test clips pads its eval
batches with mask=False rows. The trainer stacks the runs of `fold='all'` and/or `seeds` with
`config.stack_runs=True`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from intermix_jax import parallel

PyTree = Any

__all__ = ['stack', 'unstack', 'num_runs', 'stack_on_mesh', 'take_run', 'METHODS',
           'resolve_method', 'over_runs']


# ------------------------------------------------------------------------------------------------
# K pytrees <-> one pytree with a leading run axis
# ------------------------------------------------------------------------------------------------
def _is_key(x) -> bool:
  return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def stack(trees: Sequence[PyTree]) -> PyTree:
  """K pytrees of one structure -> one pytree whose leaves have a leading run axis of size K.

  Leaf k of the result along axis 0 is tree k's leaf (shape (K, *shape)). Typed PRNG keys stay
  typed keys (K keys of shape () -> a key array of shape (K,)). Leaves that are all host values
  (numpy arrays, Python or numpy scalars) are stacked with numpy, on the host (e.g. the loaders'
  batches, before `parallel.host_batch_to_global(..., runs=True)`); any jax.Array leaf is stacked with jax.numpy (on its
  device: fetch mesh-placed values with `jax.device_get` first if they live on several devices).

  Raises:
    ValueError: no trees, trees of different structures, or leaves of different shapes or dtypes.
  """
  trees = list(trees)
  if not trees:
    raise ValueError('multirun.stack: no trees to stack (K must be >= 1)')
  structure = jax.tree.structure(trees[0])
  for k, tree in enumerate(trees[1:], 1):
    if jax.tree.structure(tree) != structure:
      raise ValueError(f'multirun.stack: tree {k} has structure {jax.tree.structure(tree)}, '
                       f'tree 0 has {structure}')
  columns = zip(*(jax.tree.leaves(t) for t in trees))

  def stack_leaves(i, xs):
    shapes = {tuple(np.shape(x)) for x in xs}
    dtypes = {str(x.dtype) if hasattr(x, 'dtype') else type(x).__name__ for x in xs}
    if len(shapes) != 1 or len(dtypes) != 1:
      raise ValueError(f'multirun.stack: leaf {i} differs between the trees (shapes '
                       f'{sorted(shapes)}, dtypes {sorted(dtypes)})')
    if any(isinstance(x, jax.Array) for x in xs):
      return jnp.stack([jnp.asarray(x) for x in xs])
    return np.stack([np.asarray(x) for x in xs])

  return jax.tree.unflatten(structure, [stack_leaves(i, xs) for i, xs in enumerate(columns)])


def num_runs(tree: PyTree) -> int:
  """K, the common size of the leading run axis of every leaf.

  Raises:
    ValueError: no leaves, a scalar leaf, or leaves with different leading sizes.
  """
  leaves = jax.tree.leaves(tree)
  if not leaves:
    raise ValueError('multirun.num_runs: the tree has no leaves')
  sizes = {np.shape(x)[0] if np.ndim(x) else None for x in leaves}
  if len(sizes) != 1 or None in sizes:
    raise ValueError(f'multirun: every leaf needs the same leading run axis; got shapes '
                     f'{jax.tree.map(np.shape, tree)}')
  return sizes.pop()


def unstack(tree: PyTree, k: int | None = None) -> list[PyTree]:
  """One pytree with a leading run axis of size K -> K pytrees (the inverse of `stack`).

  Args:
    tree: leaves of shape (K, *shape) (typed PRNG key arrays of shape (K, ...) included).
    k: the expected K (checked), or None to take it from the tree.
  Returns:
    [tree_0, ..., tree_{K-1}], tree_i's leaves the rows i of `tree`'s leaves (numpy stays numpy,
    jax stays jax; keys stay typed keys).
  Raises:
    ValueError: if the leading axes differ between leaves or from `k`.
  """
  size = num_runs(tree)
  if k is not None and size != k:
    raise ValueError(f'multirun.unstack: expected {k} runs, the leading axis has {size}')
  return [jax.tree.map(lambda x, i=i: x[i], tree) for i in range(size)]


# ------------------------------------------------------------------------------------------------
# Placement on the mesh
# ------------------------------------------------------------------------------------------------
def stack_on_mesh(trees: Sequence[PyTree], mesh) -> PyTree:
  """K pytrees replicated on `mesh` (one run's states or keys, e.g. as restored from its
  checkpoint) -> their stack (leaves (K, ...)), replicated; computed on the devices (no host copy).
  Typed PRNG keys stay typed."""
  trees = list(trees)
  if not trees:
    raise ValueError('multirun.stack_on_mesh: no trees to stack (K must be >= 1)')
  return jax.jit(lambda *ts: jax.tree.map(lambda *xs: jnp.stack(xs), *ts),
                 out_shardings=parallel.replicated_sharding(mesh))(*trees)


def take_run(tree: PyTree, k: int, mesh) -> PyTree:
  """Run k of a stacked pytree replicated on `mesh` (leaves (K, ...) -> leaves (...)), replicated:
  what one run's steps, evaluation and checkpoints take. One compilation per tree structure (k is
  traced)."""
  if mesh not in _TAKE:
    _TAKE[mesh] = jax.jit(lambda t, i: jax.tree.map(lambda x: x[i], t),
                          out_shardings=parallel.replicated_sharding(mesh))
  return _TAKE[mesh](tree, jnp.int32(k))


_TAKE: dict = {}


def _vmappable_strategy(strategy, mesh) -> parallel.ShardedStrategy:
  """The strategy as the trainer wraps it (per device on `mesh`), with check_vma off (see the
  module docstring); an already sharded strategy must be on `mesh`."""
  if isinstance(strategy, parallel.ShardedStrategy):
    if strategy.mesh != mesh:
      raise ValueError('multirun: strategy is already sharded over another mesh')
    return dataclasses.replace(strategy, check_vma=False)
  return parallel.shard_strategy(strategy, mesh, check_vma=False)


def _unwrapped(strategy):
  return strategy.strategy if isinstance(strategy, parallel.ShardedStrategy) else strategy


METHODS = ('vmap', 'unroll')  # how the step builders' `stack` puts K runs into one program


def resolve_method(method: str, mesh, model) -> str:
  """'vmap' or 'unroll' as given; 'auto': 'unroll' on CPU devices, and on accelerators 'vmap'
  only for a backbone whose `vmap_runs_on_accelerators` is True (`models.layers.Backbone`).

  Measured (benchmarks/README.md, "Runs in one program"): on a CPU, XLA runs the vmapped (grouped)
  convolutions of K runs 2-4x slower than K runs' ordinary ones, and a vmapped `lax.cond` computes
  every branch, while the unrolled program costs what K separate steps cost, or less. On an H200,
  vmap gained for PiczakCNN (unroll did not), while EnvNet-v2's vmapped (grouped) convolutions were
  many times slower than one run alone and than the same runs unrolled.

  Raises:
    ValueError: an unknown method, in one line naming the choices.
  """
  if method == 'auto':
    on_cpu = mesh.devices.flat[0].platform == 'cpu'
    return 'vmap' if not on_cpu and getattr(model, 'vmap_runs_on_accelerators', False) else 'unroll'
  if method not in METHODS:
    raise ValueError(f'unknown method {method!r} of putting runs into one program; choose one of '
                     f'{METHODS + ("auto",)}')
  return method


def _unrolled(fn: Callable) -> Callable:
  """fn(state, *args) of one run -> the same for K stacked runs, as K calls of `fn` in one
  program (K from the state's run axis at trace time), their outputs stacked."""
  def step(states, *args):
    take = lambda tree, i: jax.tree.map(lambda x: x[i], tree)
    outs = [fn(take(states, i), *(take(a, i) for a in args)) for i in range(num_runs(states))]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *outs)
  return step


def over_runs(make: Callable, method: str, mesh, model, strategy=None) -> Callable:
  """The K-run form of a one-run step: `make(strategy)` builds the one-run function of (state,
  *args) (strategy None for a step without mixing); 'vmap' maps it over the run axis of every
  argument (the strategy per device with check_vma off, see the module docstring), 'unroll' calls
  it once per run in one program (`resolve_method` resolves 'auto')."""
  if resolve_method(method, mesh, model) == 'vmap':
    return jax.vmap(make(None if strategy is None else _vmappable_strategy(strategy, mesh)))
  return _unrolled(make(None if strategy is None else
                        parallel.shard_strategy(_unwrapped(strategy), mesh)))
