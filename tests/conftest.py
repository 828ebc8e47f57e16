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
"""
import os

import pytest

import fixtures_audio

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DIR = os.environ.get('INTERMIX_SHARED', os.path.join(os.path.dirname(REPO), 'shared'))
ESC10_REAL_DIR = os.environ.get('INTERMIX_ESC10_DIR', os.path.join(SHARED_DIR, 'data', 'esc10'))

# Test tiers, declared once. `bash launch/test.sh -m fast` runs the fast tier (the laws of the mixing
# core, the models, audio front ends, configs, statistics and report tables; no training run) in
# under 2 minutes on 2 cores; `bash launch/test.sh` runs everything. A test of these
# modules that needs longer carries @pytest.mark.slow and stays out of the fast tier.
FAST_MODULES = frozenset((
    'test_api', 'test_audio', 'test_configs', 'test_losses', 'test_melspec', 'test_mixing',
    'test_models', 'test_stats', 'test_report', 'test_tables'))


def pytest_collection_modifyitems(config, items):
  del config
  for item in items:
    if item.module.__name__ in FAST_MODULES and item.get_closest_marker('slow') is None:
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


@pytest.fixture(scope='module')
def env(tmp_path_factory):
  """Environment of a test's `python -m intermix_jax.main` subprocesses: CPU, unbuffered, and one
  JAX persistent compilation cache per test module (so only the first process compiles)."""
  e = dict(os.environ)
  e.update(JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp('jax_cache')),
           JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
           JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0', JAX_PLATFORMS='cpu',
           PYTHONUNBUFFERED='1')
  return e
