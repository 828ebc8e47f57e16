"""Command line: train and evaluate one config into one workdir.

    python -m intermix_jax.main --config=configs/esc50.py:backbone=envnetv2,strategy=intermix,fold=1 \
        --workdir=runs/esc50/envnetv2/intermix/seed0/fold1 [--config.opt.lr=0.05] [--distributed]

Rerunning the same command resumes from the last checkpoint. Exit status: 0 when the run finished
or was preempted (SIGTERM: checkpoint saved, rerun to resume); 1 with a one-line message for a bad
config, a workdir of a different config, a non-finite loss under nan_policy=stop, a dataset that is
missing or has a bad layout, or an unreadable audio file (named; `skip_bad_files=True` skips such files).
"""
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file, optionally with overrides: configs/esc50.py:key=value,key=value',
    lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, summaries and results.')
_DISTRIBUTED = flags.DEFINE_bool(
    'distributed', None, 'Call jax.distributed.initialize(): True always, False never, unset: when '
    'the environment shows a multi-process launch (SLURM, Open MPI, JAX_COORDINATOR_ADDRESS, ...).')
_REUSE_HOST_MEMORY = flags.DEFINE_bool(
    'reuse_host_memory', True, 'Keep freed host memory for reuse (glibc mallopt; see '
    'intermix_jax/host_memory.py): saves the page faults of every CPU step.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if _REUSE_HOST_MEMORY.value:
    from intermix_jax import host_memory
    host_memory.reuse_freed_memory()  # before JAX starts its threads
  from intermix_jax import distributed
  distributed.initialize_distributed(_DISTRIBUTED.value)  # before any other JAX use

  import jax
  from intermix_jax import config_checks, data, train, workdir
  if jax.process_index() > 0:
    logging.set_verbosity(logging.WARNING)
  try:
    train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except (config_checks.ConfigError, workdir.WorkdirConfigError, train.NonFiniteError,
          data.LayoutError, data.BadAudioFileError, data.SourceUnavailableError,
          FileNotFoundError) as e:
    print(f'error: {e}', file=sys.stderr, flush=True)
    return 1
  return 0


if __name__ == '__main__':
  app.run(main)
