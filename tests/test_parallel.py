"""Tests of intermix_jax.parallel and intermix_jax.distributed.

In this process (1 CPU device): mesh and sharding helpers, batch placement and its errors, the
1-device law of shard_strategy (= the unwrapped strategy with the same key, so that a 1-device run
draws what it drew before the trainer always ran on a mesh) for the real strategies, and
environment detection for multi-process launches. The 8-device laws (8 devices == 1 device on the
same global batch, synchronised BatchNorm, per-device mixing draws, no collectives in the mixing,
nor in the trainer's compiled step beyond the gradients' and BatchNorm's all-reduces) run in a
child process with 8 simulated devices (tests/_mp_eight_devices.py), so the
device-count flag does not affect the rest of the suite; the same child measures the K-run step on
8 devices (tests/test_multirun.py's eight_device_measurements), checked here.
"""
import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import _mp_common as C
import test_multirun
from intermix_jax import distributed, mixing, parallel

STRATEGIES = ('standard', 'mixup', 'bc', 'speechmix', 'intermix')


@pytest.fixture(scope='module')
def mesh():
  return parallel.make_mesh()


# --- mesh, shardings, batch placement -------------------------------------------------------------

def test_make_mesh_one_data_axis(mesh):
  assert mesh.axis_names == ('data',)
  assert parallel.num_shards(mesh) == jax.device_count()
  assert mesh.axis_types == (jax.sharding.AxisType.Auto,)
  assert parallel.batch_sharding(mesh).spec == jax.sharding.PartitionSpec('data')
  assert parallel.replicated_sharding(mesh).spec == jax.sharding.PartitionSpec()
  with pytest.raises(ValueError, match='num_devices'):
    parallel.make_mesh(jax.device_count() + 1)


def test_per_process_batch_size(mesh):
  n = parallel.num_shards(mesh)
  assert parallel.per_process_batch_size(64 * n, mesh, pairs=True) == 64 * n
  if n == 1:
    with pytest.raises(ValueError, match='batch_size=3'):
      parallel.per_process_batch_size(3, mesh, pairs=True)


def test_host_batch_round_trip(mesh):
  rng = np.random.default_rng(0)
  batch = dict(x=rng.normal(size=(8, 5)).astype(np.float32), y=np.arange(8, dtype=np.int32))
  g = parallel.host_batch_to_global(batch, mesh, pairs=True)
  assert g['x'].sharding == parallel.batch_sharding(mesh)
  back = parallel.global_to_host(g)
  chex.assert_trees_all_equal(back, batch)


def test_host_batch_errors(mesh):
  with pytest.raises(ValueError, match='same leading'):
    parallel.host_batch_to_global((np.zeros((4, 2)), np.zeros((6,))), mesh)
  with pytest.raises(ValueError, match='same leading'):
    parallel.host_batch_to_global((np.zeros((4, 2)), np.float32(1)), mesh)
  if jax.local_device_count() == 1:
    with pytest.raises(ValueError, match='whole pairs'):
      parallel.host_batch_to_global(np.zeros((3, 2)), mesh, pairs=True)
    parallel.host_batch_to_global(np.zeros((3, 2)), mesh)  # fine when not mixing


def test_replicate_keeps_values_and_key_type(mesh):
  tree = dict(w=np.arange(6.0).reshape(2, 3), key=jax.random.key(3), s=jnp.int32(4))
  r = parallel.replicate(tree, mesh)
  for leaf in jax.tree.leaves(r):
    assert leaf.sharding.is_fully_replicated
  np.testing.assert_array_equal(r['w'], tree['w'])
  assert jax.dtypes.issubdtype(r['key'].dtype, jax.dtypes.prng_key)
  np.testing.assert_array_equal(jax.random.key_data(r['key']), jax.random.key_data(tree['key']))
  assert int(r['s']) == 4


def test_step_shardings(mesh):
  t = parallel.train_step_shardings(mesh)
  repl, data = parallel.replicated_sharding(mesh), parallel.batch_sharding(mesh)
  assert t == dict(in_shardings=(repl, data, repl), out_shardings=(repl, repl))
  assert parallel.eval_step_shardings(mesh) == dict(in_shardings=(repl, data))


# --- shard_strategy on a 1-device mesh: the unwrapped strategy with the same key ------------------

def _run(strategy, key, x, y, h, k, sample_rate=16000):
  plan = strategy.plan(key, x.shape[0], 3)
  mixed = strategy.mixer(plan, sample_rate)(h, k)
  targets = strategy.targets(plan, y)
  return dict(x=strategy.prepare_input(plan, x), h=mixed, targets=targets,
              loss=strategy.loss(h.reshape(h.shape[0], -1)[:, :y.shape[1]], targets))


@pytest.mark.parametrize('name', STRATEGIES)
def test_one_device_law_real_strategies(name):
  mesh1 = parallel.make_mesh(1)
  strategy = mixing.get_strategy(name, **({} if name == 'standard' else dict(eligible_layers=(1,))))
  sharded = parallel.shard_strategy(strategy, mesh1)
  rng = np.random.default_rng(1)
  n = 6
  x = jnp.asarray(rng.normal(size=(n, 256)), jnp.float32)
  h = jnp.asarray(np.abs(rng.normal(size=(n, 4, 32))), jnp.float32)
  y = jax.nn.one_hot(jnp.arange(n) % 3, 3)
  key = jax.random.key(5)
  got = jax.jit(lambda key, x, y, h: _run(sharded, key, x, y, h, 1))(key, x, y, h)
  want = jax.jit(lambda key, x, y, h: _run(strategy, key, x, y, h, 1))(key, x, y, h)
  chex.assert_trees_all_close(got, want, rtol=1e-6, atol=1e-6)
  if strategy.mixes:  # the law is not vacuous: mixing changed h
    assert float(jnp.max(jnp.abs(got['h'] - h))) > 1e-3


def test_one_device_law_gradients_through_mixing():
  """d/dh of a loss through the sharded mixer equals the unwrapped one (no n-times gradients)."""
  mesh1 = parallel.make_mesh(1)
  strategy = mixing.get_strategy('intermix', eligible_layers=(1,))
  sharded = parallel.shard_strategy(strategy, mesh1)
  rng = np.random.default_rng(2)
  h = jnp.asarray(np.abs(rng.normal(size=(4, 64))), jnp.float32)
  key = jax.random.key(9)

  def f(strategy, key, h):
    plan = strategy.plan(key, h.shape[0], 2)
    return jnp.sum(jnp.sin(strategy.mixer(plan, 16000)(h, 1)))

  g_sharded = jax.jit(jax.grad(lambda h: f(sharded, key, h)))(h)
  g_plain = jax.jit(jax.grad(lambda h: f(strategy, key, h)))(h)
  chex.assert_trees_all_close(g_sharded, g_plain, rtol=1e-5, atol=1e-6)


def test_sharded_strategy_interface():
  mesh1 = parallel.make_mesh(1)
  strategy = mixing.get_strategy('intermix', eligible_layers=(1, 2))
  s = parallel.shard_strategy(strategy, mesh1)
  assert (s.name, s.mixes, s.eligible_layers) == ('intermix', True, (1, 2))
  assert hash(s) == hash(parallel.shard_strategy(strategy, mesh1))  # static under jit
  assert parallel.shard_strategy(s, mesh1) is s
  plan = jax.jit(s.plan, static_argnums=(1, 2))(jax.random.key(0), 4, 3)
  assert plan.r.shape == (4,) and plan.layer.shape == (1,)  # per-step fields: one per device
  assert plan.batch_leaves == (False, True, True)  # MixPlan(layer, r, phi)
  leaves, treedef = jax.tree.flatten(plan)
  again = jax.tree.unflatten(treedef, leaves)
  assert isinstance(again, parallel.ShardedPlan) and again.batch_leaves == plan.batch_leaves
  chex.assert_trees_all_equal(plan.device_plan(0), strategy.plan(jax.random.key(0), 4, 3))
  with pytest.raises(IndexError):
    plan.device_plan(1)
  with pytest.raises(ValueError, match='whole pairs'):
    s.plan(jax.random.key(0), 3, 3)
  with pytest.raises(TypeError, match='ShardedPlan'):
    s.targets(strategy.plan(jax.random.key(0), 4, 3), jnp.zeros((4, 3)))


def test_toy_strategy_one_device_law():
  """Same law with the test's own toy strategy (independent of intermix_jax.mixing)."""
  mesh1 = parallel.make_mesh(1)
  toy = C.ToyStrategy(layers=(0, 1))
  s = parallel.shard_strategy(toy, mesh1)
  key = jax.random.key(4)
  x = jnp.arange(24.0).reshape(4, 6)
  y = jax.nn.one_hot(jnp.array([0, 1, 2, 3]), 5)
  run = jax.jit(_run, static_argnums=(0, 5))
  for k in (0, 1):
    got = run(s, key, x, y, x, k)
    want = run(toy, key, x, y, x, k)
    chex.assert_trees_all_close(got, want)


# --- the 8-device laws, in a child process -----------------------------------------------------------

@pytest.fixture(scope='module')
def eight():
  proc = C.run_python('_mp_eight_devices.py', [], C.subprocess_env(8), timeout=900)
  lines = [l for l in proc.stdout.splitlines() if l.startswith('RESULT ')]
  assert proc.returncode == 0 and lines, f'child failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}'
  return json.loads(lines[-1][len('RESULT '):])


def test_eight_devices_standard_step_equals_one_device(eight):
  """The trainer's step (steps.mesh_train_step) on 8 devices == on 1 device."""
  assert eight['device_count'] == 8 and eight['mesh8'] == 8
  assert eight['x_shards'] == 8 and eight['x_shard_rows'] == [4]
  assert eight['state_replicated']
  np.testing.assert_allclose(eight['std_loss_8'], eight['std_loss_ref'], rtol=1e-5)
  assert eight['std_params_moved'] > 1e-2  # the steps did change the parameters
  assert eight['std_params_diff'] <= 1e-5 * eight['std_params_scale']


def test_eight_devices_batchnorm_is_synchronised(eight):
  # Per-device statistics would differ from the global ones by this much in the batch mean ...
  assert eight['per_device_bn_mean_gap'] > 1.0
  # ... but the running statistics after the 8-device steps equal the 1-device ones.
  assert eight['std_bn_diff'] <= 1e-5 * eight['std_bn_scale']


def test_eight_devices_trainer_step_with_sharded_intermix(eight):
  r = eight['intermix8']
  assert r['finite'] and r['step'] == 2 and r['replicated'] and np.all(np.isfinite(r['losses']))


def test_eight_devices_mixing_draws_per_device(eight):
  assert eight['plan_r_shape'] == [32] and eight['plan_layer_shape'] == [8]
  assert eight['plan_r_sharded'] == 8
  assert eight['plan_law_diff'] == 0.0  # device d: plan(fold_in(key, d), N/8, K), exactly
  assert eight['plan_r_distinct_devices'] == 8
  assert len(set(eight['plan_layers'])) > 1  # with this key the devices picked different layers


def test_eight_devices_mixing_gradients_equal_one_device(eight):
  r = eight['real_intermix1']
  np.testing.assert_allclose(r['loss'][1], r['loss'][0], rtol=1e-5)
  assert r['grad_diff'] <= 1e-5 * r['grad_scale'], r
  assert r['bn_diff'] <= 1e-5, r


def test_eight_devices_mixing_has_no_collectives(eight):
  assert eight['mix_collectives'] == []


def test_eight_devices_trainer_step_adds_no_collective_for_the_mixing(eight):
  """The compiled train step (steps.mesh_train_step) of every strategy has exactly the collectives
  of the 'standard' step: the all-reduces of the gradients and of BatchNorm's statistics."""
  got = eight['step_collectives']
  assert set(got) == set(STRATEGIES)
  standard = got['standard']
  assert set(standard) == {'all-reduce'} and standard['all-reduce'] >= 1
  for name, ops in got.items():
    assert ops == standard, (name, ops)
  # Not vacuous: the same mixing on the global batch, without shard_strategy, moves rows.
  assert set(eight['global_intermix_collectives']) - {'all-reduce'}, eight


def test_eight_devices_odd_pairs_error(eight):
  assert 'whole pairs' in eight['odd_pairs_error'] and 'multiple of 16' in eight['odd_pairs_error']


def test_eight_devices_multi_run_step(eight):
  """K runs in one step (tests/test_multirun.py's laws) on 8 devices."""
  m, k = eight['multirun'], test_multirun.K
  assert m['device_count'] == 8
  assert m['x_shard_shapes'] == [[k, 2, 64]]  # every device: all runs, its 2 rows
  assert m['states_replicated']
  # standard: 8 devices x K runs == 1 device x K runs (as above for one run).
  assert m['standard_rel'] <= 1e-5, m
  np.testing.assert_allclose(*m['standard_loss'], rtol=1e-5)
  # intermix: == the 8-device one-run steps (same per-device plans), to InterMix's tolerance.
  assert m['intermix_finite']
  assert m['intermix_rel'] <= test_multirun.RTOL_STATE['intermix'], m
  np.testing.assert_allclose(*m['intermix_loss'], rtol=1e-5)
  # unroll: the same, to standard's tolerance (observed equal).
  assert m['unroll_rel'] <= test_multirun.RTOL_STATE['standard'], m
  np.testing.assert_allclose(*m['unroll_loss'], rtol=1e-6)


def test_eight_devices_data_on_device(eight):
  """K runs' crops cut on 8 devices from one table: bitwise the host batches, sharded as they
  are (each device its 2 rows of every run); the step that cuts them itself ends where the step
  on the host batches does (observed bitwise; asserted to standard's tolerance)."""
  m = eight['multirun']
  assert m['device_data_equal']
  assert m['device_data_shards'] == [[test_multirun.K, 2, 64]]
  assert m['device_data_rel'] <= test_multirun.RTOL_STATE['standard'], m


# --- distributed start-up ------------------------------------------------------------------------------

@pytest.mark.parametrize('env, expect', [
    ({}, None),
    ({'JAX_COORDINATOR_ADDRESS': '10.0.0.1:1234'}, 'JAX_COORDINATOR_ADDRESS'),
    (dict(SLURM_JOB_ID='7', SLURM_STEP_NODELIST='n[1-2]', SLURM_NTASKS='8', SLURM_PROCID='0',
          SLURM_LOCALID='0'), 'SLURM_NTASKS=8'),
    (dict(SLURM_JOB_ID='7', SLURM_STEP_NODELIST='n1', SLURM_NTASKS='1', SLURM_PROCID='0',
          SLURM_LOCALID='0'), None),
    (dict(SLURM_JOB_ID='7', SLURM_NTASKS='4'), None),  # sbatch shell, not inside srun
    (dict(OMPI_COMM_WORLD_SIZE='4', OMPI_MCA_orte_hnp_uri='1.0;tcp://x:1'), 'OMPI_COMM_WORLD_SIZE'),
    (dict(TPU_WORKER_HOSTNAMES='h0,h1,h2,h3'), 'TPU_WORKER_HOSTNAMES lists 4'),
    (dict(TPU_WORKER_HOSTNAMES='h0'), None),
])
def test_multiprocess_launch_reason(env, expect):
  got = distributed.multiprocess_launch_reason(env)
  assert (got is None) if expect is None else (expect in got)


def test_initialize_distributed_noop_when_single_process():
  assert distributed.initialize_distributed(False, environ={'JAX_COORDINATOR_ADDRESS': 'x:1'}) is False
  assert distributed.initialize_distributed(None, environ={}) is False
  assert not jax.distributed.is_initialized()
  assert distributed.is_main_process()


def test_launch_reason_bad_integer_names_the_variable():
  with pytest.raises(ValueError, match='SLURM_NTASKS'):
    distributed.multiprocess_launch_reason(dict(SLURM_JOB_ID='1', SLURM_STEP_NODELIST='n',
                                                SLURM_NTASKS='many', SLURM_PROCID='0',
                                                SLURM_LOCALID='0'))


_SLURM_STEP = dict(SLURM_JOB_ID='7', SLURM_STEP_NODELIST='n[1-2]', SLURM_NTASKS='8',
                   SLURM_PROCID='5', SLURM_LOCALID='1')


@pytest.mark.parametrize('extra, expect', [
    ({}, None),                                                      # no GPU variables: JAX decides
    (dict(CUDA_VISIBLE_DEVICES='3'), [0]),                           # --gpus-per-task=1
    (dict(CUDA_VISIBLE_DEVICES='0,1,2,3', SLURM_STEP_TASKS_PER_NODE='4(x2)'), None),  # task i: GPU i
    (dict(CUDA_VISIBLE_DEVICES='0,1,2,3', SLURM_STEP_TASKS_PER_NODE='1(x2)'), [0, 1, 2, 3]),
    (dict(ROCR_VISIBLE_DEVICES='2,3', SLURM_TASKS_PER_NODE='1,1'), [0, 1]),
])
def test_slurm_local_device_ids(extra, expect):
  assert distributed.slurm_local_device_ids(dict(_SLURM_STEP, **extra)) == expect
  assert distributed.slurm_local_device_ids(dict(extra)) is None  # outside a SLURM step
