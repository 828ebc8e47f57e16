"""Pure train and eval steps, the optimiser and the train state, and their jitted forms on a mesh.

    mesh = parallel.make_mesh()
    opt = OptimizerSpec.from_config(config.opt, num_epochs, steps_per_epoch)
    state = state_initializer(model, opt, mesh)(key)     # replicated on the mesh
    train = mesh_train_step(model, strategy, opt, num_classes, mesh)  # strategy: per device
    state, metrics = train(state, parallel.host_batch_to_global(batch, mesh, pairs=True),
                           parallel.replicate(key, mesh))  # batch: x (N, T) float32, y (N,) int32
    out = mesh_eval_step(model, mesh)(state, parallel.host_batch_to_global(eval_batch, mesh))
                                                         # x (b, crops, T), y (b,), mask (b,)

A step's plan and dropout key come from `fold_in(key, state.step)`. A step whose loss or gradients
are not finite is not applied (params, BatchNorm statistics and optimiser moments kept); the step
counter advances, `nonfinite_count` counts it and `first_nonfinite_step` keeps the first (train.py
decides to stop or carry on).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax

from intermix_jax import multirun
from intermix_jax import parallel
from intermix_jax import schedules

PyTree = Any


class TrainState(flax.struct.PyTreeNode):
  """Everything that changes during training, as arrays (checkpointed as one pytree).

  Attributes:
    step: int32 scalar, optimiser steps taken (including skipped non-finite ones).
    batch_stats: BatchNorm running statistics (empty dict when the model has none).
    nonfinite_count: int32 scalar, steps not applied because loss or gradients were not finite.
    first_nonfinite_step: int32 scalar, the step number of the first such step (-1: none yet).
  """
  step: jax.Array
  params: PyTree
  batch_stats: PyTree
  opt_state: PyTree
  nonfinite_count: jax.Array
  first_nonfinite_step: jax.Array


def make_optimizer(opt_config, schedule: optax.Schedule) -> optax.GradientTransformation:
  """docs/method.md §5 optimiser: coupled L2 (decay added to the gradient BEFORE momentum) + SGD.

  Args:
    opt_config: anything with momentum, nesterov and weight_decay (`config.opt`, an OptimizerSpec).
    schedule: step -> learning rate (see schedules.lr_schedule).
  """
  return optax.chain(
      optax.add_decayed_weights(opt_config.weight_decay),
      optax.sgd(learning_rate=schedule, momentum=opt_config.momentum, nesterov=opt_config.nesterov),
  )


def _init_state(model, tx: optax.GradientTransformation, key: jax.Array, input_length: int,
                example_batch: int = 2) -> TrainState:
  params_key, dropout_key = jax.random.split(key)
  x = jnp.zeros((example_batch, input_length), jnp.float32)
  variables = model.init({'params': params_key, 'dropout': dropout_key}, x, train=False)
  params = variables['params']
  return TrainState(
      step=jnp.zeros((), jnp.int32), params=params,
      batch_stats=variables.get('batch_stats', {}), opt_state=tx.init(params),
      nonfinite_count=jnp.zeros((), jnp.int32),
      first_nonfinite_step=jnp.full((), -1, jnp.int32))


def init_state(model, tx: optax.GradientTransformation, key: jax.Array, input_length: int,
               example_batch: int = 2) -> TrainState:
  """Initial TrainState from `model.init` on zeros of shape (example_batch, input_length)."""
  return jax.jit(functools.partial(_init_state, model, tx, input_length=input_length,
                                   example_batch=example_batch))(key)


def _all_finite(tree: PyTree) -> jax.Array:
  """True iff every float in `tree` is finite: sum(x * 0) is 0 for finite x and NaN otherwise."""
  sums = [jnp.sum(x * jnp.zeros((), x.dtype), dtype=jnp.float32) for x in jax.tree.leaves(tree)
          if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
  return jnp.isfinite(sum(sums)) if sums else jnp.asarray(True)


def mixed_loss(params: PyTree, batch_stats: PyTree, x: jax.Array, labels: jax.Array,
               key: jax.Array, *, model, strategy, num_classes: int):
  """Forward pass of the configured strategy on a local batch and its loss.

  Args:
    x: float32 (N, T) waveforms at the model's rate (N even when the strategy mixes: rows 2k, 2k+1
      are a pair of different classes).
    labels: int32 (N,).
    key: the step's key (plan and dropout are split from it).
  Returns:
    (loss float32 scalar, (logits float32 (N, C), soft targets (N, C), new batch_stats)).
  """
  plan_key, dropout_key = jax.random.split(key)
  plan = strategy.plan(plan_key, x.shape[0], model.num_mix_points)
  x = strategy.prepare_input(plan, x)
  targets = strategy.targets(plan, jax.nn.one_hot(labels, num_classes, dtype=jnp.float32))
  mix = strategy.mixer(plan, model.sample_rate)
  logits, updates = model.apply(variables(params, batch_stats), x, train=True, mix=mix,
                                rngs={'dropout': dropout_key}, mutable=['batch_stats'])
  logits = logits.astype(jnp.float32)  # a float32 loss whatever the compute precision
  loss = strategy.loss(logits, targets)
  return loss, (logits, targets, updates.get('batch_stats', batch_stats))


def train_step(state: TrainState, batch: dict, key: jax.Array, *, model, strategy,
               tx: optax.GradientTransformation, num_classes: int,
               schedule: optax.Schedule | None = None) -> tuple[TrainState, dict]:
  """One optimiser step on `batch` = dict(x=(N, T) float32, y=(N,) int32).

  Returns the new state and metrics (float32 scalars unless noted): loss, error (% of the batch whose
  argmax differs from the argmax of its soft label), lr (the LR used for this step), finite (bool),
  nonfinite_count (int32, total so far).
  """
  step_key = jax.random.fold_in(key, state.step)
  grad_fn = jax.value_and_grad(mixed_loss, has_aux=True)
  (loss, (logits, targets, new_bs)), grads = grad_fn(
      state.params, state.batch_stats, batch['x'], batch['y'], step_key,
      model=model, strategy=strategy, num_classes=num_classes)
  finite = jnp.isfinite(loss) & _all_finite(grads)
  lr = jnp.asarray(jnp.nan, jnp.float32) if schedule is None else schedule(state.step)
  updates, new_opt_state = tx.update(grads, state.opt_state, state.params)
  keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
  opt_state = keep(new_opt_state, state.opt_state)
  count = optax.tree_utils.tree_get(new_opt_state, 'count')
  if count is not None:  # the LR schedule follows the step counter, skipped steps included
    opt_state = optax.tree_utils.tree_set(opt_state, count=count)
  bad = jnp.logical_not(finite)
  new_state = state.replace(
      step=state.step + 1,
      params=keep(optax.apply_updates(state.params, updates), state.params),
      batch_stats=keep(new_bs, state.batch_stats),
      opt_state=opt_state,
      nonfinite_count=state.nonfinite_count + bad.astype(jnp.int32),
      first_nonfinite_step=jnp.where(bad & (state.first_nonfinite_step < 0), state.step,
                                     state.first_nonfinite_step))
  error = 100.0 * jnp.mean((jnp.argmax(logits, -1) != jnp.argmax(targets, -1)).astype(jnp.float32))
  metrics = dict(loss=loss.astype(jnp.float32), error=error, lr=lr, finite=finite,
                 nonfinite_count=new_state.nonfinite_count)
  return new_state, metrics


def variables(params: PyTree, batch_stats: PyTree) -> dict:
  """The model's variables: params, and batch_stats unless empty."""
  return {'params': params, 'batch_stats': batch_stats} if batch_stats else {'params': params}


def crop_logits(model_variables: dict, x: jax.Array, *, model) -> jax.Array:
  """float32 (b * crops, C) eval-mode logits of the crops x float32 (b, crops, T)."""
  b, crops, t = x.shape
  return model.apply(model_variables, x.reshape(b * crops, t), train=False).astype(jnp.float32)


def clip_outputs(logits: jax.Array, y: jax.Array, mask: jax.Array) -> dict:
  """The docs/method.md §5 prediction of b clips from their crops' logits (b * crops, C): the
  argmax of the mean over crops of softmax(logits). Returns `eval_step`'s dict."""
  b = y.shape[0]
  probs = jnp.mean(jax.nn.softmax(logits, -1).reshape(b, logits.shape[0] // b, -1), axis=1)
  pred = jnp.argmax(probs, -1).astype(jnp.int32)
  mask = mask.astype(bool)
  correct = (pred == y) & mask
  return dict(probs=probs, pred=pred, correct=correct,
              num_correct=jnp.sum(correct.astype(jnp.int32)), count=jnp.sum(mask.astype(jnp.int32)))


def eval_step(state: TrainState, batch: dict, *, model) -> dict:
  """Multi-crop evaluation of `batch` = dict(x=(b, crops, T), y=(b,), mask=(b,) bool).

  Returns: probs (b, C) float32 (mean softmax over the crops), pred (b,) int32, correct (b,) bool
  (False where mask is False), num_correct and count (int32 scalars over the unmasked clips).
  """
  logits = crop_logits(variables(state.params, state.batch_stats), batch['x'], model=model)
  return clip_outputs(logits, batch['y'], batch['mask'])


def make_train_step(model, strategy, tx, num_classes: int,
                    schedule: optax.Schedule | None = None) -> Callable:
  """`fn(state, batch, key) -> (state, metrics)` closing over the static pieces (unjitted)."""
  return functools.partial(train_step, model=model, strategy=strategy, tx=tx,
                           num_classes=num_classes, schedule=schedule)


def make_eval_step(model) -> Callable:
  """`fn(state, batch) -> dict` (unjitted)."""
  return functools.partial(eval_step, model=model)


def _jit(fn: Callable, donate: tuple[int, ...], **shardings) -> Callable:
  return jax.jit(fn, donate_argnums=donate, **{k: v for k, v in shardings.items() if v is not None})


def jit_train_step(fn: Callable, *, in_shardings=None, out_shardings=None) -> Callable:
  """jax.jit of a train step with the state (argument 0) donated; shardings optional."""
  return _jit(fn, (0,), in_shardings=in_shardings, out_shardings=out_shardings)


def jit_eval_step(fn: Callable, *, in_shardings=None, out_shardings=None) -> Callable:
  """jax.jit of an eval step; shardings optional."""
  return _jit(fn, (), in_shardings=in_shardings, out_shardings=out_shardings)


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
  """Everything that defines the optimiser and its LR schedule (hashable: a static jit argument).

  Attributes:
    lr: LR0. momentum, nesterov, weight_decay: SGD settings (coupled L2).
    num_epochs: epochs actually trained (already doubled for mixing).
    schedule: fractions of num_epochs where the LR is multiplied by 0.1.
    warmup_epochs: epochs at LR0 * 0.1 at the start.
  """
  lr: float
  momentum: float
  nesterov: bool
  weight_decay: float
  num_epochs: int
  steps_per_epoch: int
  schedule: tuple[float, ...]
  warmup_epochs: int

  @classmethod
  def from_config(cls, opt_config, num_epochs: int, steps_per_epoch: int) -> 'OptimizerSpec':
    return cls(lr=float(opt_config.lr), momentum=float(opt_config.momentum),
               nesterov=bool(opt_config.nesterov), weight_decay=float(opt_config.weight_decay),
               num_epochs=int(num_epochs), steps_per_epoch=int(steps_per_epoch),
               schedule=tuple(float(f) for f in opt_config.schedule),
               warmup_epochs=int(opt_config.warmup_epochs))

  def lr_schedule(self) -> optax.Schedule:
    return schedules.lr_schedule(self.lr, self.num_epochs, self.steps_per_epoch, self.schedule,
                                 self.warmup_epochs)

  def tx(self) -> optax.GradientTransformation:
    return make_optimizer(self, self.lr_schedule())


_JITTED: dict[tuple, Callable] = {}


def _jitted_once(key: tuple, build: Callable[[], Callable]) -> Callable:
  """The function stored under `key`, built on its first use (equal statics share compilations)."""
  if key not in _JITTED:
    _JITTED[key] = build()
  return _JITTED[key]


def mesh_train_step(model, strategy, opt: OptimizerSpec, num_classes: int, mesh, *,
                    stack: str | None = None) -> Callable:
  """`step(state, batch, key) -> (state, metrics)` (`train_step`) on `mesh`, the state donated.

  The strategy runs per device (`parallel.shard_strategy`). State, key and metrics replicated;
  batch = dict(x float32 (N, T), y int32 (N,)) sharded on its rows
  (`parallel.train_step_shardings`). `stack` ('vmap', 'unroll' or 'auto'): K runs in one program,
  a leading run axis K on every argument and output (shapes: multirun.py's docstring).
  """
  def build():
    make = lambda s: make_train_step(model, s, opt.tx(), num_classes, opt.lr_schedule())
    fn = multirun.over_runs(make, stack, mesh, model, strategy)  # stack None: one run
    return jit_train_step(fn, **parallel.train_step_shardings(mesh, runs=stack is not None))
  if stack is not None and isinstance(strategy, parallel.ShardedStrategy):
    strategy = strategy.strategy  # re-wrapped for the run axis (multirun.over_runs)
  return _jitted_once(('train', model, strategy, opt, int(num_classes), mesh, stack), build)


def mesh_eval_step(model, mesh, *, stack: str | None = None) -> Callable:
  """`step(state, batch) -> dict` (`eval_step`) on `mesh`: state replicated, batch = dict(x (b,
  crops, T) float32, y (b,) int32, mask (b,) bool) sharded on its clip axis; `stack` as
  `mesh_train_step`."""
  def build():
    fn = multirun.over_runs(lambda _: make_eval_step(model), stack, mesh, model)
    return jit_eval_step(fn, **parallel.eval_step_shardings(mesh, runs=stack is not None))
  return _jitted_once(('eval', model, mesh, stack), build)


def state_initializer(model, opt: OptimizerSpec, mesh, example_batch: int = 2) -> Callable:
  """`init(key) -> TrainState` replicated on `mesh` (`init_state` for `opt.tx()`); `key` a PRNG key,
  the same on every process."""
  def build():
    fn = jax.jit(functools.partial(_init_state, model, opt.tx(), input_length=model.input_length,
                                   example_batch=example_batch),
                 out_shardings=parallel.replicated_sharding(mesh))
    return lambda key: fn(parallel.replicate(key, mesh))
  return _jitted_once(('init', model, opt, mesh, int(example_batch)), build)


def abstract_state(model, opt: OptimizerSpec, mesh) -> TrainState:
  """Shapes, dtypes and shardings (replicated on `mesh`) of the TrainState of `model` and `opt`
  (a checkpoint restore target; independent of the epoch and step counts of `opt`)."""
  shapes = jax.eval_shape(functools.partial(_init_state, model, opt.tx(),
                                            input_length=model.input_length),
                          jax.random.key(0))
  sharding = parallel.replicated_sharding(mesh)
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes)
