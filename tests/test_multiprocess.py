"""Two real JAX processes on localhost (jax.distributed, CPU gloo collectives), 2 CPU devices each.

Each process runs tests/_mp_worker.py: it joins through `distributed.initialize_distributed` (launch
read from JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID), reads its own shard of the
synthetic dataset's training split with `data.make_train_loader(..., process_index, process_count)`,
feeds it as a global batch over the 4-device mesh and trains a tiny model with the sharded intermix
strategy for one epoch. Checked: both end with identical parameters, they read disjoint clips that
together cover the split, and the result equals a 1-device run on the same global batches (so
gradients are averaged once, not summed over processes or devices).
"""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import _mp_common as C
from intermix_jax import data, mixing

GLOBAL_BATCH = 8       # 2 processes x 2 local devices x 2 rows (one pair) each
BATCH_PER_PROCESS = GLOBAL_BATCH // 2
LOCAL_DEVICES = 2
TIMEOUT = 240


@pytest.fixture(scope='module')
def runs(tmp_path_factory, synthetic_data_dir):
  config = C.synthetic_config(synthetic_data_dir, GLOBAL_BATCH)
  data.prepare(config, 16000)  # once, here: the workers only read
  tmp = tmp_path_factory.mktemp('mp')
  port = C.free_port()
  procs, outs = [], []
  for i in range(2):
    env = C.subprocess_env(LOCAL_DEVICES)
    env.update(JAX_COORDINATOR_ADDRESS=f'127.0.0.1:{port}', JAX_NUM_PROCESSES='2',
               JAX_PROCESS_ID=str(i),
               JAX_COORDINATOR_BIND_ADDRESS=f'127.0.0.1:{port}')  # loopback only (default: [::])
    outs.append(str(tmp / f'p{i}.npz'))
    procs.append(subprocess.Popen(
        [sys.executable, os.path.join(C.TESTS_DIR, '_mp_worker.py'), outs[-1], synthetic_data_dir,
         str(GLOBAL_BATCH)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True))
  logs = []
  try:
    for p in procs:
      logs.append(p.communicate(timeout=TIMEOUT))
  except subprocess.TimeoutExpired:
    for p in procs:
      p.kill()
    for p in procs:
      p.communicate()
    pytest.fail(f'two-process run did not finish within {TIMEOUT} s')
  for i, (p, (out, err)) in enumerate(zip(procs, logs)):
    assert p.returncode == 0, f'process {i} failed (exit {p.returncode}):\n{out[-2000:]}\n{err[-6000:]}'
  return [dict(np.load(o)) for o in outs]


def _params(run):
  return {k: v for k, v in run.items() if k.startswith('param/')}


def test_processes_joined_one_global_mesh(runs):
  infos = [json.loads(str(r['info'])) for r in runs]
  assert [i['process_index'] for i in infos] == [0, 1]
  assert all(i['process_count'] == 2 and i['device_count'] == 2 * LOCAL_DEVICES and
             i['local_device_count'] == LOCAL_DEVICES for i in infos)
  assert [i['is_main'] for i in infos] == [True, False]
  assert infos[0]['losses'] == infos[1]['losses']  # the global loss, seen by both


def test_identical_parameters(runs):
  p0, p1 = _params(runs[0]), _params(runs[1])
  assert p0.keys() == p1.keys() and p0
  for k in p0:
    np.testing.assert_array_equal(p0[k], p1[k], err_msg=k)


def test_disjoint_shards_cover_the_split(runs):
  info = json.loads(str(runs[0]['info']))
  steps = info['steps_per_epoch']
  ids0, ids1 = runs[0]['ids'], runs[1]['ids']
  assert ids0.shape == ids1.shape == (steps, BATCH_PER_PROCESS)
  assert not set(ids0.ravel()) & set(ids1.ravel())
  # One epoch drops at most a partial batch; here 240 clips / 8 = 30 full batches: every clip.
  assert info['num_examples'] == steps * GLOBAL_BATCH
  assert sorted(np.concatenate([ids0.ravel(), ids1.ravel()])) == list(range(info['num_examples']))


def test_equals_one_device_run_on_the_same_global_batches(runs):
  info = json.loads(str(runs[0]['info']))
  model, tx = C.TinyNet(num_classes=info['num_classes']), C.make_tx()
  strategy = mixing.get_strategy('intermix')  # TinyNet: one hidden point, so one layer everywhere
  v = C.init_variables(model)
  state = (v['params'], v['batch_stats'], tx.init(v['params']))
  base = jax.random.key(0)
  losses = []
  for step in range(info['steps_per_epoch']):
    x = np.concatenate([runs[0]['x'][step], runs[1]['x'][step]])  # process order
    y = np.concatenate([runs[0]['y'][step], runs[1]['y'][step]])
    state, loss = C.reference_step(model, strategy, tx, state, x, y,
                                   jax.random.fold_in(base, step), 2 * LOCAL_DEVICES)
    losses.append(float(loss))
  np.testing.assert_allclose(info['losses'], losses, rtol=1e-4)
  ref = {'param/' + jax.tree_util.keystr(p): np.asarray(a)
         for p, a in jax.tree_util.tree_leaves_with_path(state[0])}
  init = {'param/' + jax.tree_util.keystr(p): np.asarray(a)
          for p, a in jax.tree_util.tree_leaves_with_path(v['params'])}
  assert max(np.abs(ref[k] - init[k]).max() for k in ref) > 1e-2  # training moved the params
  got = _params(runs[0])
  for k in ref:
    np.testing.assert_allclose(got[k], ref[k], rtol=1e-4, atol=1e-5, err_msg=k)
