"""One process of the two-process test (tests/test_multiprocess.py); loopback only.

Usage (the environment gives the launch: JAX_COORDINATOR_ADDRESS=127.0.0.1:PORT, JAX_NUM_PROCESSES,
JAX_PROCESS_ID; XLA_FLAGS sets the local CPU device count):
  python tests/_mp_worker.py OUT.npz DATA_DIR GLOBAL_BATCH

Prepares the synthetic dataset in DATA_DIR through `distributed.prepare_data_once` (process 0 prepares,
the other waits at a barrier; every later `data.prepare` call is recorded with whether the data was
already there). Trains C.TinyNet with the sharded 'intermix' strategy for one epoch (fold 1 held
out) on the global mesh, each process reading its own shard through
`data.make_train_loader(..., process_index, process_count)`. Then evaluates the trained net on the
test fold with the trainer's evaluation loop `trained.evaluate_clips` twice: on that
(process-major) mesh and on a mesh whose device order interleaves the processes (p0, p1, p0, p1),
where each process's rows are not contiguous in the global batch. Saves the clip indices it read (as observed on the loader's
ClipIndex.read), its batches, the final parameters and BatchNorm statistics and both evaluations
to OUT.npz.
"""
import collections
import functools
import json
import sys

import jax

jax.config.update('jax_cpu_collectives_implementation', 'gloo')

from intermix_jax import distributed  # noqa: E402  (initialise before any other JAX use)

assert distributed.initialize_distributed(None, initialization_timeout=60)

import numpy as np  # noqa: E402

import _mp_common as C  # noqa: E402
from intermix_jax import data, mixing, parallel, steps, trained  # noqa: E402

EvalState = collections.namedtuple('EvalState', 'params batch_stats')  # what steps.eval_step reads


def interleaved_mesh():
  """Mesh over every device ordered (local device 0 of each process, local device 1 of each, ...)."""
  def key(d):
    own = [x for x in jax.devices() if x.process_index == d.process_index]
    return own.index(d), d.process_index
  return parallel.make_mesh(devices=sorted(jax.devices(), key=key))


def evaluate(model, params, batch_stats, loader, mesh):
  """trained.evaluate_clips on `mesh` (the trainer's eval step, steps.mesh_eval_step) as the
  trainer records it (error, num_correct, count, preds, labels), plus `gathered_index`: the clip
  index of every gathered row in the order the mesh gave them (observed on
  parallel.global_to_host), before clip_order."""
  step = steps.mesh_eval_step(model, mesh)
  state = parallel.replicate(EvalState(params, batch_stats), mesh)
  gathered, real_global_to_host = [], parallel.global_to_host

  def recording_global_to_host(tree):
    out = real_global_to_host(tree)
    gathered.extend(int(i) for o in out for i in np.asarray(o['index']).ravel())
    return out
  parallel.global_to_host = recording_global_to_host
  try:
    ev = trained.evaluate_clips(step, state, loader, mesh)
  finally:
    parallel.global_to_host = real_global_to_host
  return dict(error=float(ev['error']), num_correct=int(ev['num_correct']), count=ev['count'],
              preds=ev['pred'].tolist(), labels=ev['labels'].tolist(), gathered_index=gathered)


def stacked_runs(config, model, params, batch_stats, mesh, pairs, test):
  """Two runs stacked across the processes (test folds 1 and 2): their crops cut on the devices
  from one table (data_on_device) against their placed host batches, and their vmapped
  evaluation (trained.evaluate_clips(runs=True); the trained net as both runs' state) against each run
  evaluated alone. Returns dict(crops_equal, eval_equal, eval_counts)."""
  import copy  # pylint: disable=g-import-not-at-top
  from intermix_jax import multirun  # pylint: disable=g-import-not-at-top
  from intermix_jax.data import on_device  # pylint: disable=g-import-not-at-top
  pi, pc = jax.process_index(), jax.process_count()
  configs = [config, copy.deepcopy(config)]
  configs[1].fold = 2
  loaders = [data.make_train_loader(c, 16000, C.T, process_index=pi, process_count=pc,
                                    num_threads=0) for c in configs]
  inputs = on_device.device_inputs(
      loaders, mesh, place=functools.partial(parallel.host_batch_to_global, mesh=mesh, pairs=pairs,
                                             runs=True), replicate=parallel.replicate, stacked=True)
  crops_equal = True
  for step in range(2):
    dev = parallel.global_to_host(inputs.batch(0, step))
    host = parallel.global_to_host(parallel.host_batch_to_global(
        [{k: l.batch(0, step)[k] for k in ('x', 'y')} for l in loaders], mesh, pairs=pairs, runs=True))
    crops_equal &= all(np.array_equal(dev[k], host[k]) for k in ('x', 'y'))
  tests = [test, data.make_eval_loader(configs[1], 16000, C.T, process_index=pi, process_count=pc,
                                       num_threads=0)]
  states = parallel.replicate(multirun.stack([EvalState(params, batch_stats)] * 2), mesh)
  together = trained.evaluate_clips(steps.mesh_eval_step(model, mesh, stack='vmap'), states, tests, mesh, runs=True)
  alone = [evaluate(model, params, batch_stats, t, mesh) for t in tests]
  eval_equal = all(t['pred'].tolist() == a['preds'] and t['labels'].tolist() == a['labels']
                   and int(t['num_correct']) == a['num_correct']
                   for t, a in zip(together, alone))
  return dict(crops_equal=bool(crops_equal), eval_equal=bool(eval_equal),
              eval_counts=[int(t['count']) for t in together])


def main(out_path, data_dir, global_batch):
  config = C.synthetic_config(data_dir, global_batch)
  prepare_calls = []  # per data.prepare call: was the dataset already prepared?
  real_prepare = data.prepare

  def recording_prepare(cfg, rate):
    builder = data.get_builder(cfg.dataset, rate, data_dir=cfg.data_dir)
    prepare_calls.append(bool(builder.is_prepared()))
    return real_prepare(cfg, rate)
  data.prepare = recording_prepare  # make_*_loader and distributed.prepare_data_once look it up here
  distributed.prepare_data_once(config, 16000)

  mesh = parallel.make_mesh()
  loader = data.make_train_loader(config, 16000, C.T, process_index=jax.process_index(),
                                  process_count=jax.process_count(), num_threads=0)
  read = []
  index_read = loader.index.read
  loader.index.read = lambda idx: (read.append(np.asarray(idx)), index_read(idx))[1]

  strategy = parallel.shard_strategy(mixing.get_strategy(config.strategy), mesh)
  model, tx = C.TinyNet(num_classes=data.dataset_info(config).num_classes), C.make_tx()
  v = C.init_variables(model)
  state = parallel.replicate((v['params'], v['batch_stats'], tx.init(v['params'])), mesh)
  base = jax.random.key(0)
  xs, ys, losses = [], [], []
  for step, batch in enumerate(loader.batches(0)):
    x, y = parallel.host_batch_to_global((batch['x'], batch['y']), mesh, pairs=strategy.mixes)
    key = parallel.replicate(jax.random.fold_in(base, step), mesh)
    state, loss = C.train_step(model, strategy, tx, state, x, y, key)
    xs.append(batch['x'])
    ys.append(batch['y'])
    losses.append(float(parallel.global_to_host(loss)))
  params, batch_stats = parallel.global_to_host(state[:2])
  flat = {'param/' + jax.tree_util.keystr(p): np.asarray(a)
          for p, a in jax.tree_util.tree_leaves_with_path(params)}
  flat.update({'bstat/' + jax.tree_util.keystr(p): np.asarray(a)
               for p, a in jax.tree_util.tree_leaves_with_path(batch_stats)})

  test = data.make_eval_loader(config, 16000, C.T, process_index=jax.process_index(),
                               process_count=jax.process_count(), num_threads=0)
  meshes = dict(process_major=mesh, interleaved=interleaved_mesh())
  evals = {name: evaluate(model, params, batch_stats, test, m) for name, m in meshes.items()}
  stacked = stacked_runs(config, model, params, batch_stats, mesh, strategy.mixes, test)
  info = dict(process_index=jax.process_index(), process_count=jax.process_count(),
              device_count=jax.device_count(), local_device_count=jax.local_device_count(),
              is_main=distributed.is_main_process(), losses=losses,
              num_examples=loader.num_examples, steps_per_epoch=loader.steps_per_epoch,
              num_classes=model.num_classes, prepare_calls=prepare_calls,
              eval_filenames=test.filenames, evals=evals, stacked=stacked,
              mesh_processes={n: [d.process_index for d in m.devices.flat]
                              for n, m in meshes.items()})
  np.savez(out_path, ids=np.stack(read), x=np.stack(xs), y=np.stack(ys), info=json.dumps(info),
           **flat)
  print('DONE ' + json.dumps(info), flush=True)
  jax.distributed.shutdown()
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
