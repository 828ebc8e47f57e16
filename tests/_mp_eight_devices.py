"""Run by tests/test_parallel.py in a child process with 8 simulated CPU devices (the suite's one
8-device child: the multi-run measurements of tests/test_multirun.py are taken here too, under
'multirun').

Prints one JSON line (prefixed 'RESULT ') of measurements; the assertions live in test_parallel.py.
Usage: XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/_mp_eight_devices.py
"""
import collections
import functools
import json
import re
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import _mp_common as C
from intermix_jax import parallel


def max_diff(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb)
  return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
             for x, y in zip(la, lb))


def max_abs(a):
  return max(float(np.max(np.abs(np.asarray(x)))) for x in jax.tree.leaves(a))


def batches(num_steps, n=32, seed=3):
  """Global batches whose rows differ by device slice (offset grows with the row index), so that
  per-device BatchNorm statistics would differ from the global ones."""
  rng = np.random.default_rng(seed)
  for _ in range(num_steps):
    x = rng.normal(size=(n, C.T)).astype(np.float32) + np.linspace(-2, 2, n)[:, None]
    y = rng.integers(0, C.NUM_CLASSES, size=(n,)).astype(np.int32)
    yield x, y


def main():
  out = {'device_count': jax.device_count()}
  t0 = time.perf_counter()
  lap = lambda tag: out.setdefault('seconds', {}).__setitem__(tag, round(time.perf_counter() - t0, 2))
  mesh8, mesh1 = parallel.make_mesh(), parallel.make_mesh(1)
  out['mesh8'] = int(parallel.num_shards(mesh8))

  # A. the trainer's own step (steps.mesh_train_step, as train.py builds it: the strategy per
  #    device through parallel.shard_strategy, parallel.train_step_shardings, on 8 devices and on
  #    1): 'standard' on 8 devices == 1 device on the same global batches (loss, params, BatchNorm
  #    statistics); 'intermix' runs on 8.
  from intermix_jax import mixing, steps

  opt = steps.OptimizerSpec(lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4, num_epochs=1,
                            steps_per_epoch=2, schedule=(), warmup_epochs=0)  # LR 0.1 throughout
  model = C.TinyNet()
  init = jax.device_get(steps.state_initializer(model, opt, mesh1)(jax.random.key(0)))
  trained = {}
  for name, mesh in (('standard', mesh8), ('standard', mesh1), ('intermix', mesh8)):
    strategy = mixing.get_strategy(name)
    fn = steps.mesh_train_step(model, strategy, opt, C.NUM_CLASSES, mesh)
    state = parallel.replicate(init, mesh)
    init_params = jax.device_get(state.params)
    key = parallel.replicate(jax.random.key(1), mesh)
    losses = []
    for x, y in batches(2):
      batch = parallel.host_batch_to_global(dict(x=x, y=y), mesh, pairs=strategy.mixes)
      state, metrics = fn(state, batch, key)
      losses.append(float(metrics['loss']))
    replicated = all(a.sharding.is_fully_replicated for a in jax.tree.leaves(state))
    trained[(name, parallel.num_shards(mesh))] = (jax.device_get(state), losses, replicated,
                                                   bool(metrics['finite']), batch)
  (s8, l8, r8, _, b8), (s1, l1, _, _, _) = trained[('standard', 8)], trained[('standard', 1)]
  out['std_loss_ref'], out['std_loss_8'] = l1, l8
  out['std_params_diff'] = max_diff(s1.params, s8.params)
  out['std_params_scale'] = max_abs(s1.params)
  out['std_params_moved'] = max_diff(init_params, s1.params)
  out['std_bn_diff'] = max_diff(s1.batch_stats, s8.batch_stats)
  out['std_bn_scale'] = max_abs(s1.batch_stats)
  out['state_replicated'] = r8
  out['x_shards'] = len(b8['x'].sharding.device_set)
  out['x_shard_rows'] = sorted({sh.data.shape[0] for sh in b8['x'].addressable_shards})
  si, li, ri, fi, _ = trained[('intermix', 8)]
  out['intermix8'] = dict(losses=li, finite=fi, step=int(si.step), replicated=ri)
  # Per-device (unsynchronised) BatchNorm means would differ from the global ones by this much:
  # the test data can tell the two apart.
  v = C.init_variables(model)
  x0, _ = next(batches(1))
  h = np.asarray(x0 @ np.asarray(v['params']['Dense_0']['kernel']))
  out['per_device_bn_mean_gap'] = float(max(np.abs(c.mean(0) - h.mean(0)).max()
                                            for c in np.split(h, 8)))
  lap('A')
  # B. mixing draws: device d uses strategy.plan(fold_in(key, d), N / 8, K).
  toy = C.ToyStrategy(layers=(0, 1))
  s8 = parallel.shard_strategy(toy, mesh8)
  key = jax.random.key(7)
  n, k_points = 32, 2
  plan8 = jax.jit(lambda k: s8.plan(k, n, k_points))(parallel.replicate(key, mesh8))
  out['plan_r_shape'] = list(plan8.r.shape)
  out['plan_layer_shape'] = list(plan8.layer.shape)
  out['plan_r_sharded'] = len(plan8.r.sharding.device_set)
  diffs = []
  for d in range(8):
    expect = toy.plan(jax.random.fold_in(key, d), n // 8, k_points)
    diffs.append(max_diff(plan8.device_plan(d), expect))
  out['plan_law_diff'] = max(diffs)
  chunks = np.asarray(plan8.r).reshape(8, -1)
  out['plan_r_distinct_devices'] = len({tuple(np.round(c, 6)) for c in chunks})
  out['plan_layers'] = np.asarray(plan8.layer).tolist()

  lap('B')
  # F. mixing through the model: the sharded strategy on 8 devices == the unwrapped one on 1 device
  #    with the same plan (the 8 device plans concatenated; one eligible layer, so the per-step
  #    fields agree): loss, gradients (catches an n-times gradient) and batch_stats.
  v = C.init_variables(model)
  x, y = next(batches(1))
  dkey = jax.random.key(11)
  xg, yg = parallel.host_batch_to_global((x, y), mesh8, pairs=True)
  rv = parallel.replicate((v['params'], v['batch_stats'], key, dkey), mesh8)

  @functools.partial(jax.jit, static_argnums=0)
  def sharded(strategy, params, bs, x, y, key, dkey):
    plan = strategy.plan(key, x.shape[0], model.num_mix_points)
    return C.loss_and_grads(model, strategy, params, bs, x, y, plan, dkey), plan

  for name, layer in (('intermix', 1),):  # phase shift + A-weighted p + interference
    strategy = mixing.get_strategy(name, eligible_layers=(layer,))
    s8 = parallel.shard_strategy(strategy, mesh8)
    (loss8, g8, bs8), plan8 = sharded(s8, rv[0], rv[1], xg, yg, rv[2], rv[3])
    leaves, treedef = jax.tree.flatten(plan8.plan)
    ref_plan = jax.tree.unflatten(treedef, [jnp.asarray(leaf) if per_row else jnp.asarray(leaf)[0]
                                            for leaf, per_row in zip(leaves, plan8.batch_leaves)])
    loss1, g1, bs1 = jax.jit(functools.partial(C.loss_and_grads, model, strategy))(
        v['params'], v['batch_stats'], x, y, ref_plan, dkey)
    tag = f'{name}{layer}'
    out[f'real_{tag}'] = dict(loss=[float(loss1), float(loss8)], grad_diff=max_diff(g1, g8),
                              grad_scale=max_abs(g1), bn_diff=max_diff(bs1, bs8),
                              finite=bool(np.isfinite(float(loss8))))

  lap('F')

  # D. no cross-device traffic in the mixing itself.
  s8 = parallel.shard_strategy(C.ToyStrategy(layers=(1,)), mesh8)

  def mix_only(key, x, y):
    plan = s8.plan(key, x.shape[0], 2)
    return s8.prepare_input(plan, x), s8.mixer(plan, 16000)(x, 1), s8.targets(plan, y)

  xg, yg = parallel.host_batch_to_global(
      (np.ones((32, 8), np.float32), np.eye(32, 4, dtype=np.float32)), mesh8, pairs=True)
  hlo = jax.jit(mix_only).lower(parallel.replicate(key, mesh8), xg, yg).compile().as_text()
  out['mix_collectives'] = [op for op in ('all-reduce', 'all-gather', 'collective-permute',
                                          'all-to-all', 'reduce-scatter') if op in hlo]

  lap('D')
  # G. the trainer's compiled train step on 8 devices (steps.mesh_train_step): the collectives
  #    of every strategy's step are those of the 'standard' step (the all-reduces of the gradients
  #    and of BatchNorm's statistics): the mixing adds none, the partner flip stays on the device.
  #    The same mixing on the global batch without shard_strategy (GSPMD places it) would add some.
  ops = re.compile(r'\b(all-reduce|all-gather|collective-permute|all-to-all|reduce-scatter)'
                   r'(?:-start)?\(')
  x, y = next(batches(1))
  batch8 = parallel.host_batch_to_global(dict(x=x, y=y), mesh8, pairs=True)
  state8, key8 = parallel.replicate(init, mesh8), parallel.replicate(jax.random.key(1), mesh8)

  def collectives(fn):
    hlo = fn.lower(state8, batch8, key8).compile().as_text()
    return dict(collections.Counter(m.group(1) for m in ops.finditer(hlo)))

  out['step_collectives'] = {
      name: collectives(steps.mesh_train_step(model, mixing.get_strategy(name), opt,
                                              C.NUM_CLASSES, mesh8))
      for name in mixing.STRATEGY_NAMES}
  out['global_intermix_collectives'] = collectives(steps.jit_train_step(
      steps.make_train_step(model, mixing.get_strategy('intermix'), opt.tx(), C.NUM_CLASSES,
                            opt.lr_schedule()), **parallel.train_step_shardings(mesh8)))

  lap('G')
  # E. errors users can meet.
  try:
    parallel.host_batch_to_global(np.zeros((24, 4), np.float32), mesh8, pairs=True)
    out['odd_pairs_error'] = None
  except ValueError as e:
    out['odd_pairs_error'] = str(e)
  import test_multirun  # pylint: disable=g-import-not-at-top
  out['multirun'] = test_multirun.eight_device_measurements()
  lap('multirun')
  print('RESULT ' + json.dumps(out))
  return 0


if __name__ == '__main__':
  sys.exit(main())
