"""One process of the two-process test (tests/test_multiprocess.py); loopback only.

Usage (the environment gives the launch: JAX_COORDINATOR_ADDRESS=127.0.0.1:PORT, JAX_NUM_PROCESSES,
JAX_PROCESS_ID; XLA_FLAGS sets the local CPU device count):
  python tests/_mp_worker.py OUT.npz DATA_DIR GLOBAL_BATCH

Trains C.TinyNet with the sharded 'intermix' strategy for one epoch of the prepared synthetic
dataset (fold 1 held out) on the global mesh, each process reading its own shard through
`data.make_train_loader(..., process_index, process_count)`; saves the clip indices it read (as
observed on the loader's ClipIndex.read), its batches and the final parameters to OUT.npz.
"""
import json
import sys

import jax

jax.config.update('jax_cpu_collectives_implementation', 'gloo')

from intermix_jax import distributed  # noqa: E402  (initialise before any other JAX use)

assert distributed.initialize_distributed(None, initialization_timeout=60)

import numpy as np  # noqa: E402

import _mp_common as C  # noqa: E402
from intermix_jax import data, mixing, parallel  # noqa: E402


def main(out_path, data_dir, global_batch):
  config = C.synthetic_config(data_dir, global_batch)
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
  params = parallel.global_to_host(state[0])
  flat = {'param/' + jax.tree_util.keystr(p): np.asarray(a)
          for p, a in jax.tree_util.tree_leaves_with_path(params)}
  info = dict(process_index=jax.process_index(), process_count=jax.process_count(),
              device_count=jax.device_count(), local_device_count=jax.local_device_count(),
              is_main=distributed.is_main_process(), losses=losses,
              num_examples=loader.num_examples, steps_per_epoch=loader.steps_per_epoch,
              num_classes=model.num_classes)
  np.savez(out_path, ids=np.stack(read), x=np.stack(xs), y=np.stack(ys), info=json.dumps(info),
           **flat)
  print('DONE ' + json.dumps(info), flush=True)
  jax.distributed.shutdown()
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
