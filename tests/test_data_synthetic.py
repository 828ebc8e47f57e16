"""The synthetic dataset (intermix_jax/data/synthetic.py): deterministic, rate-consistent, learnable."""
import numpy as np
import pytest
import scipy.signal
import soxr

from intermix_jax import data
from intermix_jax.data import audio_decode
from intermix_jax.data import synthetic


def test_deterministic_shape_and_range():
  for c in range(len(synthetic.CLASS_NAMES)):
    a = synthetic.synthesize(c, 2, 3, 16000)
    np.testing.assert_array_equal(a, synthetic.synthesize(c, 2, 3, 16000))
    assert a.shape == (int(synthetic.CLIP_SECONDS * 16000),)
    assert np.all(np.abs(a) <= 1.0) and np.all(np.isfinite(a))
    assert not np.array_equal(a, synthetic.synthesize(c, 2, 4, 16000))  # clips differ
  with pytest.raises(ValueError, match='class_index 6'):
    synthetic.synthesize(6, 1, 0, 8000)


@pytest.mark.parametrize('c', [0, 1, 3, 4, 5])  # every class but the noise one
def test_same_sound_at_every_rate(c):
  """A clip made at 44.1 kHz and resampled to 8 kHz is the clip made at 8 kHz (up to the noise
  floor, drawn per rate): the clip parameters do not depend on the rate."""
  low = synthetic.synthesize(c, 1, 0, 8000)
  high = soxr.resample(synthetic.synthesize(c, 1, 0, 44100), 44100, 8000)
  n = min(low.shape[0], high.shape[0])
  corr = np.corrcoef(low[:n], high[:n])[0, 1]
  assert corr > 0.93, corr


def _features(x, rate):
  """Five summary statistics of a spectrogram: level variation (AM, clicks, bursts), spectral
  centroid variation (chirps, FM) and spectral entropy (noise vs tones)."""
  f, _, s = scipy.signal.stft(x, rate, nperseg=256)
  p = np.abs(s) ** 2 + 1e-10
  frame_db = np.log(p.sum(0))
  centroid = (f[:, None] * p).sum(0) / p.sum(0)
  q = p / p.sum(0)
  return np.array([frame_db.std(), np.diff(frame_db).std(), centroid.std() / centroid.mean(),
                   np.diff(centroid).std() / centroid.mean(), -(q * np.log(q)).sum(0).mean()])


def test_classes_are_learnable_across_folds():
  """A nearest-centroid classifier on 5 handmade features, trained on 4 folds, beats chance
  (1/6) by far on the held-out fold: the classes are learnable and the folds consistent."""
  rate = 8000
  feats, labels, folds = [], [], []
  for fold in range(1, synthetic.NUM_FOLDS + 1):
    for c in range(len(synthetic.CLASS_NAMES)):
      for i in range(0, synthetic.CLIPS_PER_CLASS_PER_FOLD, 2):
        feats.append(_features(synthetic.synthesize(c, fold, i, rate), rate))
        labels.append(c)
        folds.append(fold)
  feats, labels, folds = np.array(feats), np.array(labels), np.array(folds)
  accuracies = []
  for test in range(1, synthetic.NUM_FOLDS + 1):
    train = folds != test
    z = (feats - feats[train].mean(0)) / feats[train].std(0)
    centroids = np.stack([z[train & (labels == c)].mean(0) for c in range(6)])
    pred = np.argmin(((z[~train][:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    accuracies.append(np.mean(pred == labels[~train]))
  assert np.mean(accuracies) > 0.7, accuracies


def test_builder_stores_every_clip_once_per_fold(synthetic_data_dir):
  builder = data.get_builder('synthetic', 8000, data_dir=synthetic_data_dir)
  data.catalog.prepare_builder(builder)
  assert builder.info.features['label'].names == list(synthetic.CLASS_NAMES)
  assert 'SYNTHETIC' in builder.info.description
  for fold in range(1, 6):
    source = builder.as_data_source(split=f'fold{fold}')
    examples = [source[i] for i in range(len(source))]
    assert len(examples) == 60
    assert np.bincount([ex['label'] for ex in examples]).tolist() == [10] * 6
    assert {int(ex['fold']) for ex in examples} == {fold}
  ex = builder.as_data_source(split='fold4')[0]
  _, fold, name, index = ex['filename'].decode().rsplit('-', 3)
  expected = audio_decode.to_int16(synthetic.synthesize(
      synthetic.CLASS_NAMES.index(name), int(fold), int(index), 8000))
  np.testing.assert_array_equal(ex['audio'], expected)
