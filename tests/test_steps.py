"""Train/eval steps, optimiser and LR schedule (intermix_jax.steps, intermix_jax.schedules), and
the trainer's jitted steps on a mesh (steps.mesh_train_step: compiled once per statics; on one
device exactly the plain step).

Uses a tiny local Flax model (the contract of docs/architecture.md: sample_rate, input_length,
num_mix_points, `mix(h, k)` at each point, BatchNorm, dropout) and the real mixing strategies.
"""
import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from intermix_jax import mixing, parallel, schedules, steps

from helpers import TinyNet


def opt_config(**kw):
  c = ml_collections.ConfigDict(dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
                                     schedule=(0.5, 0.75), warmup_epochs=0))
  c.update(kw)
  return c


def make_batch(n=8, t=64, c=3, seed=0):
  rng = np.random.default_rng(seed)
  y = np.arange(n) % c  # rows 2k, 2k+1 have different classes
  x = rng.standard_normal((n, t)).astype(np.float32) * 0.3
  return dict(x=x, y=y.astype(np.int32))


def reference_lr(step, lr0, n_epochs, spe, schedule, warmup):
  """bc_learning_sound train.py lr_schedule, for the 1-based epoch of `step`."""
  epoch = step // spe + 1
  divide = np.array([n_epochs * f for f in schedule])
  decay = np.sum(epoch > divide)
  if epoch <= warmup:
    decay = 1
  return lr0 * 0.1 ** decay


@pytest.mark.parametrize('n_epochs,spe,schedule,warmup', [
    (20, 3, (0.3, 0.6, 0.9), 2), (8, 5, (0.5, 0.75), 0), (7, 2, (), 1), (10, 1, (0.25,), 0)])
def test_lr_schedule_matches_reference_rule(n_epochs, spe, schedule, warmup):
  fn = schedules.lr_schedule(0.1, n_epochs, spe, schedule, warmup)
  got = np.array([float(fn(s)) for s in range(n_epochs * spe)])
  want = np.array([reference_lr(s, 0.1, n_epochs, spe, schedule, warmup)
                   for s in range(n_epochs * spe)])
  np.testing.assert_allclose(got, want, rtol=1e-6)
  assert np.all(np.diff(got[warmup * spe:]) <= 0)  # after warmup the LR only decreases


@pytest.mark.parametrize('n_epochs,schedule,warmup', [
    (2, (0.3, 0.6, 0.9), 10), (10, (0.3, 0.6, 0.9), 10), (20, (0.3, 0.6, 0.9), 10),
    (20, (0.3, 0.6, 0.9), 5), (100, (0.29,), 0), (7, (), 1), (7, (), 7), (8, (0.5, 0.75), 0)])
def test_epochs_at_base_lr_counts_what_the_schedule_runs(n_epochs, schedule, warmup):
  """Issue 27 item 4: the epochs at LR0 are counted by the rule lr_schedule applies."""
  fn = schedules.lr_schedule(0.1, n_epochs, 1, schedule, warmup)
  at_lr0 = sum(float(fn(e)) == pytest.approx(0.1) for e in range(n_epochs))
  assert schedules.epochs_at_base_lr(n_epochs, schedule, warmup) == at_lr0
  if warmup >= n_epochs:
    assert at_lr0 == 0


def test_total_epochs_doubles_only_for_mixing():
  assert schedules.total_epochs(600, mixes=True) == 1200
  assert schedules.total_epochs(600, mixes=False) == 600
  assert schedules.total_epochs(600, mixes=True, double_for_mixing=False) == 600


def test_optimizer_is_coupled_l2_nesterov_sgd():
  """Two updates against the hand-written Chainer rule: g += wd * w; v = m v - lr g; w += m v - lr g."""
  lr, m, wd = 0.05, 0.9, 1e-2
  tx = steps.make_optimizer(opt_config(momentum=m, weight_decay=wd), lambda s: lr)
  w = jnp.array([1.0, -2.0, 3.0])
  state = tx.init(w)
  w_ref, v = np.array(w), np.zeros(3)
  for g in (np.array([0.1, 0.2, -0.3]), np.array([-0.5, 0.0, 0.4])):
    upd, state = tx.update(jnp.asarray(g, jnp.float32), state, w)
    w = optax.apply_updates(w, upd)
    g2 = g + wd * w_ref
    v = m * v - lr * g2
    w_ref = w_ref + m * v - lr * g2
    np.testing.assert_allclose(np.asarray(w), w_ref, rtol=1e-5, atol=1e-7)


_CACHE = {}


def _setup(strategy_name='intermix', lr=0.1):
  """(model, strategy, tx, state, jitted step without donation, schedule), built once per name."""
  if strategy_name not in _CACHE:
    model = TinyNet()
    strategy = mixing.get_strategy(strategy_name)
    sched = schedules.lr_schedule(lr, 4, 2, (0.5,), 0)
    tx = steps.make_optimizer(opt_config(lr=lr), sched)
    state = steps.init_state(model, tx, jax.random.key(0), model.input_length)
    fn = jax.jit(steps.make_train_step(model, strategy, tx, 3, sched))
    _CACHE[strategy_name] = (model, strategy, tx, state, fn, sched)
  return _CACHE[strategy_name]


@pytest.mark.parametrize('name', ['standard', 'mixup'])  # every strategy: test_train.py
def test_train_step_updates_and_reports_metrics(name):
  model, _, _, state, step, sched = _setup(name)
  p0 = jax.tree.map(np.asarray, state.params)
  bs0 = jax.tree.map(np.asarray, state.batch_stats)
  state, m = step(state, make_batch(), jax.random.key(1))
  assert int(state.step) == 1 and bool(m['finite']) and int(m['nonfinite_count']) == 0
  assert np.isfinite(float(m['loss'])) and 0.0 <= float(m['error']) <= 100.0
  np.testing.assert_allclose(float(m['lr']), float(sched(0)))
  moved = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.max(np.abs(np.asarray(a) - b))),
                                       state.params, p0))
  assert max(moved) > 0
  assert not all(np.allclose(a, b) for a, b in zip(jax.tree.leaves(state.batch_stats),
                                                    jax.tree.leaves(bs0)))


def test_train_error_is_against_argmax_of_soft_label():
  """error = % rows where argmax(logits) != argmax(targets), recomputed outside the step."""
  model, strategy, tx, state, fn, _ = _setup('mixup')
  batch, key = make_batch(), jax.random.key(3)
  _, m = fn(state, batch, key)
  step_key = jax.random.fold_in(key, state.step)
  loss_fn = jax.jit(lambda *a: steps.mixed_loss(*a, model=model, strategy=strategy, num_classes=3))
  _, (logits, targets, _) = loss_fn(state.params, state.batch_stats, batch['x'], batch['y'], step_key)
  want = 100 * np.mean(np.argmax(logits, -1) != np.argmax(targets, -1))
  np.testing.assert_allclose(float(m['error']), want, rtol=1e-6)


def test_train_step_is_reproducible_and_step_keyed():
  _, _, _, state, fn, _ = _setup('mixup')
  batch = make_batch()
  s1, m1 = fn(state, batch, jax.random.key(7))
  s2, m2 = fn(state, batch, jax.random.key(7))
  chex.assert_trees_all_equal(s1.params, s2.params)
  # Same key, different step number: a different plan/dropout draw, hence a different loss.
  s3, m3 = fn(state.replace(step=state.step + 5), batch, jax.random.key(7))
  assert float(m3['loss']) != float(m1['loss'])


def test_one_compilation_serves_every_step():
  _, _, _, state, step, _ = _setup('mixup')
  for i in range(3):  # different data, step numbers, hence mix layers and ratios
    state, _ = step(state, make_batch(seed=i), jax.random.key(i))
  assert int(state.step) == 3
  assert step._cache_size() == 1


@pytest.mark.parametrize('bad', [np.nan, np.inf])
def test_nonfinite_step_is_not_applied_and_counted(bad):
  _, _, _, state, step, _ = _setup('standard')
  state, _ = step(state, make_batch(seed=0), jax.random.key(0))
  before = jax.tree.map(np.asarray, (state.params, state.batch_stats, state.opt_state))
  batch = make_batch(seed=1)
  batch['x'][3, 5] = bad
  state, m = step(state, batch, jax.random.key(0))
  assert not bool(m['finite'])
  assert int(state.step) == 2 and int(state.nonfinite_count) == 1
  assert int(state.first_nonfinite_step) == 1
  after = (state.params, state.batch_stats, state.opt_state)
  # Everything but the schedule counter is unchanged.
  count_path = lambda tree: optax.tree_utils.tree_set(tree, count=jnp.zeros((), jnp.int32))
  chex.assert_trees_all_equal(count_path(jax.tree.map(jnp.asarray, before[2])), count_path(after[2]))
  chex.assert_trees_all_equal(before[0], after[0])
  chex.assert_trees_all_equal(before[1], after[1])
  assert int(optax.tree_utils.tree_get(state.opt_state, 'count')) == 2  # schedule follows the step
  state, m = step(state, make_batch(seed=2), jax.random.key(0))  # training carries on
  assert bool(m['finite']) and int(state.nonfinite_count) == 1 and int(state.first_nonfinite_step) == 1


def test_all_finite_flags_any_nan_or_inf_and_only_those():
  all_finite = jax.jit(steps._all_finite)  # pylint: disable=protected-access
  big = np.float32(3e38)
  good = {'a': np.full((3, 4), big), 'b': {'c': -np.full(5, big), 'd': np.arange(3)}, 'e': np.zeros(0)}
  assert bool(all_finite(good))           # huge values (whose sum would overflow) are finite
  for bad in (np.nan, np.inf, -np.inf):
    tree = jax.tree.map(np.copy, good)
    tree['b']['c'][2] = bad
    assert not bool(all_finite(tree)), bad
  assert bool(all_finite({'ints': np.array([2**31 - 1], np.int32)}))   # non-float leaves ignored
  assert bool(all_finite({}))

def test_eval_step_mean_softmax_over_crops_and_masked_counts():
  model, _, _, state, _, _ = _setup('standard')
  rng = np.random.default_rng(0)
  b, crops, t = 5, 3, model.input_length
  x = rng.standard_normal((b, crops, t)).astype(np.float32)
  y = np.array([0, 1, 2, 0, 1], np.int32)
  mask = np.array([True, True, True, True, False])
  out = steps.jit_eval_step(steps.make_eval_step(model))(state, dict(x=x, y=y, mask=mask))
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  apply = jax.jit(lambda v: jax.nn.softmax(model.apply(variables, v[None])[0]))
  probs = np.stack([np.mean([np.asarray(apply(x[i, k])) for k in range(crops)], 0) for i in range(b)])
  np.testing.assert_allclose(np.asarray(out['probs']), probs, rtol=1e-5, atol=1e-6)
  pred = probs.argmax(-1)
  np.testing.assert_array_equal(np.asarray(out['pred']), pred)
  assert int(out['count']) == 4
  assert int(out['num_correct']) == int(np.sum((pred == y) & mask))
  assert not bool(out['correct'][4])


def _opt():
  return steps.OptimizerSpec(lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4, num_epochs=4,
                             steps_per_epoch=2, schedule=(0.5,), warmup_epochs=0)


def test_mesh_train_step_on_one_device_is_the_plain_step():
  """The trainer's step on a 1-device mesh (the strategy through parallel.shard_strategy, explicit
  shardings) computes bitwise what the plain jitted step with the unwrapped strategy computes."""
  model, strategy, opt = TinyNet(), mixing.get_strategy('intermix'), _opt()
  mesh = parallel.make_mesh(1)
  state = steps.state_initializer(model, opt, mesh)(jax.random.key(0))
  plain_state = steps.init_state(model, opt.tx(), jax.random.key(0), model.input_length)
  chex.assert_trees_all_equal(jax.device_get(state), jax.device_get(plain_state))
  plain = jax.jit(steps.make_train_step(model, strategy, opt.tx(), 3, opt.lr_schedule()))
  step = steps.mesh_train_step(model, strategy, opt, 3, mesh)
  key = jax.random.key(7)
  for i in range(3):
    batch = make_batch(seed=i)
    plain_state, want = plain(plain_state, batch, key)
    state, got = step(state, parallel.host_batch_to_global(batch, mesh, pairs=True),
                      parallel.replicate(key, mesh))
    chex.assert_trees_all_equal(jax.device_get(got), jax.device_get(want))
  chex.assert_trees_all_equal(jax.device_get(state), jax.device_get(plain_state))


def test_mesh_steps_compile_once_for_equal_statics():
  """The next fold of fold=all (equal model, strategy, optimiser, class count and mesh) gets the
  same jitted step, and a fresh and a restored state (placed as a checkpoint restore places it)
  run its one compilation."""
  mesh = parallel.make_mesh(1)
  step = steps.mesh_train_step(TinyNet(), mixing.get_strategy('mixup'), _opt(), 3, mesh)
  assert steps.mesh_train_step(TinyNet(), mixing.get_strategy('mixup'), _opt(), 3,
                               parallel.make_mesh(1)) is step
  assert steps.mesh_eval_step(TinyNet(), mesh) is steps.mesh_eval_step(TinyNet(), mesh)
  fresh = steps.state_initializer(TinyNet(), _opt(), mesh)(jax.random.key(1))
  target = steps.abstract_state(TinyNet(), _opt(), mesh)
  assert jax.tree.structure(target) == jax.tree.structure(fresh)
  restored = jax.tree.map(lambda t, x: jax.device_put(np.asarray(x), t.sharding), target,
                          jax.device_get(fresh))
  key = parallel.replicate(jax.random.key(2), mesh)
  for state in (fresh, restored):
    for i in range(2):
      state, _ = step(state, parallel.host_batch_to_global(make_batch(seed=i), mesh, pairs=True),
                      key)
  assert step._cache_size() == 1
