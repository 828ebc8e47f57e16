"""Crops cut on the device (intermix_jax/data/on_device.py) against the host pipeline.

The device crops are made from the host pipeline's own draws (order, pairs, crop positions,
scales, gains), so the check is on values, batch by batch, which is stronger than comparing
their distributions: without time scaling bitwise; with time scaling within the stated bound
(|device - host| <= 1e-4 * |x[k+1] - x[k]| * gain / 32768, the float32 rounding of the
interpolation position). A distribution check is added on top for what the issue names
(crop positions, scales, gains and pairs over many steps).
"""
import functools

import jax

import numpy as np
import pytest

from intermix_jax import parallel
from intermix_jax.data import on_device
from intermix_jax.data import pipeline
from test_data_pipeline import ListSource


def _noise_index(labels_per_source, lengths, seed=0, prefix='clip'):
  """Clips of white int16 noise (the worst case for interpolation) of the given lengths."""
  rng = np.random.default_rng(seed)
  sources, i = [], 0
  for labels in labels_per_source:
    examples = []
    for label in labels:
      n = lengths[i % len(lengths)]
      examples.append({'audio': rng.integers(-32768, 32768, n).astype(np.int16), 'label': label,
                       'filename': f'{prefix}{i:04d}'.encode()})
      i += 1
    sources.append(ListSource(examples))
  return pipeline.ClipIndex(sources)


def _loader(index, *, strong, pairs, t=700, batch=8, seed=3):
  """pairs: False, True (shared pairs) or 'independent' (two sounds per example)."""
  return pipeline.TrainLoader(index, input_length=t, batch_size=batch, seed=seed, pairs=bool(pairs),
                              strong_augment=strong, num_threads=0,
                              sounds_per_example=2 if pairs == 'independent' else 1)


LENGTHS = [1, 5, 300, 699, 700, 701, 1500, 4000]  # shorter, equal and longer than T = 700


def _bound(loader, epoch, step):
  """Per row: the largest |x[k+1] - x[k]| of its clip * gain / 32768 (the scaled-crop bound;
  the float32 rounding of both sides' arithmetic, below 1e-6 of full scale, is added by the
  callers)."""
  positions, _, _, gains = loader.draws(epoch, step)
  out = []
  for p, clip in zip(positions, loader.index.read(positions)):
    d = np.abs(np.diff(clip.astype(np.float64))).max() if clip.shape[0] > 1 else 0.0
    out.append(d)
  return np.asarray(out) * (1.0 if gains is None else gains) / 32768.0


def _inputs(loaders, table, mesh, *, pairs, stacked):
  """DeviceInputs over `table` placed as the trainer places it (parallel.py)."""
  place = functools.partial(parallel.host_batch_to_global, mesh=mesh, pairs=pairs, runs=stacked)
  return on_device.DeviceInputs(loaders, table.rows, parallel.replicate(table.clips, mesh),
                                place=place, stacked=stacked)


@pytest.mark.parametrize('strong', [False, True])
@pytest.mark.parametrize('pairs', [False, True, 'independent'])
def test_device_batches_equal_host_batches(strong, pairs):
  index = _noise_index([[0, 1, 2, 3] * 6, [1, 2, 3, 0] * 4], LENGTHS)
  loader = _loader(index, strong=strong, pairs=pairs)
  table = on_device.ClipTable.from_indexes([index])
  mesh = parallel.make_mesh()
  inputs = _inputs([loader], table, mesh, pairs=bool(pairs), stacked=False)
  for epoch in range(3):
    for step in range(loader.steps_per_epoch):
      got, want = inputs.batch(epoch, step), loader.batch(epoch, step)
      np.testing.assert_array_equal(np.asarray(got['y']), want['y'])
      x = np.asarray(got['x'])
      if not strong:
        np.testing.assert_array_equal(x, want['x'])
      else:
        bound = 1e-4 * _bound(loader, epoch, step)[:, None] + 1e-6
        assert np.all(np.abs(x - want['x']) <= bound), np.max(np.abs(x - want['x']) / bound)


def test_long_crops_interpolate_within_bound():
  """T = 66,150 (EnvNet at 44.1 kHz) and 5 s clips: three base-64 digits, positions ~2e5."""
  t = 66_150
  index = _noise_index([[0, 1, 0, 1, 0, 1]], [220_500, 100_000, 40_000])
  loader = _loader(index, strong=True, pairs=False, t=t, batch=6)
  table = on_device.ClipTable.from_indexes([index])
  inputs = _inputs([loader], table, parallel.make_mesh(), pairs=False, stacked=False)
  for epoch in range(2):
    got = np.asarray(inputs.batch(epoch, 0)['x'])
    want = loader.batch(epoch, 0)['x']
    bound = 1e-4 * _bound(loader, epoch, 0)[:, None] + 1e-6
    assert np.all(np.abs(got - want) <= bound), np.max(np.abs(got - want) / bound)


def test_stacked_runs_share_one_table_and_match_their_loaders():
  """Two runs of one dataset (folds 1-2 and 2-3 training): the table holds each clip once, and
  each run's rows are its own loader's batch."""
  full = [_noise_index([[0, 1, 2] * 4], [900, 650], seed=s, prefix=f'f{s}_') for s in range(3)]
  a = pipeline.ClipIndex(full[0].sources + full[1].sources)
  b = pipeline.ClipIndex(full[1].sources + full[2].sources)
  la, lb = (_loader(i, strong=False, pairs=True, seed=s) for i, s in ((a, 0), (b, 1)))
  table = on_device.ClipTable.from_indexes([a, b])
  assert table.clips.shape == (36, 900)
  inputs = _inputs([la, lb], table, parallel.make_mesh(), pairs=True, stacked=True)
  for step in range(inputs.steps_per_epoch):
    got = inputs.batch(1, step)
    for k, loader in enumerate((la, lb)):
      want = loader.batch(1, step)
      np.testing.assert_array_equal(np.asarray(got['x'][k]), want['x'])
      np.testing.assert_array_equal(np.asarray(got['y'][k]), want['y'])


def test_draw_statistics():
  """Over many steps: every clip once per epoch, pairs of different classes, crop positions
  uniform over the padded clip, log-scales uniform in [-log 1.25, log 1.25], gains in +-6 dB
  uniform in dB (Kolmogorov-Smirnov distances against the uniform law)."""
  labels = [0, 1, 2, 3] * 10
  index = _noise_index([labels], [500])
  loader = _loader(index, strong=True, pairs=True, t=400, batch=8)
  u, s, g = [], [], []
  for epoch in range(60):
    seen = []
    for step in range(loader.steps_per_epoch):
      plan = loader.plan(epoch, step)
      seen.extend(plan['clip'].tolist())
      assert np.all(plan['y'][0::2] != plan['y'][1::2])
      slack = plan['n_out'] + 2 * 200 - 400
      u.extend(((plan['offset'] + 0.5) / (slack + 1)).tolist())
      _, _, scales, gains = loader.draws(epoch, step)
      s.extend(np.log(scales) / np.log(1.25))
      g.extend(20 * np.log10(gains) / 6.0)
    assert sorted(seen) == list(range(40))
  for values, lo in ((u, 0.0), (s, -1.0), (g, -1.0)):
    v = np.sort(np.asarray(values))
    cdf = (v - lo) / (1.0 - lo)
    ks = np.max(np.abs(cdf - (np.arange(v.size) + 0.5) / v.size))
    assert ks < 1.63 / np.sqrt(v.size) + 0.01, ks  # 1 % level (+ the offsets' discreteness)


def test_table_refuses_one_name_with_two_lengths_or_twice_in_one_index():
  a = _noise_index([[0, 1]], [10])
  b = _noise_index([[0, 1]], [11])
  with pytest.raises(ValueError, match="clip0000.*10 and 11"):
    on_device.ClipTable.from_indexes([a, b])
  twice = pipeline.ClipIndex(a.sources + a.sources)
  with pytest.raises(ValueError, match='2 file name.s. appear twice'):
    on_device.ClipTable.from_indexes([twice])
