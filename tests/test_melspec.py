"""Tests of intermix_jax.melspec against librosa (an independent implementation)."""
import glob
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile
import soxr

from intermix_jax import melspec

librosa = pytest.importorskip('librosa')

# The real ESC-10: $INTERMIX_ESC10_DIR, else <$INTERMIX_SHARED or ../shared beside the repo>/data/esc10.
_SHARED = os.environ.get('INTERMIX_SHARED', os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), 'shared'))
ESC10_DIR = os.environ.get('INTERMIX_ESC10_DIR', os.path.join(_SHARED, 'data', 'esc10'))


@pytest.mark.parametrize('sr,n_fft,n_mels,fmin,fmax', [(22050, 1024, 60, 0.0, None), (16000, 512, 40, 50.0, 7000.0),
                                                      (44100, 2048, 128, 0.0, None)])
def test_mel_filterbank_matches_librosa(sr, n_fft, n_mels, fmin, fmax):
  ours = melspec.mel_filterbank(sr, n_fft, n_mels, fmin, fmax)
  ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=False, norm='slaney')
  assert ours.shape == (n_fft // 2 + 1, n_mels)
  np.testing.assert_allclose(ours, ref.T, rtol=1e-5, atol=1e-7)


def test_mel_scale_matches_librosa_and_inverts():
  hz = np.array([0.0, 100.0, 999.0, 1000.0, 1001.0, 4000.0, 11025.0])
  np.testing.assert_allclose(melspec.hz_to_mel(hz), librosa.hz_to_mel(hz, htk=False), rtol=1e-10)
  np.testing.assert_allclose(melspec.mel_to_hz(melspec.hz_to_mel(hz)), hz, rtol=1e-10, atol=1e-9)


def test_filterbank_rejects_bad_band_edges():
  with pytest.raises(ValueError, match='fmax'):
    melspec.mel_filterbank(22050, 1024, 60, fmin=0.0, fmax=20000.0)


def _librosa_log_mel(y, sr=22050):
  s = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=1024, hop_length=512, n_mels=60, center=True,
                                     pad_mode='reflect', power=2.0, window='hann', htk=False, norm='slaney')
  return librosa.power_to_db(s, ref=1.0, amin=1e-10, top_db=80.0)   # (60, frames)


def _check_log_mel_and_delta(y):
  """y: (N, T) float32 -> compare log-mel and delta with librosa clip by clip."""
  ours = np.asarray(jax.jit(lambda x: melspec.log_mel_with_delta(x, 22050))(y))
  assert ours.shape == (y.shape[0], 60, melspec.num_frames(y.shape[1]), 2)
  for i in range(y.shape[0]):
    ref = _librosa_log_mel(y[i].astype(np.float64))
    # dB values: float32 FFT vs float64, compare in dB with a tolerance well below 0.01 dB where loud.
    np.testing.assert_allclose(ours[i, :, :, 0], ref, atol=2e-2)
    assert np.mean(np.abs(ours[i, :, :, 0] - ref)) < 2e-3
    ref_delta = librosa.feature.delta(ref, width=9, order=1, axis=-1)
    np.testing.assert_allclose(ours[i, :, :, 1], ref_delta, atol=2e-2)


def test_log_mel_and_delta_match_librosa_on_synthetic_sounds():
  rng = np.random.default_rng(0)
  t = np.arange(20480) / 22050
  chirp = 0.3 * np.sin(2 * np.pi * (200 + 3000 * t) * t)
  burst = np.where((t > 0.3) & (t < 0.5), rng.standard_normal(t.size) * 0.2, 0.0)
  tone_in_noise = 0.1 * np.sin(2 * np.pi * 440 * t) + 0.01 * rng.standard_normal(t.size)
  _check_log_mel_and_delta(np.stack([chirp, burst + 1e-4 * chirp, tone_in_noise]).astype(np.float32))


def test_log_mel_and_delta_match_librosa_on_real_esc10():
  files = sorted(glob.glob(os.path.join(ESC10_DIR, 'audio', '*.wav')))
  if not files:
    pytest.skip(f'real ESC-10 not found: no {ESC10_DIR}/audio/*.wav (set INTERMIX_ESC10_DIR)')
  clips = []
  for path in files[:3]:
    y, rate = soundfile.read(path, dtype='float32', always_2d=True)
    y = soxr.resample(y.mean(axis=1), rate, 22050)
    start = int(np.argmax(np.abs(y) > 1e-3))                 # a segment with sound in it
    clips.append(np.pad(y[start:start + 20480], (0, max(0, 20480 - len(y[start:start + 20480])))))
  _check_log_mel_and_delta(np.stack(clips).astype(np.float32))


def test_delta_matches_librosa_including_edges():
  rng = np.random.default_rng(1)
  x = rng.standard_normal((3, 7, 20)).astype(np.float32)
  for width in (3, 5, 9):
    ours = np.asarray(melspec.delta(jnp.asarray(x), width=width, axis=-1))
    np.testing.assert_allclose(ours, librosa.feature.delta(x, width=width, axis=-1), rtol=1e-4, atol=1e-5)
  # Another axis: frames second-to-last.
  ours = np.asarray(melspec.delta(jnp.asarray(x), width=5, axis=1))
  np.testing.assert_allclose(ours, librosa.feature.delta(x, width=5, axis=1), rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match='width'):
    melspec.delta(jnp.asarray(x), width=4)
  with pytest.raises(ValueError, match='frames'):
    melspec.delta(jnp.asarray(x[:, :, :5]), width=9, axis=-1)


def test_delta_of_a_linear_ramp_is_its_slope():
  frames = jnp.arange(30, dtype=jnp.float32)[None, None, :] * 0.25 + 3.0
  np.testing.assert_allclose(melspec.delta(frames, width=9, axis=-1), 0.25, rtol=1e-6)


def test_frames_count_and_padding():
  assert melspec.num_frames(20480) == 41 and melspec.num_frames(20991) == 41 and melspec.num_frames(20992) == 42
  assert melspec.num_frames(2048, center=False) == 3
  x = jnp.arange(20.0)[None]
  f = melspec.frames(x, n_fft=8, hop_length=4, center=True)
  assert f.shape == (1, 6, 8)
  np.testing.assert_array_equal(f[0, 0], [4, 3, 2, 1, 0, 1, 2, 3])        # reflect padding
  np.testing.assert_array_equal(melspec.frames(x, 8, 4, pad_mode='constant')[0, 0], [0, 0, 0, 0, 0, 1, 2, 3])
  np.testing.assert_array_equal(f[0, 2], np.arange(4, 12))                   # centred on sample 8


def test_hann_window_is_periodic():
  np.testing.assert_allclose(melspec.hann_window(1024), np.hanning(1025)[:-1], atol=1e-7)


@pytest.mark.slow  # 8 s: out of the fast tier
def test_silence_floors_and_gradients_stay_finite():
  x = jnp.zeros((2, 8192)).at[1, 1000:1200].set(0.5)
  feats = jax.jit(melspec.log_mel_with_delta, static_argnums=1)(x, 22050)  # compiled: as trained
  assert bool(jnp.all(jnp.isfinite(feats)))
  np.testing.assert_array_equal(feats[0, :, :, 0], -100.0)                   # 10 log10(amin)
  assert float(feats[1, :, :, 0].min()) >= float(feats[1, :, :, 0].max()) - 80.0 - 1e-4
  grad = jax.jit(jax.grad(lambda x: jnp.sum(melspec.log_mel_with_delta(x, 22050))))(x)
  assert bool(jnp.all(jnp.isfinite(grad)))
