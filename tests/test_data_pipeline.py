"""Input pipeline laws (intermix_jax/data/{augment,pairing,pipeline}.py) on in-memory sources,
plus the public API end to end on the synthetic dataset."""
import collections
import threading

from hypothesis import given, settings, strategies as st
import numpy as np
import pytest

from intermix_jax import config_lib
from intermix_jax import data
from intermix_jax.data import augment
from intermix_jax.data import pairing
from intermix_jax.data import pipeline


class ListSource:
  """A stand-in for a tfds data source: __len__ and __getitems__ over example dicts."""

  def __init__(self, examples):
    self.examples = examples

  def __len__(self):
    return len(self.examples)

  def __getitems__(self, keys):
    return [self.examples[k] for k in keys]


def constant_clips_index(labels_per_source, length=50):
  """Clip i (global numbering) is `length` samples all equal to i + 1: crops identify clips."""
  sources, i = [], 0
  for labels in labels_per_source:
    examples = []
    for label in labels:
      examples.append({'audio': np.full(length, i + 1, np.int16), 'label': label,
                       'filename': f'clip{i:04d}'.encode()})
      i += 1
    sources.append(ListSource(examples))
  return pipeline.ClipIndex(sources)


def clip_ids(x):
  """Row -> clip id from a batch of constant-clip crops (unit gain)."""
  values = np.rint(x * 32768).astype(np.int64)
  ids = values.max(axis=-1) - 1
  assert np.all(ids >= 0)
  return ids


# --- augment: against a literal implementation of docs/method.md §5 -------------------------

def reference_train_crop(clip, t, u, scale, gain):
  x = clip.astype(np.float64)
  if scale is not None:  # the reference code's random_scale, on the whole clip
    out = max(1, int(len(x) * scale))
    ref = np.arange(out) / scale
    r1 = ref.astype(np.int64)
    r2 = np.minimum(r1 + 1, len(x) - 1)
    r = ref - r1
    x = x[r1] * (1 - r) + x[r2] * r
  x = np.pad(x, t // 2)  # zero-pad T/2 on both sides
  offset = min(int(u * (len(x) - t + 1)), len(x) - t)
  x = x[offset:offset + t] / 32768
  return x if gain is None else x * gain


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), t=st.integers(1, 120), u=st.floats(0, 0.999999),
       scale=st.one_of(st.none(), st.floats(0.8, 1.25)), gain=st.one_of(st.none(),
                                                                          st.floats(0.5, 2.0)),
       seed=st.integers(0, 2 ** 16))
def test_train_crop_matches_literal_spec(n, t, u, scale, gain, seed):
  clip = np.random.default_rng(seed).integers(-32768, 32767, n).astype(np.int16)
  got = augment.train_crops([clip], t, np.array([u]),
                            None if scale is None else np.array([scale]),
                            None if gain is None else np.array([gain]))
  assert got.shape == (1, t) and got.dtype == np.float32
  np.testing.assert_allclose(got[0], reference_train_crop(clip, t, u, scale, gain),
                             rtol=1e-5, atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), t=st.integers(1, 120), crops=st.integers(1, 12),
       seed=st.integers(0, 2 ** 16))
def test_eval_crops_match_literal_spec(n, t, crops, seed):
  clip = np.random.default_rng(seed).integers(-32768, 32767, n).astype(np.int16)
  padded = np.pad(clip.astype(np.float64), t // 2) / 32768
  if crops == 1:
    offsets = [(len(padded) - t) // 2]
  else:
    stride = (len(padded) - t) // (crops - 1)  # the reference code's multi_crop
    offsets = [stride * k for k in range(crops)]
  expected = np.stack([padded[o:o + t] for o in offsets])
  np.testing.assert_allclose(augment.eval_crops(clip, t, crops), expected, rtol=1e-6, atol=0)


def test_eval_crops_span_the_padded_clip():
  clip = np.arange(1, 1001, dtype=np.int16)  # T = 200: 100 zeros of padding on each side
  crops = np.rint(augment.eval_crops(clip, 200, 10) * 32768)
  # stride (1200 - 200) // 9 = 111: the first crop starts at the left edge of the padding...
  assert np.all(crops[0, :100] == 0) and crops[0, 100] == 1 and crops[0, -1] == 100
  assert crops[1, 0] == 12  # offset 111 -> clip sample 11 (value 12)
  # ...the last (offset 999) ends 1 sample short of the right edge (integer stride).
  assert crops[-1, 0] == 900 and crops[-1, 100] == 1000 and np.all(crops[-1, 101:] == 0)


# --- pairing ----------------------------------------------------------------------------------

@settings(max_examples=80, deadline=None)
@given(labels=st.lists(st.integers(0, 4), min_size=2, max_size=60), seed=st.integers(0, 1000))
def test_pairing_is_a_permutation_with_different_classes(labels, seed):
  labels = np.asarray(labels)
  n = labels.shape[0]
  used = n // 2 * 2
  order = np.random.default_rng(seed).permutation(n)
  counts = np.bincount(labels)
  try:
    out = pairing.pair_different_classes(order, labels, used)
  except ValueError as e:
    assert 'cannot form' in str(e)
    # Only when one class really dominates: it fills more than half of the used positions
    # even after moving as many of its clips as possible to the unused tail.
    assert counts.max() - (n - used) > used // 2
    return
  assert sorted(out.tolist()) == list(range(n))
  lab = labels[out[:used]]
  assert np.all(lab[0::2] != lab[1::2])
  np.testing.assert_array_equal(out, pairing.pair_different_classes(order, labels, used))


def test_pairing_keeps_valid_orders_unchanged():
  labels = np.array([0, 1, 0, 2, 1, 2])
  order = np.arange(6)
  np.testing.assert_array_equal(pairing.pair_different_classes(order, labels, 6), order)


def test_pairing_impossible_is_a_clear_error():
  with pytest.raises(ValueError, match='class 3 has 4 of the 4 clips'):
    pairing.pair_different_classes(np.arange(4), np.full(4, 3), 4)


# --- TrainLoader --------------------------------------------------------------------------------

LABELS = [[0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0], [1, 1, 2, 2, 3, 3, 0, 0, 1, 2, 3, 0, 1, 2]]


def make_train(pairs=True, strong=False, process_index=0, process_count=1, batch_size=8,
               num_threads=0, seed=3, length=50):
  return pipeline.TrainLoader(
      constant_clips_index(LABELS, length), input_length=64, batch_size=batch_size, seed=seed,
      pairs=pairs, strong_augment=strong, process_index=process_index,
      process_count=process_count, num_threads=num_threads)


@pytest.mark.parametrize('pairs', [False, True])
def test_each_clip_at_most_once_per_epoch_and_labels_match(pairs):
  train = make_train(pairs=pairs)
  assert train.num_examples == 27 and train.steps_per_epoch == 3
  labels = np.concatenate(LABELS)
  for epoch in range(4):
    batches = list(train.batches(epoch))
    assert len(batches) == 3
    ids = np.concatenate([clip_ids(b['x']) for b in batches])
    assert len(set(ids.tolist())) == 24  # 3 full batches of 8 distinct clips, tail dropped
    ys = np.concatenate([b['y'] for b in batches])
    np.testing.assert_array_equal(ys, labels[ids])
    for b in batches:
      assert b['x'].shape == (8, 64) and b['x'].dtype == np.float32 and b['y'].dtype == np.int32
      if pairs:
        assert np.all(b['y'][0::2] != b['y'][1::2])


def test_epochs_are_deterministic_different_and_resumable():
  a, b = make_train(), make_train()
  e1 = list(a.batches(1))
  for x, y in zip(e1, b.batches(1)):
    np.testing.assert_array_equal(x['x'], y['x'])
  e2 = list(a.batches(2))
  assert any(not np.array_equal(x['y'], y['y']) or not np.array_equal(x['x'], y['x'])
             for x, y in zip(e1, e2))
  for start in range(4):
    resumed = list(make_train().batches(1, start_step=start))  # fresh loader: no hidden state
    assert len(resumed) == 3 - start
    for x, y in zip(e1[start:], resumed):
      np.testing.assert_array_equal(x['x'], y['x'])
      np.testing.assert_array_equal(x['y'], y['y'])
  other_seed = list(make_train(seed=4).batches(1))
  assert any(not np.array_equal(x['x'], y['x']) for x, y in zip(e1, other_seed))


def test_threaded_stream_equals_synchronous_across_epochs_and_resumes():
  sync = make_train(strong=True, num_threads=0)
  threaded = make_train(strong=True, num_threads=2)

  def check(epoch, start, got):
    want = list(sync.batches(epoch, start))
    assert len(got) == len(want)
    for x, y in zip(want, got):
      np.testing.assert_array_equal(x['x'], y['x'])
      np.testing.assert_array_equal(x['y'], y['y'])

  for epoch in range(3):  # one background stream serves consecutive epochs
    check(epoch, 0, list(threaded.batches(epoch)))
  stream = threaded._stream  # pylint: disable=protected-access
  check(3, 0, list(threaded.batches(3)))
  assert threaded._stream[1] is stream[1]  # pylint: disable=protected-access
  partial = threaded.batches(4)
  next(partial)  # epoch 4 left unfinished: the next request restarts the stream
  check(5, 0, list(threaded.batches(5)))
  check(7, 2, list(threaded.batches(7, start_step=2)))  # a resume mid-epoch
  threaded.close()


def test_abandoned_epochs_do_not_leak_threads():
  train = make_train(num_threads=2)
  for epoch in range(3):
    next(iter(train.batches(epoch)))
  before = threading.active_count()
  for epoch in range(3, 15):
    next(iter(train.batches(epoch)))
  import gc  # pylint: disable=g-import-not-at-top
  gc.collect()
  assert threading.active_count() <= before + 2


@pytest.mark.parametrize('strong', [False, True])
def test_process_shards_are_disjoint_and_concatenate_to_the_global_batch(strong):
  full = list(make_train(strong=strong).batches(2))
  shards = [list(make_train(strong=strong, process_index=p, process_count=2).batches(2))
            for p in range(2)]
  for step, batch in enumerate(full):
    x = np.concatenate([shards[p][step]['x'] for p in range(2)])
    y = np.concatenate([shards[p][step]['y'] for p in range(2)])
    np.testing.assert_array_equal(x, batch['x'])
    np.testing.assert_array_equal(y, batch['y'])
    assert shards[0][step]['x'].shape == (4, 64)
  if not strong:
    ids = [set(np.concatenate([clip_ids(b['x']) for b in shards[p]]).tolist()) for p in range(2)]
    assert not ids[0] & ids[1]


def test_strong_augment_gain_and_time_scale_per_sound():
  # Clips of 20 samples, T = 64: a scaled clip (<= 25 samples) always lies whole in the crop.
  train = pipeline.TrainLoader(constant_clips_index(LABELS, 20), input_length=64, batch_size=8,
                               seed=0, pairs=True, strong_augment=True, num_threads=0)
  lengths = []
  for epoch in range(6):
    for batch in train.batches(epoch):
      lengths.extend((np.abs(batch['x']) > 0).sum(axis=1).tolist())
  lengths = np.asarray(lengths)
  assert lengths.min() >= int(20 * 0.8) and lengths.max() <= int(20 * 1.25)
  assert len(set(lengths.tolist())) >= 5  # the time scale varies
  # Gains: compare each crop's level with its clip's value, known from the unaugmented loader.
  plain = pipeline.TrainLoader(constant_clips_index(LABELS, 20), input_length=64, batch_size=8,
                               seed=0, pairs=True, strong_augment=False, num_threads=0)
  db = []
  for epoch in range(6):
    for aug, ref in zip(train.batches(epoch), plain.batches(epoch)):
      value = clip_ids(ref['x']) + 1  # same order: augmentation does not change the order
      level = np.abs(aug['x']).max(axis=1) * 32768
      db.append(20 * np.log10(level / value))
  db = np.concatenate(db)
  assert db.min() >= -6.0 - 1e-3 and db.max() <= 6.0 + 1e-3
  assert db.min() < -4 and db.max() > 4
  pair_db = db.reshape(-1, 2)
  assert np.all(pair_db[:, 0] != pair_db[:, 1])  # each sound of a pair has its own gain


def test_batch_size_errors_are_clear():
  """The loaders apply the one batch rule (config_lib.check_batch_split)."""
  with pytest.raises(ValueError, match='config.batch_size=9 is not divisible by the 2 processes'):
    make_train(batch_size=9, process_count=2, pairs=False)
  with pytest.raises(ValueError, match='config.batch_size=9 must be even'):
    make_train(batch_size=9, process_count=1)
  with pytest.raises(ValueError, match='config.batch_size=6 gives 3 sounds per process; mixing'):
    make_train(batch_size=6, process_count=2)
  with pytest.raises(ValueError, match='config.eval_batch_size=3 is not divisible by the 2 proc'):
    pipeline.EvalLoader(constant_clips_index(LABELS, 50), input_length=64, batch_size=3,
                        num_crops=2, process_index=0, process_count=2, num_threads=0)
  make_train(batch_size=6, process_count=2, pairs=False)  # fine without pairs
  with pytest.raises(ValueError, match='larger than the 27 training clips'):
    make_train(batch_size=28, pairs=False)
  with pytest.raises(ValueError, match='process_index=2'):
    make_train(process_index=2, process_count=2)


# --- EvalLoader ---------------------------------------------------------------------------------

@pytest.mark.parametrize('process_count', [1, 2, 3])
def test_eval_every_clip_exactly_once_over_processes(process_count):
  index = constant_clips_index([[0, 1, 2, 0, 1, 2, 0], [1, 2]], length=30)
  loaders = [pipeline.EvalLoader(index, input_length=40, batch_size=2 * process_count,
                                 num_crops=3, process_index=p, process_count=process_count,
                                 num_threads=0) for p in range(process_count)]
  assert len({l.num_batches for l in loaders}) == 1
  seen = []
  for step_batches in zip(*[list(l.batches()) for l in loaders]):
    for b in step_batches:
      assert b['x'].shape == (2, 3, 40) and b['mask'].dtype == bool
      assert np.all(b['x'][~b['mask']] == 0)
      ids = clip_ids(b['x'][b['mask']].reshape(-1, 3 * 40))
      np.testing.assert_array_equal(b['y'][b['mask']], index.labels[ids])
      seen.extend(ids.tolist())
  assert seen == list(range(9))  # global order = filenames order
  assert loaders[0].filenames == [f'clip{i:04d}' for i in range(9)]


def test_eval_batch_content_is_the_evenly_spaced_crops():
  index = constant_clips_index([[0, 1, 2]], length=30)
  ev = pipeline.EvalLoader(index, input_length=16, batch_size=4, num_crops=5, num_threads=0)
  (batch,) = list(ev.batches())
  for row in range(3):
    clip = index.read([row])[0]
    np.testing.assert_array_equal(batch['x'][row], augment.eval_crops(clip, 16, 5))
  assert batch['mask'].tolist() == [True, True, True, False]


# --- public API on the synthetic dataset --------------------------------------------------------

def test_public_api_end_to_end_on_synthetic(base_config, synthetic_data_dir):
  c = base_config
  c.dataset, c.data_dir, c.fold, c.strategy = 'synthetic', synthetic_data_dir, 3, 'intermix'
  c.batch_size, c.eval_batch_size, c.num_eval_crops = 16, 8, 4
  c.manual_dir = '/nonexistent/copy'  # ignored: synthetic data reads no source files
  info = data.dataset_info(c)
  assert (info.num_classes, info.num_folds) == (6, 5) and info.class_names[0] == 'tone'
  train = data.make_train_loader(c, 8000, 2000, process_index=1, process_count=2)
  assert train.num_examples == 240 and train.steps_per_epoch == 15
  batch = next(iter(train.batches(0)))
  assert batch['x'].shape == (8, 2000) and np.all(batch['y'][0::2] != batch['y'][1::2])
  assert np.abs(batch['x']).max() <= 1.0
  test = data.make_eval_loader(c, 8000, 2000)
  assert test.num_examples == 60 and len(test.filenames) == 60
  assert all(name.startswith('synthetic-3-') for name in test.filenames)
  batches = list(test.batches())
  assert len(batches) == 8 and batches[-1]['mask'].sum() == 4
  assert batches[0]['x'].shape == (8, 4, 2000)
  c.fold = 6
  with pytest.raises(ValueError, match='config.fold=6'):
    data.make_train_loader(c, 8000, 2000)
  c.fold = 'all'
  with pytest.raises(ValueError, match="config.fold='all' but the data loaders need one test fold"):
    data.make_eval_loader(c, 8000, 2000)
  c.fold, c.dataset = 1, 'nope'
  with pytest.raises(ValueError, match="config.dataset is 'nope'; the data pipeline knows"):
    data.dataset_info(c)
  c.dataset = 'custom'  # known, but needs the user's audio folder or csv
  with pytest.raises(ValueError, match="dataset='custom' needs config.audio_dir"):
    data.dataset_info(c)


def test_clip_cache_is_an_invisible_optimisation():
  sources = constant_clips_index(LABELS).sources
  cached = pipeline.ClipIndex(sources)
  uncached = pipeline.ClipIndex(sources, cache_bytes=0)
  partly = pipeline.ClipIndex(sources, cache_bytes=100 * 50 * 2 // 10)  # over budget: no cache
  assert cached.cached and not uncached.cached and not partly.cached
  ids = [26, 0, 13, 5, 5]
  for a, b in zip(cached.read(ids), uncached.read(ids)):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(cached.labels, uncached.labels)


@pytest.mark.parametrize('dataset,classes,folds,first', [
    ('esc50', 50, 5, 'dog'), ('esc10', 10, 5, 'dog'), ('urbansound8k', 10, 10, 'air_conditioner'),
    ('synthetic', 6, 5, 'tone')])
def test_dataset_info_needs_no_data(base_config, dataset, classes, folds, first):
  base_config.dataset = dataset
  base_config.data_dir = '/nonexistent'
  info = data.dataset_info(base_config)
  assert (info.name, info.num_classes, info.num_folds, info.class_names[0]) == (
      dataset, classes, folds, first)
  assert len(info.class_names) == classes


# --- independent pairs (BC's sampling: each mixture its own two draws) ----------------------------

def make_independent(**kwargs):
  return pipeline.TrainLoader(
      constant_clips_index(LABELS, 50), input_length=64, seed=kwargs.pop('seed', 3), pairs=True,
      strong_augment=kwargs.pop('strong', False), num_threads=kwargs.pop('num_threads', 0),
      sounds_per_example=2, **{'batch_size': 8, **kwargs})


def test_independent_pairs_two_sounds_per_example_of_different_classes():
  train = make_independent()
  labels = np.concatenate(LABELS)
  assert train.steps_per_epoch == 27 // 8 and train.rows == 16  # 8 mixtures from 16 sounds a step
  seen = collections.Counter()
  for epoch in range(40):
    for b in train.batches(epoch):
      assert b['x'].shape == (16, 64) and b['y'].shape == (16,)
      ids = clip_ids(b['x'])
      np.testing.assert_array_equal(b['y'], labels[ids])
      assert np.all(b['y'][0::2] != b['y'][1::2])
      seen.update(ids.tolist())
  # Draws with replacement over every clip (the dropped tail included), none favoured: 40 x 3 x 16
  # = 1920 draws over 27 clips (71 each on average). BC's rule redraws same-class pairs, so a clip
  # of a bigger class is drawn a little less; every clip stays within 40 % of the mean.
  assert set(seen) == set(range(27))
  counts = np.asarray([seen[i] for i in range(27)])
  assert counts.min() > 0.6 * counts.mean() and counts.max() < 1.4 * counts.mean()


def test_independent_pairs_are_deterministic_resumable_and_split_over_processes():
  a = [list(make_independent().batches(e)) for e in (1, 2)]
  b = list(make_independent().batches(1, start_step=1))  # fresh loader, mid-epoch
  for x, y in zip(a[0][1:], b):
    np.testing.assert_array_equal(x['x'], y['x'])
  assert any(not np.array_equal(x['y'], y['y']) for x, y in zip(a[0], a[1]))
  threaded = list(make_independent(num_threads=2).batches(1))
  for x, y in zip(a[0], threaded):
    np.testing.assert_array_equal(x['x'], y['x'])
  shards = [list(make_independent(process_index=p, process_count=2).batches(1)) for p in range(2)]
  for step, batch in enumerate(a[0]):
    assert shards[0][step]['x'].shape == (8, 64)
    np.testing.assert_array_equal(np.concatenate([s[step]['x'] for s in shards]), batch['x'])


def test_independent_pairs_need_two_classes_but_no_balance():
  unbalanced = pipeline.ClipIndex([ListSource([
      {'audio': np.full(50, i + 1, np.int16), 'label': 0 if i < 18 else 1,
       'filename': f'c{i:02d}.wav'} for i in range(20)])])
  loader = pipeline.TrainLoader(unbalanced, input_length=64, batch_size=8, seed=0, pairs=True,
                                strong_augment=False, num_threads=0, sounds_per_example=2)
  for b in loader.batches(0):  # shared pairs refuse this set (class 0 holds 18 of 20 clips)
    assert np.all(b['y'][0::2] != b['y'][1::2])
  with pytest.raises(config_lib.ConfigError, match='hold 1 class'):
    pipeline.TrainLoader(pipeline.ClipIndex([ListSource([
        {'audio': np.full(50, 1, np.int16), 'label': 3, 'filename': f'c{i}.wav'} for i in range(9)])]),
        input_length=64, batch_size=8, seed=0, pairs=True, strong_augment=False,
        sounds_per_example=2)
  with pytest.raises(ValueError, match='sounds_per_example'):
    make_train(pairs=False).__class__(constant_clips_index(LABELS, 50), input_length=64,
                                      batch_size=8, seed=0, pairs=False, strong_augment=False,
                                      sounds_per_example=2)
