"""Shared pytest fixtures: configs, generated audio layouts, prepared datasets, the real ESC-10.

Fixtures (any test may use them):
  base_config         a fresh config_lib.base_config() (every field at its default; mutate freely)
  synthetic_data_dir  a session TFDS data_dir for dataset='synthetic' (prepared on first use;
                      set config.data_dir to it)
  esc50_layout        a session LayoutSpec of a small clean ESC-50-layout copy (tests/fixtures_audio)
  urbansound8k_layout a session LayoutSpec of a small clean UrbanSound8K-layout copy
  esc10_real_dir      $INTERMIX_ESC10_DIR, else <$INTERMIX_SHARED or ../shared beside the repository>/
                      data/esc10 (real ESC-10, official layout); skips when absent
  env                 module-scoped environment for `python -m intermix_jax.main` subprocesses (CPU,
                      one JAX compilation cache per test module)
  esc10_real_prepared {16000: data_dir, 44100: data_dir} of the real ESC-10, prepared once per
                      session (skips when the data is absent)
  dry_run_env         the environment of the launch scripts' CPU dry runs (DRY_RUN_XLA_FLAG)
"""
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

import fixtures_audio

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DIR = os.environ.get('INTERMIX_SHARED', os.path.join(os.path.dirname(REPO), 'shared'))
ESC10_REAL_DIR = os.environ.get('INTERMIX_ESC10_DIR', os.path.join(SHARED_DIR, 'data', 'esc10'))

# Test tiers, declared once (each test gets exactly one of the markers unit / integration / system;
# `fast` is the old name of the unit tier and marks the same tests):
#   unit         in-process, no training loop, no compiled real-model train step at scale: laws of
#                the mixing core, audio, losses, models' shapes, configs, statistics, report tables,
#                data decoding and pipelines, checkpoint store, launch tools' pure functions.
#                `bash launch/test.sh -m unit` (the whole tier in about a minute on 2 cores).
#   integration  in-process but costly: compiled train steps of real models, tiny trainings by
#                train.train_and_evaluate, runs in one program, every test marked slow that runs in
#                this process. `-m integration`.
#   system       other processes: `python -m intermix_jax.main` / `intermix_jax.predict` and the
#                launch scripts' dry runs as subprocesses (exit status, signals, kill -9, locks,
#                console), 8 simulated devices in a child, two real processes. `-m system`.
# A module's default is unit (UNIT_MODULES) or integration; @pytest.mark.slow moves a unit test to
# integration; a test that uses a fixture of SYSTEM_FIXTURES, or is listed in SYSTEM_TESTS, is
# system. `bash launch/test.sh` runs every tier.
UNIT_MODULES = frozenset((
    'test_accel_ops', 'test_api', 'test_audio', 'test_checkpoint_integrity', 'test_cli_errors',
    'test_configs', 'test_custom_data', 'test_data_builders', 'test_data_decode',
    'test_data_pipeline', 'test_data_synthetic', 'test_losses', 'test_melspec', 'test_mixing',
    'test_models', 'test_multiprocess', 'test_on_device', 'test_parallel', 'test_report',
    'test_roofline', 'test_stats', 'test_table_row', 'test_tables', 'test_window'))
# Fixtures that start processes of the project's code: `env` (the CLI subprocesses' environment),
# `eight` (a child with 8 simulated devices), `runs` (two real processes, test_multiprocess),
# `reference` (test_reliability's uninterrupted CLI run), `run` (test_predict: a CLI run).
SYSTEM_FIXTURES = frozenset(('env', 'eight', 'runs', 'reference', 'run'))
SYSTEM_TESTS = {
    'test_accel_ops': ('test_envnet_ab_stage_cpu_dry_run',),
    'test_accelerator_check': '*',
    'test_custom_data': ('test_main_command_trains_and_evaluates_on_a_custom_folder',),
    'test_dataset_identity': ('test_command_line_refuses_to_resume_on_changed_data_in_one_line',),
    'test_host_memory': '*',
    'test_predict': '*',
    'test_window': ('test_cpu_dry_run_from_the_pack_to_the_report',),
}
TIERS = ('unit', 'integration', 'system')
# The heaviest files (CPU time of the whole suite), heaviest first: pytest-xdist (--dist loadfile)
# hands them out first (in collection order: pytest_configure turns off xdist's reordering by
# number of tests, which starts the one-test dry runs last; an option since xdist 3.8), so no long
# file starts last while the other worker idles.
HEAVY_FIRST = ('test_reliability', 'test_train_together', 'test_cli_errors', 'test_models',
               'test_accel_ops', 'test_accelerator_check', 'test_parallel', 'test_multirun',
               'test_adversarial', 'test_train', 'test_window', 'test_roofline', 'test_mixing',
               'test_dataset_identity', 'test_precision', 'test_multiprocess', 'test_custom_data',
               'test_steps')  # by their time in the suite of 2026-12-06 14:08 UTC, 136 s to 9 s


def tier_of(item) -> str:
  module = item.module.__name__
  listed = SYSTEM_TESTS.get(module, ())
  if listed == '*' or item.originalname in listed or SYSTEM_FIXTURES & set(item.fixturenames):
    return 'system'
  if module in UNIT_MODULES and item.get_closest_marker('slow') is None:
    return 'unit'
  return 'integration'


# One JAX persistent compilation cache for the whole session: made by the first process (the
# pytest-xdist controller, or the only process), inherited through the environment by the workers
# and by every subprocess a test starts. A program compiled once (the tiny demo step, a CLI run's
# step) is read back by every later process and every later identical compile in a process.
# Removed at the end; INTERMIX_TEST_JAX_CACHE=DIR uses DIR instead and keeps it (keys are the
# programs' HLO and flags, so a later session of other code reads only what still matches).
CACHE_ENV = {'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0',
             'JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES': '0'}


# Tests compile with XLA's backend optimisation level 0 (here and in every subprocess, through the
# environment): 40 % less CPU per compile of a real model's step, for slower steps that tests take
# few of (the compiles stored in the session cache sum to about 2.5 of the suite's 12 CPU minutes,
# measured 2026-12-06). Every contract tested is a property of the program
# (values, bitwise equality of two runs, files, exit status), not of the optimiser's choices; the
# benchmarks and users compile at XLA's default level.
XLA_TEST_FLAG = '--xla_backend_optimization_level=0'


# The launch scripts' CPU dry runs (accelerator_check.sh --cpu, window.sh --cpu; dry_run_env) check
# their path (stages, files, reports), not numbers: they also compile with XLA's older CPU fusion
# emitters (measured here: the tiny EnvNet InterMix step compiles in 1.0 s instead of 4.1 s at
# level 0, and steps 30 % slower; the three dry runs 92 s -> 67 s). Not the other tests: some compare
# two programs bitwise (runs stacked against alone, tests/test_train_together.py), which holds under
# XLA's default emitters, as users compile, and not under this flag.
DRY_RUN_XLA_FLAG = '--xla_cpu_use_fusion_emitters=false'


def pytest_configure(config):
  if hasattr(config.option, 'loadscopereorder'):
    config.option.loadscopereorder = False  # HEAVY_FIRST's order
  if 'INTERMIX_TEST_JAX_CACHE' not in os.environ:
    os.environ['INTERMIX_TEST_JAX_CACHE'] = tempfile.mkdtemp(prefix='intermix_jax_cache_')
    config.intermix_jax_cache = os.environ['INTERMIX_TEST_JAX_CACHE']
  os.environ.update(CACHE_ENV, JAX_COMPILATION_CACHE_DIR=os.environ['INTERMIX_TEST_JAX_CACHE'])
  if XLA_TEST_FLAG not in os.environ.get('XLA_FLAGS', ''):
    os.environ['XLA_FLAGS'] = f"{os.environ.get('XLA_FLAGS', '')} {XLA_TEST_FLAG}".strip()
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update('jax_compilation_cache_dir', os.environ['INTERMIX_TEST_JAX_CACHE'])
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)


def pytest_unconfigure(config):
  if hasattr(config, 'intermix_jax_cache'):
    shutil.rmtree(config.intermix_jax_cache, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
  del config
  rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
  items.sort(key=lambda item: rank.get(item.module.__name__, len(rank)))  # stable: files stay whole
  for item in items:
    tier = tier_of(item)
    item.add_marker(getattr(pytest.mark, tier))
    if tier == 'unit':
      item.add_marker(pytest.mark.fast)


@pytest.fixture
def base_config():
  from intermix_jax import config_lib  # pylint: disable=g-import-not-at-top
  return config_lib.base_config()


@pytest.fixture(scope='session')
def synthetic_data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds_synthetic'))


@pytest.fixture(scope='session')
def esc50_layout(tmp_path_factory):
  return fixtures_audio.write_esc50_layout(tmp_path_factory.mktemp('esc_copy') / 'ESC-50-master')


@pytest.fixture(scope='session')
def urbansound8k_layout(tmp_path_factory):
  return fixtures_audio.write_urbansound8k_layout(
      tmp_path_factory.mktemp('us8k_copy') / 'UrbanSound8K')


@pytest.fixture(scope='session')
def esc10_real_dir():
  csv_path = os.path.join(ESC10_REAL_DIR, 'meta', 'esc50.csv')
  if not os.path.isfile(csv_path):
    pytest.skip(f'real ESC-10 not found: {csv_path} is absent (set INTERMIX_ESC10_DIR to a copy '
                'of the official ESC-50 layout holding the ESC-10 clips)')
  return ESC10_REAL_DIR


@pytest.fixture(scope='session')
def esc10_real_prepared(esc10_real_dir, tmp_path_factory):
  from intermix_jax import data  # pylint: disable=g-import-not-at-top
  data_dir = str(tmp_path_factory.mktemp('tfds_esc10_real'))
  for rate in (16000, 44100):
    builder = data.get_builder('esc10', rate, data_dir=data_dir)
    data.catalog.prepare_builder(builder, manual_dir=esc10_real_dir)
  return {16000: data_dir, 44100: data_dir}


@pytest.fixture(scope='session')
def dry_run_env():
  """os.environ for the launch scripts' CPU dry runs: DRY_RUN_XLA_FLAG added, where this jaxlib
  knows it (XLA ends a process on an unknown flag; a newer one may drop it)."""
  env = dict(os.environ, XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} {DRY_RUN_XLA_FLAG}")
  probe = subprocess.run([sys.executable, '-c', 'import jax; jax.devices()'], capture_output=True,
                         env=dict(env, JAX_PLATFORMS='cpu'), timeout=120, check=False)
  return env if probe.returncode == 0 else dict(os.environ)


@pytest.fixture(scope='module')
def env():
  """Environment of a test's `python -m intermix_jax.main` subprocesses: CPU, unbuffered, and the
  session's JAX persistent compilation cache (pytest_configure; so only the first process
  compiles)."""
  return dict(os.environ, JAX_PLATFORMS='cpu', PYTHONUNBUFFERED='1')
