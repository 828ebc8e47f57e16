"""Multi-process (multi-host) start-up: `jax.distributed.initialize()` when, and only when, needed.

Every process of a multi-process job calls `initialize_distributed` before any other JAX use
(`main.py` does, first thing). A launch is multi-process (`multiprocess_launch_reason`) under
`JAX_COORDINATOR_ADDRESS`, `srun` with SLURM_NTASKS > 1, Open MPI with more than one rank, or a
multi-host TPU slice on GKE; a Cloud TPU VM pod passes `--distributed` (launch/tpu_pod.sh).
docs/scaling.md.
"""
import logging
import os
from typing import Mapping

import jax

_SLURM_VARS = ('SLURM_JOB_ID', 'SLURM_STEP_NODELIST', 'SLURM_NTASKS', 'SLURM_PROCID',
               'SLURM_LOCALID')


def _int(environ: Mapping[str, str], name: str) -> int | None:
  value = environ.get(name, '')
  try:
    return int(value) if value.strip() else None
  except ValueError as e:
    raise ValueError(f'environment variable {name}={value!r} is not an integer') from e


def multiprocess_launch_reason(environ: Mapping[str, str] | None = None) -> str | None:
  """Why `environ` (default `os.environ`) looks like a multi-process launch: a short reason, e.g.
  'SLURM_NTASKS=8'; None for a single-process run."""
  env = os.environ if environ is None else environ
  if env.get('JAX_COORDINATOR_ADDRESS'):
    return f"JAX_COORDINATOR_ADDRESS={env['JAX_COORDINATOR_ADDRESS']}"
  if all(v in env for v in _SLURM_VARS) and (_int(env, 'SLURM_NTASKS') or 1) > 1:
    return f"SLURM_NTASKS={env['SLURM_NTASKS']}"
  if (_int(env, 'OMPI_COMM_WORLD_SIZE') or 1) > 1 and 'OMPI_MCA_orte_hnp_uri' in env:
    return f"OMPI_COMM_WORLD_SIZE={env['OMPI_COMM_WORLD_SIZE']}"
  for name in ('TPU_PROCESS_ADDRESSES', 'TPU_WORKER_HOSTNAMES'):
    hosts = [h for h in env.get(name, '').split(',') if h.strip()]
    if len(hosts) > 1:
      return f'{name} lists {len(hosts)} hosts'
  return None


def _tasks_per_node(environ: Mapping[str, str]) -> int | None:
  """Tasks on each node of a SLURM step if the same on every node ('4(x2)' or '4,4' -> 4)."""
  text = environ.get('SLURM_STEP_TASKS_PER_NODE') or environ.get('SLURM_TASKS_PER_NODE') or ''
  counts = {part.split('(')[0] for part in text.split(',') if part}
  (count,) = counts if len(counts) == 1 else ('',)
  return int(count) if count.isdigit() else None


def slurm_local_device_ids(environ: Mapping[str, str] | None = None) -> list[int] | None:
  """The GPUs a SLURM task should drive where JAX's guess (task i drives visible GPU i) is wrong:
  [0] when the task sees one GPU (`--gpus-per-task=1`), every visible GPU for one task per node;
  else None (also outside a SLURM step or without CUDA/ROCm visible-device variables;
  docs/scaling.md)."""
  env = os.environ if environ is None else environ
  if 'SLURM_STEP_NODELIST' not in env or 'SLURM_LOCALID' not in env:
    return None
  for name in ('CUDA_VISIBLE_DEVICES', 'ROCR_VISIBLE_DEVICES', 'HIP_VISIBLE_DEVICES'):
    visible = [d for d in env.get(name, '').split(',') if d.strip()]
    if visible:
      break
  else:
    return None
  if len(visible) == 1:
    return [0]
  return list(range(len(visible))) if _tasks_per_node(env) == 1 else None


def initialize_distributed(enabled: bool | None = None, *, initialization_timeout: int = 300,
                           environ: Mapping[str, str] | None = None) -> bool:
  """Connects the processes of a multi-process job (call before any other JAX use).

  The coordinator's address, the process count and id come from the environment
  (`JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`), else JAX detects them (SLURM,
  TPU metadata, ...); the GPUs this process drives from `JAX_LOCAL_DEVICE_IDS` (read by JAX), else
  `slurm_local_device_ids` under SLURM, else JAX's choice.

  Args:
    enabled: True: always call `jax.distributed.initialize` (e.g. `--distributed` on a TPU pod);
      False: never (single process); None: only if `multiprocess_launch_reason` finds a launch.
    initialization_timeout: seconds to wait for every process to join.
    environ: environment to read (default `os.environ`); for tests.
  Returns:
    True if `jax.distributed` is initialised on return (now or earlier), False for single-process.
  Raises:
    RuntimeError: with the detected reason, if JAX cannot connect the processes.
  """
  env = os.environ if environ is None else environ
  if jax.distributed.is_initialized():
    return True
  reason = multiprocess_launch_reason(env)
  if enabled is False or (enabled is None and reason is None):
    return False
  kwargs = dict(coordinator_address=env.get('JAX_COORDINATOR_ADDRESS'),
                num_processes=_int(env, 'JAX_NUM_PROCESSES'),
                process_id=_int(env, 'JAX_PROCESS_ID'),
                initialization_timeout=initialization_timeout,
                local_device_ids=(None if env.get('JAX_LOCAL_DEVICE_IDS')
                                  else slurm_local_device_ids(env)))
  kwargs = {k: v for k, v in kwargs.items() if v is not None}
  why = reason or 'asked for (--distributed)'
  logging.info('jax.distributed.initialize(%s): %s', kwargs, why)
  try:
    jax.distributed.initialize(**kwargs)
  except Exception as e:  # JAX raises ValueError/RuntimeError/XlaRuntimeError; add context.
    raise RuntimeError(
        f'jax.distributed.initialize failed ({why}; arguments {kwargs}). For a launch outside '
        'SLURM / Cloud TPU / Open MPI set JAX_COORDINATOR_ADDRESS=host:port, JAX_NUM_PROCESSES '
        'and JAX_PROCESS_ID on every process (see docs/scaling.md).') from e
  logging.info('process %d of %d; %d local / %d global devices', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
  return True


def is_main_process() -> bool:
  """True on process 0, the only process that writes logs, summaries and reports."""
  return jax.process_index() == 0


def prepare_data_once(config, sample_rate: int) -> None:
  """Several processes: process 0 prepares the dataset in config.data_dir, the others wait at a
  barrier (no race on a shared data_dir). If process 0 fails, it raises its error after the
  barrier and the others a RuntimeError pointing at its log. One process: nothing to do."""
  if jax.process_count() == 1:
    return
  import numpy as np  # pylint: disable=import-outside-toplevel
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  from intermix_jax import data  # pylint: disable=import-outside-toplevel
  error = None
  if jax.process_index() == 0:
    try:
      data.prepare(config, sample_rate)
    except Exception as e:  # reported after the barrier, so that nobody waits forever
      error = e
  multihost_utils.sync_global_devices('intermix_data_prepared')
  failed = bool(multihost_utils.broadcast_one_to_all(np.int32(error is not None)))
  if error is not None:
    raise error
  if failed:
    raise RuntimeError(f'process 0 could not prepare config.dataset={config.dataset!r} in '
                       f'config.data_dir={config.get("data_dir")!r}; see its log for the reason')
