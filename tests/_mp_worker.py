"""One process of the two-process test (tests/test_multiprocess.py); loopback only.

Usage (the environment gives the launch: JAX_COORDINATOR_ADDRESS=127.0.0.1:PORT, JAX_NUM_PROCESSES,
JAX_PROCESS_ID; XLA_FLAGS sets the local CPU device count):
  python tests/_mp_worker.py OUT.npz NUM_STEPS BATCH_PER_PROCESS

Trains C.TinyNet with the sharded 'intermix' strategy for NUM_STEPS steps on the global mesh, each
process feeding its own rows, and saves what it read and the final parameters to OUT.npz.
"""
import json
import sys

import jax

jax.config.update('jax_cpu_collectives_implementation', 'gloo')

from intermix_jax import distributed  # noqa: E402  (initialise before any other JAX use)

assert distributed.initialize_distributed(None, initialization_timeout=60)

import numpy as np  # noqa: E402

import _mp_common as C  # noqa: E402
from intermix_jax import mixing, parallel  # noqa: E402


def main(out_path, num_steps, batch_per_process):
  mesh = parallel.make_mesh()
  strategy = parallel.shard_strategy(mixing.get_strategy('intermix'), mesh)
  model, tx = C.TinyNet(), C.make_tx()
  v = C.init_variables(model)
  state = parallel.replicate((v['params'], v['batch_stats'], tx.init(v['params'])), mesh)
  _, x_all, y_all = C.toy_split()
  base = jax.random.key(0)
  read, losses = [], []
  for step, ids in enumerate(C.toy_process_batches(jax.process_index(), jax.process_count(),
                                                   batch_per_process, num_steps)):
    x, y = parallel.host_batch_to_global((x_all[ids], y_all[ids]), mesh, pairs=True)
    key = parallel.replicate(jax.random.fold_in(base, step), mesh)
    state, loss = C.train_step(model, strategy, tx, state, x, y, key)
    read.append(ids)
    losses.append(float(parallel.global_to_host(loss)))
  params = parallel.global_to_host(state[0])
  flat = {'param/' + jax.tree_util.keystr(p): np.asarray(a)
          for p, a in jax.tree_util.tree_leaves_with_path(params)}
  info = dict(process_index=jax.process_index(), process_count=jax.process_count(),
              device_count=jax.device_count(), local_device_count=jax.local_device_count(),
              is_main=distributed.is_main_process(), losses=losses)
  np.savez(out_path, ids=np.stack(read), info=json.dumps(info), **flat)
  print('DONE ' + json.dumps(info), flush=True)
  jax.distributed.shutdown()
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
