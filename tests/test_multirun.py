"""Many runs in one program (intermix_jax.multirun): K runs as one vmapped train/eval step.

Laws: run k of the K-run step (`steps.mesh_train_step(..., stack=)`) computes what the one-run step computes for run k alone
(its own state, batch and key, hence its own data order, mixing plans and dropout masks), to
float32 rounding (tolerances below); the K-run eval step likewise for the one-run one; a NaN
in one run's batch changes no other run (bitwise) and is not applied to its own run; stack/unstack
are inverse (typed keys included); on 8 simulated CPU devices (eight_device_measurements, run in
tests/test_parallel.py's one 8-device child and checked there) the multi-run step equals the
1-device multi-run step ('standard') and the 8-device one-run steps ('intermix', whose plans are
drawn per device).

Tolerances. Not bitwise: vmap turns each run's convolutions and matrix products into batched
(grouped) ones and the mixer's `lax.cond` into a select, and XLA:CPU may sum in another order, so
values differ by float32 rounding, which three SGD steps then carry along. The state is compared
leaf by leaf as max|got - want| <= rtol * max|want| (the leaf's scale: momentum traces and
parameters near zero make an elementwise rtol meaningless):
  standard  rtol 2e-6 (observed <= 4e-7),
  intermix  rtol 1e-4 (observed <= 2.6e-5, in run 2, whose loss grows to ~9 by step 3). This is the
            conditioning of that run, not an error of vmap: the same run alone, with its first
            batch scaled by (1 + 1.2e-7) (one float32 ulp), ends 3.3e-5 (relative to the leaf
            scale) away from the unperturbed run (standard: 4e-7). InterMix's gradient goes through
            sqrt(a b), whose derivative 0.5 sqrt(b / a) amplifies rounding where a is small.
Metrics: loss rtol 1e-6 (observed 1.4e-7); error, lr, finite, nonfinite_count exactly.
"""
import functools
import types

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from intermix_jax import mixing, models, multirun, parallel, steps

from helpers import TinyNet  # num_classes 3 = NUM_CLASSES

K = 3
NUM_CLASSES = 3
RTOL_STATE = {'standard': 2e-6, 'intermix': 1e-4}
RTOL_LOSS = 1e-6


def opt_spec():
  return steps.OptimizerSpec(lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4, num_epochs=4,
                             steps_per_epoch=2, schedule=(0.5,), warmup_epochs=0)


def make_batch(n=8, t=64, seed=0):
  rng = np.random.default_rng(seed)
  y = np.arange(n) % NUM_CLASSES  # rows 2k, 2k+1 have different classes
  x = rng.standard_normal((n, t)).astype(np.float32) * 0.3
  return dict(x=x, y=y.astype(np.int32))


def run_batches(step, n=8):
  """One batch per run, all different (run k, step i)."""
  return [make_batch(n=n, seed=100 * k + step) for k in range(K)]


def train_keys():
  return [jax.random.key(10 + k) for k in range(K)]


def init_keys():
  return [jax.random.key(k) for k in range(K)]


def assert_state_close(got, want, rtol):
  """Every float leaf: max|got - want| <= rtol * max|want|; integer leaves equal."""
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype, jax.tree_util.keystr(path)
    if a.dtype.kind != 'f':
      np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))
    elif a.size:
      diff = float(np.max(np.abs(a.astype(np.float64) - b)))
      assert diff <= rtol * float(np.max(np.abs(b))), (jax.tree_util.keystr(path), diff)


def assert_metrics_close(got, want):
  np.testing.assert_allclose(got['loss'], want['loss'], rtol=RTOL_LOSS)
  for name in ('error', 'lr', 'finite', 'nonfinite_count'):
    np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def separate_runs(model, name, opt, mesh, num_steps, batches=run_batches):
  """K runs each through steps.mesh_train_step: ([final state_k], [stacked metrics of step i])."""
  one = steps.mesh_train_step(model, mixing.get_strategy(name), opt, NUM_CLASSES, mesh)
  init = steps.state_initializer(model, opt, mesh)
  states = [init(k) for k in init_keys()]
  metrics = []
  for i in range(num_steps):
    ms = []
    for k, (batch, key) in enumerate(zip(batches(i), train_keys())):
      states[k], m = one(states[k], parallel.host_batch_to_global(batch, mesh, pairs=True),
                         parallel.replicate(key, mesh))
      ms.append(jax.device_get(m))
    metrics.append(multirun.stack(ms))
  return [jax.device_get(s) for s in states], metrics


def init_states(model, opt, mesh, keys):
  """The K initial states, each what the run alone starts from, stacked and replicated."""
  init = steps.state_initializer(model, opt, mesh)
  return multirun.stack_on_mesh([init(k) for k in keys], mesh)


def multi_runs(model, name, opt, mesh, num_steps, batches=run_batches, method='vmap'):
  """The same K runs through the K-run step (`stack=method`): ([state_k], [metrics (K,) of step i])."""
  step = steps.mesh_train_step(model, mixing.get_strategy(name), opt, NUM_CLASSES, mesh,
                               stack=method)
  states = init_states(model, opt, mesh, init_keys())
  keys = parallel.replicate(multirun.stack(train_keys()), mesh)
  metrics = []
  for i in range(num_steps):
    states, m = step(states, parallel.host_batch_to_global(batches(i), mesh, pairs=True, runs=True), keys)
    metrics.append(jax.device_get(m))
  return multirun.unstack(jax.device_get(states), K), metrics


# ------------------------------------------------------------------------------------------------
# 1. K runs in one step == K separate runs (1-device mesh)
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('name', ['standard', 'intermix'])
def test_stacked_train_step_equals_separate_runs(name):
  model, opt, mesh = TinyNet(), opt_spec(), parallel.make_mesh(1)
  want_states, want_metrics = separate_runs(model, name, opt, mesh, 3)
  got_states, got_metrics = multi_runs(model, name, opt, mesh, 3)
  for got, want in zip(got_metrics, want_metrics):
    assert got['loss'].shape == (K,)
    assert_metrics_close(got, want)
  for got, want in zip(got_states, want_states):
    assert int(got.step) == 3
    assert_state_close(got, want, RTOL_STATE[name])
  # Not vacuous: the runs differ from each other (own seeds, batches, plans) and they trained.
  losses = np.stack([m['loss'] for m in got_metrics])
  assert len(set(np.round(losses[-1], 4))) == K
  init = jax.device_get(steps.state_initializer(model, opt, mesh)(init_keys()[0]))
  moved = max(float(np.max(np.abs(a - b))) for a, b in
              zip(jax.tree.leaves(got_states[0].params), jax.tree.leaves(init.params)))
  assert moved > 1e-3


@pytest.mark.parametrize('name', ['standard', 'intermix', 'bc'])
def test_unrolled_step_equals_separate_runs(name):
  """method='unroll': the one-run step's computation K times in one program. Standard and
  InterMix: every run's state and metrics bitwise those of its run alone (observed with jax 0.10.2
  on CPU). Not a guarantee: XLA fuses the program as a whole, and BC's loss differs in its last
  bit, so BC is held to the vmap tolerances."""
  model, opt, mesh = TinyNet(), opt_spec(), parallel.make_mesh(1)
  want_states, want_metrics = separate_runs(model, name, opt, mesh, 3)
  got_states, got_metrics = multi_runs(model, name, opt, mesh, 3, method='unroll')
  if name == 'bc':
    for got, want in zip(got_metrics, want_metrics):
      assert_metrics_close(got, want)
    for got, want in zip(got_states, want_states):
      assert_state_close(got, want, RTOL_STATE['intermix'])
  else:
    for got, want in zip(got_metrics + got_states, want_metrics + want_states):
      for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
        assert np.array_equal(np.asarray(a), np.asarray(b)), jax.tree_util.keystr(path)
  assert len(set(np.round(got_metrics[-1]['loss'], 4))) == K  # the runs differ


def test_method_auto_and_unknown():
  mesh = parallel.make_mesh(1)
  piczak, envnetv2 = models.MODELS['piczakcnn'], models.MODELS['envnetv2']
  for model in (piczak, envnetv2, TinyNet()):
    assert multirun.resolve_method('auto', mesh, model) == 'unroll'  # CPU devices here
    assert multirun.resolve_method('vmap', mesh, model) == 'vmap'
  # On an accelerator: vmap only for the backbone measured to gain from it (benchmarks/README.md).
  gpu_mesh = types.SimpleNamespace(devices=np.array([types.SimpleNamespace(platform='gpu')]))
  assert multirun.resolve_method('auto', gpu_mesh, piczak) == 'vmap'
  assert multirun.resolve_method('auto', gpu_mesh, envnetv2) == 'unroll'
  assert multirun.resolve_method('auto', gpu_mesh, TinyNet()) == 'unroll'
  assert [n for n, m in models.MODELS.items() if m.vmap_runs_on_accelerators] == ['piczakcnn']
  with pytest.raises(ValueError, match=r"^unknown method 'pmap'"):
    multirun.resolve_method('pmap', mesh, piczak)


@pytest.mark.parametrize('name', ['mixup', 'bc', 'speechmix'])
def test_other_strategies_one_step_equals_separate_runs(name):
  """The other strategies (bc and speechmix: A-weighted levels under vmap) for one step."""
  model, opt, mesh = TinyNet(), opt_spec(), parallel.make_mesh(1)
  want_states, want_metrics = separate_runs(model, name, opt, mesh, 1)
  got_states, got_metrics = multi_runs(model, name, opt, mesh, 1)
  assert_metrics_close(got_metrics[0], want_metrics[0])
  for got, want in zip(got_states, want_states):
    assert_state_close(got, want, RTOL_STATE['intermix'])


def test_stacked_train_step_compiles_once_per_statics():
  model, opt, mesh = TinyNet(), opt_spec(), parallel.make_mesh(1)
  step = steps.mesh_train_step(model, mixing.get_strategy('mixup'), opt, NUM_CLASSES, mesh, stack='vmap')
  assert steps.mesh_train_step(TinyNet(), mixing.get_strategy('mixup'), opt_spec(),
                                   NUM_CLASSES, parallel.make_mesh(1), stack='vmap') is step
  sharded = parallel.shard_strategy(mixing.get_strategy('mixup'), mesh)
  assert steps.mesh_train_step(model, sharded, opt, NUM_CLASSES, mesh, stack='vmap') is step
  assert steps.mesh_eval_step(model, mesh, stack='vmap') is steps.mesh_eval_step(TinyNet(), mesh,
                                                                     stack='vmap')
  states = init_states(model, opt, mesh, init_keys())
  keys = parallel.replicate(multirun.stack(train_keys()), mesh)
  for i in range(2):
    states, _ = step(states, parallel.host_batch_to_global(run_batches(i), mesh, pairs=True, runs=True),
                     keys)
  assert step._cache_size() == 1
  np.testing.assert_array_equal(np.asarray(states.step), [2] * K)


# ------------------------------------------------------------------------------------------------
# 2. Eval
# ------------------------------------------------------------------------------------------------
def test_stacked_eval_step_equals_separate_eval_steps():
  model, opt, mesh = TinyNet(), opt_spec(), parallel.make_mesh(1)
  states = init_states(model, opt, mesh, init_keys())
  keys = parallel.replicate(multirun.stack(train_keys()), mesh)
  step = steps.mesh_train_step(model, mixing.get_strategy('standard'), opt, NUM_CLASSES, mesh, stack='vmap')
  states, _ = step(states, parallel.host_batch_to_global(run_batches(0), mesh, pairs=True, runs=True), keys)
  rng = np.random.default_rng(5)
  b, crops = 5, 3
  eval_batches = [dict(x=rng.standard_normal((b, crops, model.input_length)).astype(np.float32),
                       y=rng.integers(0, NUM_CLASSES, b).astype(np.int32),
                       mask=np.array([True] * (b - k) + [False] * k)) for k in range(K)]
  got = jax.device_get(steps.mesh_eval_step(model, mesh, stack='vmap')(
      states, parallel.host_batch_to_global(eval_batches, mesh, runs=True)))
  assert got['probs'].shape == (K, b, NUM_CLASSES) and got['count'].shape == (K,)
  one = steps.mesh_eval_step(model, mesh)
  per_run = multirun.unstack(jax.device_get(states), K)
  want = multirun.stack([jax.device_get(one(parallel.replicate(s, mesh),
                                            parallel.host_batch_to_global(e, mesh)))
                         for s, e in zip(per_run, eval_batches)])
  np.testing.assert_allclose(got['probs'], want['probs'], rtol=1e-6, atol=1e-7)
  for name in ('pred', 'correct', 'num_correct', 'count'):
    np.testing.assert_array_equal(got[name], want[name], err_msg=name)
  np.testing.assert_array_equal(got['count'], [b - k for k in range(K)])


def test_evaluate_clips_over_stacked_runs_equals_each_run_evaluated_alone():
  """trained.evaluate_clips(runs=True) (the vmapped eval of stacked runs) on test folds of 7, 11 and 3 clips
  (batches of 4: 2, 3 and 1 batches; the shorter folds get fully masked batches) == each run's
  trained.evaluate_clips: the same predictions, labels, totals and error, in clip order."""
  from intermix_jax import trained
  from intermix_jax.data import pipeline
  from test_on_device import _noise_index
  model, opt, mesh = TinyNet(), opt_spec(), parallel.make_mesh(1)
  states = init_states(model, opt, mesh, init_keys())
  keys = parallel.replicate(multirun.stack(train_keys()), mesh)
  step = steps.mesh_train_step(model, mixing.get_strategy('standard'), opt, NUM_CLASSES, mesh, stack='vmap')
  states, _ = step(states, parallel.host_batch_to_global(run_batches(0), mesh, pairs=True, runs=True), keys)
  loaders = [pipeline.EvalLoader(
      _noise_index([[(i + k) % NUM_CLASSES for i in range(n)]], [40, 64, 90], seed=k),
      input_length=model.input_length, batch_size=4, num_crops=2, num_threads=0)
      for k, n in enumerate((7, 11, 3))]
  got = trained.evaluate_clips(steps.mesh_eval_step(model, mesh, stack='vmap'), states, loaders, mesh,
                              per_clip=('pred', 'probs'), runs=True)
  one = steps.mesh_eval_step(model, mesh)
  for k, (state, loader) in enumerate(zip(multirun.unstack(jax.device_get(states), K), loaders)):
    want = trained.evaluate_clips(one, parallel.replicate(state, mesh), loader, mesh,
                                  per_clip=('pred', 'probs'))
    assert got[k]['count'] == loader.num_examples == want['count']
    for name in ('pred', 'labels', 'num_correct', 'error'):
      np.testing.assert_array_equal(got[k][name], want[name], err_msg=name)
    np.testing.assert_allclose(got[k]['probs'], want['probs'], rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------------------------------------
# 3. A NaN stays in its run
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('name', ['standard', 'intermix'])
def test_nan_in_one_run_changes_no_other_run(name):
  model, opt, mesh = TinyNet(), opt_spec(), parallel.make_mesh(1)
  bad_run, bad_step = 1, 1

  def poisoned(i):
    batches = run_batches(i)
    if i == bad_step:
      batches[bad_run]['x'][3, 5] = np.nan
    return batches

  clean_states, clean_metrics = multi_runs(model, name, opt, mesh, 3)
  states, metrics = multi_runs(model, name, opt, mesh, 3, batches=poisoned)
  step_before_nan, _ = multi_runs(model, name, opt, mesh, bad_step)
  # Every other run: bitwise what it is without the NaN (same program, same inputs for that run).
  for k in range(K):
    if k != bad_run:
      chex.assert_trees_all_equal(states[k], clean_states[k])
      for got, want in zip(metrics, clean_metrics):
        chex.assert_trees_all_equal(jax.tree.map(lambda x: x[k], got),
                                    jax.tree.map(lambda x: x[k], want))
  # The bad run: the step was not applied, counted once, training went on afterwards.
  m = metrics[bad_step]
  assert not bool(m['finite'][bad_run]) and bool(np.all(np.delete(m['finite'], bad_run)))
  np.testing.assert_array_equal(m['nonfinite_count'], [int(k == bad_run) for k in range(K)])
  bad = states[bad_run]
  assert int(bad.nonfinite_count) == 1 and int(bad.first_nonfinite_step) == bad_step
  assert bool(metrics[-1]['finite'][bad_run])
  # Its state after the NaN step equals its state before it (only step and schedule count move):
  # rerun the poisoned prefix and compare.
  after_nan, _ = multi_runs(model, name, opt, mesh, bad_step + 1, batches=poisoned)
  before, after = step_before_nan[bad_run], after_nan[bad_run]
  chex.assert_trees_all_equal(before.params, after.params)
  chex.assert_trees_all_equal(before.batch_stats, after.batch_stats)
  zero_count = lambda t: optax.tree_utils.tree_set(t, count=jnp.zeros((), jnp.int32))
  chex.assert_trees_all_equal(zero_count(jax.tree.map(jnp.asarray, before.opt_state)),
                              zero_count(jax.tree.map(jnp.asarray, after.opt_state)))
  assert int(after.step) == bad_step + 1
  assert int(optax.tree_utils.tree_get(after.opt_state, 'count')) == bad_step + 1


# ------------------------------------------------------------------------------------------------
# 4. stack / unstack
# ------------------------------------------------------------------------------------------------
def test_stack_unstack_round_trip_with_typed_keys():
  trees = [dict(w=np.full((2, 3), k, np.float32), s=jnp.int32(k), key=jax.random.key(k),
                keys=jax.random.split(jax.random.key(7 + k), 4), nested=(np.arange(3) + k,))
           for k in range(K)]
  stacked = multirun.stack(trees)
  assert stacked['w'].shape == (K, 2, 3) and isinstance(stacked['w'], np.ndarray)
  assert isinstance(stacked['s'], jax.Array) and stacked['s'].shape == (K,)
  assert jax.dtypes.issubdtype(stacked['key'].dtype, jax.dtypes.prng_key)
  assert stacked['key'].shape == (K,) and stacked['keys'].shape == (K, 4)
  assert multirun.num_runs(stacked) == K
  back = multirun.unstack(stacked, K)
  assert len(back) == K
  for got, want in zip(back, trees):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    assert jax.dtypes.issubdtype(got['key'].dtype, jax.dtypes.prng_key)
    np.testing.assert_array_equal(jax.random.key_data(got['key']),
                                  jax.random.key_data(want['key']))
    np.testing.assert_array_equal(jax.random.key_data(got['keys']),
                                  jax.random.key_data(want['keys']))
    for name in ('w', 's'):
      np.testing.assert_array_equal(got[name], want[name])
    np.testing.assert_array_equal(got['nested'][0], want['nested'][0])
  # A TrainState and keys survive the round trip and placement on the mesh.
  mesh = parallel.make_mesh(1)
  states = init_states(TinyNet(), opt_spec(), mesh, init_keys())
  assert all(x.sharding.is_fully_replicated for x in jax.tree.leaves(states))
  placed_keys = parallel.replicate(multirun.stack(train_keys()), mesh)
  assert jax.dtypes.issubdtype(placed_keys.dtype, jax.dtypes.prng_key)
  chex.assert_trees_all_equal(multirun.stack(multirun.unstack(jax.device_get(states), K)),
                              jax.device_get(states))


def test_stack_and_placement_errors():
  with pytest.raises(ValueError, match='K must be'):
    multirun.stack([])
  with pytest.raises(ValueError, match='structure'):
    multirun.stack([dict(a=np.zeros(2)), dict(b=np.zeros(2))])
  with pytest.raises(ValueError, match='differs'):
    multirun.stack([np.zeros(2), np.zeros(3)])
  with pytest.raises(ValueError, match='expected 2 runs'):
    multirun.unstack(np.zeros((3, 2)), 2)
  with pytest.raises(ValueError, match='same leading run axis'):
    multirun.num_runs(dict(a=np.zeros((3, 2)), b=np.zeros((2,))))
  mesh = parallel.make_mesh(1)
  with pytest.raises(ValueError, match='whole pairs'):
    parallel.host_batch_to_global([make_batch(n=3)] * 2, mesh, pairs=True, runs=True)
  with pytest.raises(ValueError, match=r'same leading \(run, batch\) axes'):
    parallel.host_batch_to_global(dict(x=np.zeros((2, 4, 5)), y=np.zeros((2, 6))), mesh, runs=True)
  got = parallel.host_batch_to_global([make_batch(n=4, seed=k) for k in range(2)], mesh,
                                        pairs=True, runs=True)
  assert got['x'].shape == (2, 4, 64) and got['x'].sharding == parallel.batch_sharding(mesh, runs=True)


# ------------------------------------------------------------------------------------------------
# 5. 8 simulated devices (measured in tests/_mp_eight_devices.py's child, checked in test_parallel)
# ------------------------------------------------------------------------------------------------
def eight_device_measurements():
  """Run by tests/_mp_eight_devices.py under 8 simulated CPU devices: the measurements that
  tests/test_parallel.py's test_eight_devices_multi_run_step and _data_on_device check (a dict)."""
  out = {'device_count': jax.device_count()}
  model, opt = TinyNet(), opt_spec()
  mesh8, mesh1 = parallel.make_mesh(8), parallel.make_mesh(1)
  batches = lambda i: run_batches(i, n=16)  # 2 rows (one pair) per device

  def rel(got_states, want_states):
    return max(float(np.max(np.abs(np.asarray(a, np.float64) - b)) / max(np.max(np.abs(b)), 1e-30))
               for g, w in zip(got_states, want_states)
               for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(w))
               if np.asarray(b).dtype.kind == 'f' and np.size(b))

  # Placement: batch on axis 1 over 8 devices, states replicated after a step.
  placed = parallel.host_batch_to_global(batches(0), mesh8, pairs=True, runs=True)
  out['x_shard_shapes'] = sorted({tuple(s.data.shape) for s in placed['x'].addressable_shards})
  step = steps.mesh_train_step(model, mixing.get_strategy('intermix'), opt, NUM_CLASSES, mesh8, stack='vmap')
  states, _ = step(init_states(model, opt, mesh8, init_keys()), placed,
                   parallel.replicate(multirun.stack(train_keys()), mesh8))
  out['states_replicated'] = all(x.sharding.is_fully_replicated for x in jax.tree.leaves(states))
  # standard: 8 devices == 1 device (synchronised BatchNorm, global mean loss).
  s8, m8 = multi_runs(model, 'standard', opt, mesh8, 2, batches=batches)
  s1, m1 = multi_runs(model, 'standard', opt, mesh1, 2, batches=batches)
  out['standard_rel'] = rel(s8, s1)
  out['standard_loss'] = [np.asarray(m['loss']).tolist() for m in (m8[-1], m1[-1])]
  # intermix (plans per device): the multi-run step on 8 devices == the one-run steps on 8.
  got, gm = multi_runs(model, 'intermix', opt, mesh8, 2, batches=batches)
  want, wm = separate_runs(model, 'intermix', opt, mesh8, 2, batches=batches)
  out['intermix_rel'] = rel(got, want)
  out['intermix_loss'] = [np.asarray(m['loss']).tolist() for m in (gm[-1], wm[-1])]
  out['intermix_finite'] = bool(np.all(gm[-1]['finite']))
  # unroll on 8 devices: the one-run step K times == the separate 8-device runs.
  got, gm = multi_runs(model, 'intermix', opt, mesh8, 2, batches=batches, method='unroll')
  out['unroll_rel'] = rel(got, want)
  out['unroll_loss'] = [np.asarray(m['loss']).tolist() for m in (gm[-1], wm[-1])]
  # data_on_device: K runs' crops cut on 8 devices (one shared table) == the host batches placed,
  # and the step that cuts them itself == the step on the placed host batches.
  from intermix_jax.data import on_device
  from test_on_device import _loader, _noise_index
  index = _noise_index([[0, 1, 2] * 16], [30, 64, 65, 200])
  loaders = [_loader(index, strong=False, pairs=True, t=64, batch=16, seed=k) for k in range(K)]
  inputs = on_device.device_inputs(
      loaders, mesh8, place=functools.partial(parallel.host_batch_to_global, mesh=mesh8, pairs=True,
                                              runs=True), replicate=parallel.replicate, stacked=True)
  step = steps.mesh_train_step(model, mixing.get_strategy('intermix'), opt, NUM_CLASSES, mesh8, stack='vmap')
  keys = parallel.replicate(multirun.stack(train_keys()), mesh8)
  host_states = dev_states = init_states(model, opt, mesh8, init_keys())
  dev_states = jax.tree.map(jnp.copy, dev_states)
  fused, same = inputs.fuse(step), True
  for i in range(2):
    host = parallel.host_batch_to_global([l.batch(0, i) for l in loaders], mesh8, pairs=True, runs=True)
    got = inputs.batch(0, i)
    same &= all(np.array_equal(np.asarray(got[k]), np.asarray(host[k])) for k in ('x', 'y'))
    out['device_data_shards'] = sorted({tuple(s.data.shape) for s in got['x'].addressable_shards})
    host_states, _ = step(host_states, host, keys)
    dev_states, _ = fused(dev_states, inputs.plan(0, i), keys)
  out['device_data_equal'] = bool(same)
  out['device_data_rel'] = rel(multirun.unstack(jax.device_get(dev_states), K),
                               multirun.unstack(jax.device_get(host_states), K))
  return out
