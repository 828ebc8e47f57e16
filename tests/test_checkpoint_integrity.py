"""Checkpoint integrity (issue 18): CheckpointStore on small pytrees, no training.

  - flipped bytes in a checkpoint's data file (orbax restores them silently) are caught by the
    digest saved with the checkpoint: the store sets it aside and falls back to the previous one;
    a read-only store (predict, adversarial) falls back without moving anything;
  - checkpoints written before digests existed still restore (one warning);
  - a save that fails (disk full) or reads back wrong raises one CheckpointWriteError line naming
    the path and deletes nothing; only verified saves rotate older checkpoints away;
  - `predict` / `adversarial` on a workdir whose only checkpoint is corrupted fail in one line.
"""
import errno
import logging
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

import helpers
from intermix_jax import checkpoints

# The raw orbax reads of the tests (no target) say so; irrelevant here.
pytestmark = pytest.mark.filterwarnings('ignore:Sharding info not provided')
DEVICE = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])


def make_state(seed):
  rng = np.random.default_rng(seed)
  return dict(w=jnp.asarray(rng.normal(size=(64, 256)).astype(np.float32)),
              b=jnp.asarray(rng.normal(size=(8,)).astype(np.float32)),
              count=jnp.asarray(seed, jnp.int32))


def target_of(state):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=DEVICE), state)


@pytest.fixture
def store_dir(tmp_path):
  return str(tmp_path / 'checkpoints')


def saved_store(directory, steps=(1, 2), keep=3):
  store = checkpoints.CheckpointStore(directory, keep)
  states = {}
  for s in steps:
    states[s] = make_state(s)
    assert store.save(s, states[s], dict(epoch=s))
  store.close()
  return states


# ------------------------------------------------------------------------------------------------
# Restore: digests
# ------------------------------------------------------------------------------------------------
def test_intact_checkpoint_restores_verified_and_meta_has_no_digest(store_dir):
  states = saved_store(store_dir)
  store = checkpoints.CheckpointStore(store_dir, 3)
  state, meta, step = store.restore(target_of(states[2]))
  assert step == 2 and helpers.trees_equal(state, states[2]) and meta == dict(epoch=2)
  assert store.restored_verified and store.latest_verified_step() == 2 and not store.rejected
  store.close()


def test_silently_corrupted_checkpoint_is_set_aside_and_the_previous_one_restored(store_dir):
  states = saved_store(store_dir)
  newest = os.path.join(store_dir, '2')
  helpers.corrupt_silently(newest, states[2])
  store = checkpoints.CheckpointStore(store_dir, 3)
  state, meta, step = store.restore(target_of(states[2]))
  assert step == 1 and helpers.trees_equal(state, states[1]) and meta == dict(epoch=1)
  assert os.path.isdir(newest + '.unreadable') and not os.path.exists(newest)
  assert store.all_steps() == [1]
  [(path, why)] = store.rejected
  assert path == newest and why.startswith('is corrupted') and "['w']" in why
  store.close()


def test_read_only_store_falls_back_without_moving_anything(store_dir):
  states = saved_store(store_dir)
  helpers.corrupt_silently(os.path.join(store_dir, '2'), states[2])
  before = sorted(os.listdir(store_dir))
  store = checkpoints.CheckpointStore(store_dir, 3, read_only=True)
  state, _, step = store.restore(target_of(states[2]))
  assert step == 1 and helpers.trees_equal(state, states[1])
  assert sorted(os.listdir(store_dir)) == before
  helpers.corrupt_silently(os.path.join(store_dir, '1'), states[1])
  store = checkpoints.CheckpointStore(store_dir, 3, read_only=True)
  assert store.restore(target_of(states[2])) is None
  assert len(store.rejected) == 2 and 'corrupted' in store.rejected_summary()
  assert sorted(os.listdir(store_dir)) == before


def test_checkpoint_without_digest_restores_with_one_warning(store_dir, caplog):
  """Written by an older version (orbax directly, no digest in meta): still usable, unverified."""
  state = make_state(5)
  manager = ocp.CheckpointManager(store_dir, options=ocp.CheckpointManagerOptions(
      enable_async_checkpointing=False), item_names=('state', 'meta'))
  for s in (5, 6):
    manager.save(s, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                            meta=ocp.args.JsonSave(dict(epoch=s))))
  manager.wait_until_finished()
  manager.close()
  with caplog.at_level(logging.WARNING):
    for _ in range(2):
      store = checkpoints.CheckpointStore(store_dir, 3, read_only=True)
      restored, meta, step = store.restore(target_of(state))
      assert step == 6 and helpers.trees_equal(restored, state) and meta == dict(epoch=6)
      assert not store.restored_verified and store.latest_verified_step() is None
  assert sum('no digest' in r.getMessage() for r in caplog.records) == 1


# ------------------------------------------------------------------------------------------------
# Save: read back, rotation, write failures
# ------------------------------------------------------------------------------------------------
def test_rotation_keeps_the_newest_verified_checkpoints(store_dir):
  store = checkpoints.CheckpointStore(store_dir, 2)
  for s in (1, 2, 3):
    assert store.save(s, make_state(s), dict(epoch=s))
    kept = store.all_steps()
    assert kept[-1] == s and len(kept) == min(s, store.keep + 1)  # save deletes none
    store.rotate()
  assert store.all_steps() == [2, 3] and store.latest_verified_step() == 3
  assert not store.save(3, make_state(3), {})  # exists: no-op
  store.close()


def test_save_that_reads_back_wrong_raises_and_deletes_nothing(store_dir, monkeypatch):
  store = checkpoints.CheckpointStore(store_dir, 1)
  assert store.save(1, make_state(1), dict(epoch=1))
  real = store._manager.restore

  def restore_flipped(step, args=None):
    out = real(step, args=args)
    state = dict(out['state'])
    state['b'] = np.asarray(state['b']).copy()
    state['b'][3] += 1.0
    return dict(out, state=state)
  monkeypatch.setattr(store._manager, 'restore', restore_flipped)
  with pytest.raises(checkpoints.CheckpointWriteError) as e:
    store.save(2, make_state(2), dict(epoch=2))
  msg = str(e.value)
  assert msg.startswith(f'checkpoint {os.path.join(store_dir, "2")} did not read back as written')
  assert "['b']" in msg and '\n' not in msg
  assert store.all_steps() == [1]  # the verified step 1 is kept
  assert os.path.isdir(os.path.join(store_dir, '2.unreadable'))
  store.close()


@pytest.mark.parametrize('error', [
    OSError(errno.ENOSPC, 'No space left on device'),
    ValueError('RESOURCE_EXHAUSTED: Error writing "params.w/0" in OCDBT database at local file '
               '"/x/ocdbt.process_0/": Failed writing: "/x/d/1": Failed to write 829 bytes to '
               "file 22: No space left on device [os_error_code='28']"),
])
def test_disk_full_during_a_save_is_one_line_and_keeps_the_previous_checkpoint(store_dir, error,
                                                                               monkeypatch):
  store = checkpoints.CheckpointStore(store_dir, 1)
  assert store.save(1, make_state(1), dict(epoch=1))
  real = store._manager.save

  def full(step, args=None, force=False):
    # orbax has created its temporary directory when the disk fills up
    os.makedirs(os.path.join(store_dir, f'{step}.orbax-checkpoint-tmp', 'state'))
    raise error
  monkeypatch.setattr(store._manager, 'save', full)
  with pytest.raises(checkpoints.CheckpointWriteError) as e:
    store.save(2, make_state(2), dict(epoch=2))
  msg = str(e.value)
  assert e.value.errno == errno.ENOSPC and isinstance(e.value, OSError)
  assert msg.startswith(f'cannot write checkpoint {os.path.join(store_dir, "2")}: no space left '
                        'on device') and '\n' not in msg, msg
  assert f'resume from checkpoint {os.path.join(store_dir, "1")} (step 1, kept)' in msg
  assert sorted(os.listdir(store_dir)) == ['1']  # the partial write is gone, step 1 kept
  monkeypatch.setattr(store._manager, 'save', real)
  store.close()
  state, _, step = checkpoints.CheckpointStore(store_dir, 1).restore(target_of(make_state(1)))
  assert step == 1 and helpers.trees_equal(state, make_state(1))


def test_save_that_cannot_fit_is_refused_before_writing(store_dir, monkeypatch):
  store = checkpoints.CheckpointStore(store_dir, 3)
  assert store.save(1, make_state(1), {})
  monkeypatch.setattr(checkpoints.shutil, 'disk_usage',
                      lambda p: shutil._ntuple_diskusage(10 << 20, 10 << 20, 4096))
  with pytest.raises(checkpoints.CheckpointWriteError) as e:
    store.save(2, make_state(2), {})
  assert str(e.value).startswith(f'cannot write checkpoint {os.path.join(store_dir, "2")}: no '
                                 'space left on device (4 KiB free, about 1.1 MiB needed)')
  assert sorted(os.listdir(store_dir)) == ['1']
  store.close()


def test_other_save_errors_are_not_disguised(store_dir, monkeypatch):
  store = checkpoints.CheckpointStore(store_dir, 3)

  def broken(step, args=None, force=False):
    raise TypeError('a bug, not the disk')
  monkeypatch.setattr(store._manager, 'save', broken)
  with pytest.raises(TypeError, match='a bug'):
    store.save(1, make_state(1), {})


# ------------------------------------------------------------------------------------------------
# adversarial (read-only, like predict: tests/test_predict.py)
# ------------------------------------------------------------------------------------------------
def test_adversarial_never_attacks_a_corrupted_checkpoint(tmp_path, synthetic_data_dir,
                                                          base_config):
  from intermix_jax import adversarial
  wd, _ = helpers.synthetic_workdir(str(tmp_path), synthetic_data_dir, base_config)
  ckpt = os.path.join(wd, 'checkpoints', '3')
  helpers.corrupt_silently(ckpt, ocp.PyTreeCheckpointer().restore(os.path.join(ckpt, 'state')))
  before = sorted(os.listdir(os.path.dirname(ckpt)))
  for allow_unfinished in (False, True):
    with pytest.raises(adversarial.AdversarialWorkdirError) as e:
      adversarial.load_workdir(wd, allow_unfinished=allow_unfinished)
    msg = str(e.value)
    assert 'no readable checkpoint' in msg and f'{ckpt} is corrupted' in msg, msg
    assert '\n' not in msg
  assert sorted(os.listdir(os.path.dirname(ckpt))) == before  # read-only: nothing moved
  results = os.path.join(wd, 'results.json')
  with open(results) as f:
    text = f.read()
  with open(results, 'w') as f:
    f.write(text[:len(text) // 2])
  with pytest.raises(adversarial.AdversarialWorkdirError, match=f'^{results} is not valid JSON'):
    adversarial.load_workdir(wd)
