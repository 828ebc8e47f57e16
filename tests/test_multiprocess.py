"""Two real JAX processes on localhost (jax.distributed, CPU gloo collectives), 2 CPU devices each.

Each process runs tests/_mp_worker.py: it joins through `distributed.initialize_distributed` (launch
read from JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID), reads its own shard of the
synthetic dataset's training split with `data.make_train_loader(..., process_index, process_count)`,
feeds it as a global batch over the 4-device mesh and trains a tiny model with the sharded intermix
strategy for one epoch. Checked: both end with identical parameters, they read disjoint clips that
together cover the split, and the result equals a 1-device run on the same global batches (so
gradients are averaged once, not summed over processes or devices). The dataset is prepared by the
workers themselves (`distributed.prepare_data_once`: process 0 prepares, process 1 waits and finds it
ready). The trainer's evaluation (`trained.evaluate_clips`) of the trained net, on the process-major
mesh and on a mesh interleaving the processes' devices, gives every test clip exactly once with its
label, in `filenames` order, on both processes, equal to a 1-device evaluation.

In-process unit tests (no subprocess) check the EvalLoader `index` field and the reordering
(`trained.clip_order`) on a fake 2-process layout whose devices interleave.
"""
import collections
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import _mp_common as C
from intermix_jax import data, mixing, parallel, steps, trained
from intermix_jax.data import pipeline

GLOBAL_BATCH = 8       # 2 processes x 2 local devices x 2 rows (one pair) each
BATCH_PER_PROCESS = GLOBAL_BATCH // 2
LOCAL_DEVICES = 2
TIMEOUT = 240


@pytest.fixture(scope='module')
def mp_data_dir(tmp_path_factory):
  """An empty data_dir: the workers prepare the synthetic dataset in it (process 0 only)."""
  return str(tmp_path_factory.mktemp('mp_tfds'))


@pytest.fixture(scope='module')
def runs(tmp_path_factory, mp_data_dir):
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
        [sys.executable, os.path.join(C.TESTS_DIR, '_mp_worker.py'), outs[-1], mp_data_dir,
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
  # 30 SGD steps with momentum: the float32 reduction order (gloo all-reduce over 4 devices vs one
  # device) drifts by up to ~1e-4; a wrong gradient scale (summed over processes or devices) is off
  # by the size of the training update itself (> 1e-2, checked above).
  for k in ref:
    np.testing.assert_allclose(got[k], ref[k], rtol=1e-3, atol=2e-4, err_msg=k)


# --- data preparation and evaluation of the two-process run ------------------------------------

def test_process_0_prepares_the_data_the_other_waits(runs):
  calls = [json.loads(str(r['info']))['prepare_calls'] for r in runs]
  # Process 0 found an empty data_dir and prepared it; its later calls (the loaders) found it ready.
  assert calls[0][0] is False and all(calls[0][1:]) and len(calls[0]) >= 2
  # Process 1 only ever asked after the barrier: the data was always there (no race).
  assert calls[1] and all(calls[1])


def _one_process_eval_loader(data_dir):
  config = C.synthetic_config(data_dir, GLOBAL_BATCH)
  return data.make_eval_loader(config, 16000, C.T, num_threads=0)


def test_evaluation_covers_every_test_clip_once_with_its_label(runs, mp_data_dir):
  infos = [json.loads(str(r['info'])) for r in runs]
  reference = _one_process_eval_loader(mp_data_dir)  # the prepared test fold, read by 1 process
  n = reference.num_examples
  assert n == 60 and n % 16  # eval_batch_size 16: the last global batch has padding rows
  assert infos[0]['mesh_processes'] == {'process_major': [0, 0, 1, 1], 'interleaved': [0, 1, 0, 1]}
  # Rows as the meshes gathered them: in clip order on the process-major mesh, not on the other.
  per_process = [{name: ev.pop('gathered_index') for name, ev in info['evals'].items()}
                 for info in infos]
  gathered = per_process[0]
  assert per_process[1] == gathered  # every process gathers the same global rows
  assert gathered['process_major'] == list(range(n)) + [-1] * (64 - n)
  assert gathered['interleaved'] != gathered['process_major']
  assert sorted(gathered['interleaved']) == sorted(gathered['process_major'])
  first = infos[0]['evals']['process_major']
  for info in infos:
    assert info['eval_filenames'] == reference.filenames
    for name, ev in info['evals'].items():
      assert ev['count'] == n and len(ev['preds']) == len(ev['labels']) == n, name
      assert ev['labels'] == reference.labels.tolist(), name  # clip i's label at position i
      preds, labels = np.asarray(ev['preds']), np.asarray(ev['labels'])
      assert ev['num_correct'] == int(np.sum(preds == labels)), name
      np.testing.assert_allclose(ev['error'], 100 * np.mean(preds != labels), err_msg=name)
      assert ev == first, name  # the same on both processes, whatever the device order


EvalState = collections.namedtuple('EvalState', 'params batch_stats')


def _unflatten(run, prefix, like):
  return jax.tree_util.tree_map_with_path(
      lambda p, _: run[prefix + jax.tree_util.keystr(p)], like)


def test_stacked_runs_across_processes(runs):
  """Two runs stacked over the two processes' mesh: the crops cut on the devices
  (config.data_on_device) are bitwise the placed host batches, and the vmapped evaluation of
  both runs (trained.evaluate_clips(runs=True)) gives each run's predictions and labels as evaluated alone."""
  for info in (json.loads(str(r['info'])) for r in runs):
    stacked = info['stacked']
    assert stacked['crops_equal'] and stacked['eval_equal'], stacked
    assert stacked['eval_counts'][0] == len(info['eval_filenames'])
    assert min(stacked['eval_counts']) > 0


def test_evaluation_equals_a_one_device_evaluation(runs, mp_data_dir):
  """Predictions in the right places: clip i's prediction is what 1 device predicts for clip i."""
  info = json.loads(str(runs[0]['info']))
  model = C.TinyNet(num_classes=info['num_classes'])
  like = C.init_variables(model)
  state = EvalState(_unflatten(runs[0], 'param/', like['params']),
                    _unflatten(runs[0], 'bstat/', like['batch_stats']))
  mesh = parallel.make_mesh(1)
  ev = trained.evaluate_clips(steps.mesh_eval_step(model, mesh), parallel.replicate(state, mesh),
                              _one_process_eval_loader(mp_data_dir), mesh)
  got = info['evals']['process_major']
  assert len(set(ev['pred'].tolist())) > 2  # the comparison can tell clips apart
  assert got['preds'] == ev['pred'].tolist() and got['labels'] == ev['labels'].tolist()


# --- unit tests of the layout (no subprocess) ----------------------------------------------------

class _ListSource:
  """A stand-in for a tfds data source: clip i is 30 samples all equal to i + 1."""

  def __init__(self, labels, first=0):
    self.examples = [{'audio': np.full(30, first + i + 1, np.int16), 'label': label,
                      'filename': f'clip{first + i:04d}'.encode()} for i, label in enumerate(labels)]

  def __len__(self):
    return len(self.examples)

  def __getitems__(self, keys):
    return [self.examples[k] for k in keys]


def _fake_index():
  return pipeline.ClipIndex([_ListSource([0, 1, 2, 0, 1, 2, 0]), _ListSource([1, 2, 1], first=7)],
                            sort_by_filename=True)


@pytest.mark.parametrize('process_count', [1, 2])
def test_eval_batches_carry_the_clip_index(process_count):
  index = _fake_index()  # 10 clips
  for p in range(process_count):
    loader = pipeline.EvalLoader(index, input_length=20, batch_size=4 * process_count, num_crops=2,
                                 process_index=p, process_count=process_count, num_threads=0)
    for g, b in enumerate(loader.batches()):
      assert b['index'].dtype == np.int32 and b['index'].shape == b['mask'].shape == (4,)
      start = (g * process_count + p) * 4
      want = np.where(np.arange(start, start + 4) < 10, np.arange(start, start + 4), -1)
      np.testing.assert_array_equal(b['index'], want)
      np.testing.assert_array_equal(b['mask'], want >= 0)
      valid = b['mask']
      clip = np.rint(b['x'][valid].max(axis=(1, 2)) * 32768).astype(int) - 1  # from the audio
      np.testing.assert_array_equal(clip, b['index'][valid])
      np.testing.assert_array_equal(b['y'][valid], index.labels[b['index'][valid]])


def test_clip_order_puts_interleaved_rows_back_in_clip_order():
  """A fake 2-process, 2-devices-each job whose mesh orders devices p0, p1, p0, p1: the global
  rows of a batch are [p0 rows 0:2, p1 rows 0:2, p0 rows 2:4, p1 rows 2:4]."""
  index = _fake_index()
  loaders = [pipeline.EvalLoader(index, input_length=20, batch_size=8, num_crops=1,
                                 process_index=p, process_count=2, num_threads=0) for p in (0, 1)]
  rows = collections.defaultdict(list)
  for b0, b1 in zip(loaders[0].batches(), loaders[1].batches()):
    for shard in (b0, b1):
      for k in ('index', 'y'):
        rows[k].append(shard[k][:2])
    for shard in (b0, b1):
      for k in ('index', 'y'):
        rows[k].append(shard[k][2:])
  idx, y = np.concatenate(rows['index']), np.concatenate(rows['y'])
  assert idx.tolist() != sorted(idx.tolist())  # really out of order (and padded: 16 rows)
  pred = np.where(idx >= 0, (7 * idx + 3) % 5, 99)  # a prediction that names its clip
  out = trained.clip_order(idx, dict(pred=pred, y=y), 10)
  assert out['pred'].tolist() == [(7 * i + 3) % 5 for i in range(10)]
  assert out['y'].tolist() == index.labels.tolist()
  # Rows lost or doubled (a wrong gather) are refused, naming the clips.
  with pytest.raises(RuntimeError, match=r'missing \[4\]'):
    trained.clip_order(np.where(idx == 4, -1, idx), dict(pred=pred, y=y), 10)
  dup = np.where(idx == 4, 5, idx)
  with pytest.raises(RuntimeError, match=r'missing \[4\], repeated \[5\]'):
    trained.clip_order(dup, dict(pred=pred, y=y), 10)
  with pytest.raises(ValueError, match='one entry per row'):
    trained.clip_order(idx, dict(pred=pred[:-1]), 10)
