"""Many runs in one program: K independent training runs (folds x seeds) as ONE step.

Every pytree here carries a leading run axis of size K in front of the shapes of one run; the
step builders take it as an option (`stack`, steps.py), so one run and K runs share the loop:

    init = steps.state_initializer(model, opt, mesh)
    states = stack_on_mesh([init(k) for k in init_keys], mesh)                # (K, ...) leaves
    keys = parallel.replicate(stack(train_keys), mesh)                       # (K,) typed keys
    train = steps.mesh_train_step(model, strategy, opt, num_classes, mesh, stack='vmap')
    batches = parallel.host_batch_to_global([batch_0, ...], mesh, pairs=True, runs=True)
    states, metrics = train(states, batches, keys)   # batches: x (K, N, T) float32, y (K, N) int32
                                                     # metrics: loss, error, lr, ... each (K,)
    out = steps.mesh_eval_step(model, mesh, stack='vmap')(
        states, parallel.host_batch_to_global([eval_0, ...], mesh, runs=True))
                                                     # x (K, b, crops, T), y (K, b), mask (K, b)
    state_k = take_run(states, k, mesh)              # one run's TrainState again

Run k computes what `steps.mesh_train_step` computes for it alone (its own state, batch and key;
loss, gradients, BatchNorm statistics and the non-finite skip are per run): bitwise when
unrolled (observed), to float32 rounding with 'vmap' (docs/scaling.md, "Many runs in one
program"). Every run of one call shares the statics and the per-step batch shape.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from intermix_jax import parallel

PyTree = Any


def stack(trees: Sequence[PyTree]) -> PyTree:
  """K pytrees of one structure -> one pytree whose leaves have a leading run axis of size K.

  Typed PRNG keys stay typed keys ((K,) for K keys of shape ()). Host values are stacked with
  numpy, a column with any jax.Array with jax.numpy (fetch mesh-placed values with
  `jax.device_get` first if they live on several devices).

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
  Raises:
    ValueError: if the leading axes differ between leaves or from `k`.
  """
  size = num_runs(tree)
  if k is not None and size != k:
    raise ValueError(f'multirun.unstack: expected {k} runs, the leading axis has {size}')
  return [jax.tree.map(lambda x, i=i: x[i], tree) for i in range(size)]


def stack_on_mesh(trees: Sequence[PyTree], mesh) -> PyTree:
  """K pytrees replicated on `mesh` (e.g. restored states or keys) -> their stack (leaves
  (K, ...)), replicated, computed on the devices. Typed PRNG keys stay typed."""
  trees = list(trees)
  if not trees:
    raise ValueError('multirun.stack_on_mesh: no trees to stack (K must be >= 1)')
  return jax.jit(lambda *ts: jax.tree.map(lambda *xs: jnp.stack(xs), *ts),
                 out_shardings=parallel.replicated_sharding(mesh))(*trees)


def take_run(tree: PyTree, k: int, mesh) -> PyTree:
  """Run k of a stacked pytree replicated on `mesh` (leaves (K, ...) -> leaves (...)), replicated.
  One compilation per tree structure (k is traced)."""
  return _take_on(mesh)(tree, jnp.int32(k))


@functools.cache
def _take_on(mesh) -> Callable:
  return jax.jit(lambda t, i: jax.tree.map(lambda x: x[i], t),
                 out_shardings=parallel.replicated_sharding(mesh))


METHODS = ('vmap', 'unroll')  # how the step builders' `stack` puts K runs into one program


def resolve_method(method: str, mesh, model) -> str:
  """'vmap' or 'unroll' as given; 'auto': 'unroll' on CPU devices, and on accelerators 'vmap'
  only for a backbone whose `vmap_runs_on_accelerators` is True (`models.layers.Backbone`; the
  measurements behind it: benchmarks/README.md, "Runs in one program").

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


def over_runs(make: Callable, method: str | None, mesh, model, strategy=None) -> Callable:
  """The K-run form of a one-run step: `make(strategy)` builds the one-run function of (state,
  *args) from the (unwrapped) `strategy` run per device on `mesh` (None: a step without mixing);
  `method` None returns it as it is (one run), 'vmap' maps it over the run axis of every argument
  (with `check_vma=False`: docs/scaling.md), 'unroll' calls it once per run in one program (K
  from the state's run axis at trace time), the outputs stacked (`resolve_method`: 'auto')."""
  vmap = method is not None and resolve_method(method, mesh, model) == 'vmap'
  if strategy is not None:
    strategy = parallel.shard_strategy(strategy, mesh, check_vma=not vmap)
  fn = make(strategy)
  if method is None:
    return fn
  if vmap:
    return jax.vmap(fn)

  def unrolled(states, *args):
    outs = [fn(*run) for run in zip(*(unstack(t, num_runs(states)) for t in (states,) + args))]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *outs)
  return unrolled
