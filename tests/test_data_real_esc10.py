"""Real ESC-10 (official ESC-50 layout) prepared at 16 kHz and 44.1 kHz; the copy is
$INTERMIX_ESC10_DIR, else ../shared/data/esc10 beside the repository.

Skipped, with the reason, when the copy is absent (see conftest.esc10_real_dir).
"""
import csv
import os

import numpy as np
import pytest
import scipy.signal
import soundfile as sf

from intermix_jax import data

# docs/method.md §5: ESC-50 target -> ESC-10 label (its index here).
ESC10_ORDER = (0, 10, 11, 20, 38, 21, 40, 41, 1, 12)


def _csv_targets(root):
  with open(os.path.join(root, 'meta', 'esc50.csv'), newline='') as f:
    return {r['filename']: (int(r['target']), int(r['fold'])) for r in csv.DictReader(f)
            if r['esc10'] == 'True'}


@pytest.mark.parametrize('rate', [16000, 44100])
def test_real_esc10_counts_folds_and_spec_label_order(esc10_real_prepared, esc10_real_dir, rate):
  builder = data.get_builder('esc10', rate, data_dir=esc10_real_prepared[rate])
  assert builder.is_prepared()
  targets = _csv_targets(esc10_real_dir)
  total, per_class = 0, np.zeros(10, int)
  for fold in range(1, 6):
    index = data.ClipIndex([builder.as_data_source(split=f'fold{fold}')])
    assert len(index) == 80
    total += len(index)
    for name, label in zip(index.filenames, index.labels):
      target, csv_fold = targets[name]
      assert csv_fold == fold
      assert label == ESC10_ORDER.index(target)
    per_class += np.bincount(index.labels, minlength=10)
  assert total == 400
  assert per_class.tolist() == [40] * 10
  assert builder.info.features['label'].names == [
      'dog', 'rain', 'sea_waves', 'crying_baby', 'clock_tick', 'sneezing', 'helicopter',
      'chainsaw', 'rooster', 'crackling_fire']
  assert builder.info.metadata['skipped_files'] == []


def test_real_esc10_audio_is_the_trimmed_wav(esc10_real_prepared, esc10_real_dir):
  """At 44.1 kHz the stored clip is the file's int16 samples without the zero ends; at 16 kHz
  it has the resampled length and the same waveform (checked by correlation)."""
  hi = data.get_builder('esc10', 44100, data_dir=esc10_real_prepared[44100])
  lo = data.get_builder('esc10', 16000, data_dir=esc10_real_prepared[16000])
  src_hi = hi.as_data_source(split='fold4')
  by_name_lo = {ex['filename']: ex['audio'] for ex in lo.as_data_source(split='fold4')}
  for i in range(0, 80, 16):
    ex = src_hi[i]
    name = ex['filename'].decode()
    raw, rate = sf.read(os.path.join(esc10_real_dir, 'audio', name), dtype='int16')
    assert rate == 44100
    nz = np.flatnonzero(raw)
    np.testing.assert_array_equal(ex['audio'], raw[nz[0]:nz[-1] + 1])
    low = by_name_lo[ex['filename']].astype(np.float64)
    assert low[0] != 0 and low[-1] != 0
    # Trimming after conversion can remove a few more samples at 16 kHz (+-1 LSB tails that
    # round to 0 once resampled), never add: lengths agree within 2 %.
    assert abs(low.shape[0] - ex['audio'].shape[0] * 16000 / 44100) < 0.02 * low.shape[0]
    # Independent resampler (scipy polyphase) on the 44.1 kHz clip, aligned at the best lag.
    ref = scipy.signal.resample_poly(ex['audio'].astype(np.float64), 160, 441)
    xcorr = scipy.signal.correlate(ref, low, mode='full', method='fft')
    lags = np.arange(-low.shape[0] + 1, ref.shape[0])
    lag = int(lags[np.argmax(xcorr)])
    assert 0 <= lag <= 0.02 * low.shape[0]
    n = min(ref.shape[0] - lag, low.shape[0])
    assert np.corrcoef(ref[lag:lag + n], low[:n])[0, 1] > 0.99, name


def test_real_esc10_train_and_eval_loaders(esc10_real_prepared, esc10_real_dir, base_config):
  c = base_config
  c.dataset, c.data_dir, c.manual_dir = 'esc10', esc10_real_prepared[16000], esc10_real_dir
  c.fold, c.strategy, c.batch_size, c.strong_augment = 2, 'bc', 64, True
  train = data.make_train_loader(c, 16000, 24014)
  assert train.num_examples == 320 and train.steps_per_epoch == 5
  batch = train.batch(0, 4)  # BC's independent pairs: 64 mixtures from 128 sounds
  assert batch['x'].shape == (128, 24014) and np.all(batch['y'][0::2] != batch['y'][1::2])
  c.mixing.pairing = 'shared'  # 32 pairs of the epoch's shuffle, each mixed both ways
  batch = data.make_train_loader(c, 16000, 24014).batch(0, 4)
  assert batch['x'].shape == (64, 24014) and np.all(batch['y'][0::2] != batch['y'][1::2])
  test = data.make_eval_loader(c, 16000, 24014)
  assert test.num_examples == 80 and test.filenames == sorted(test.filenames)
  assert all(name.startswith('2-') for name in test.filenames)
