"""Decoding one file (intermix_jax/data/audio_decode.py): formats, resampling, trimming, errors."""
import os

from hypothesis import given, settings, strategies as st
import numpy as np
import pytest
import scipy.signal
import soundfile as sf

import fixtures_audio
from intermix_jax.data import audio_decode


def _write(path, x, rate, subtype='PCM_16'):
  sf.write(str(path), x, rate, subtype=subtype)
  return str(path)


def test_int16_file_at_target_rate_is_exact_and_trimmed(tmp_path):
  rng = np.random.default_rng(0)
  body = rng.integers(-30000, 30000, size=500).astype(np.int16)
  body[0] = 7
  body[-1] = -3
  body[100:110] = 0  # interior zeros stay
  x = np.concatenate([np.zeros(13, np.int16), body, np.zeros(9, np.int16)])
  path = _write(tmp_path / 'a.wav', x, 16000)
  np.testing.assert_array_equal(audio_decode.load_audio(path, 16000, trim=True), body)
  np.testing.assert_array_equal(audio_decode.load_audio(path, 16000, trim=False), x)


def test_stereo_is_downmixed_to_the_channel_mean(tmp_path):
  rng = np.random.default_rng(1)
  x = rng.integers(-20000, 20000, size=(400, 2)).astype(np.int16)
  x[:, 1] = x[:, 1] // 2 * 2  # even sums: the mean is exact
  x[:, 0] = x[:, 0] // 2 * 2
  path = _write(tmp_path / 's.wav', x, 8000)
  expected = ((x[:, 0].astype(np.int32) + x[:, 1]) // 2).astype(np.int16)
  np.testing.assert_array_equal(audio_decode.load_audio(path, 8000), expected)


@pytest.mark.parametrize('native,target', [(44100, 16000), (22050, 44100), (48000, 22050),
                                           (11025, 8000)])
def test_resampling_matches_an_independent_polyphase_resampler(tmp_path, native, target):
  x = fixtures_audio.tone(523.0, 0.5, native, 1)[:, 0]
  path = _write(tmp_path / 'r.wav', x, native, 'FLOAT')
  y = audio_decode.load_audio(path, target).astype(np.float64) / 32768
  g = np.gcd(native, target)
  ref = scipy.signal.resample_poly(x.astype(np.float64), target // g, native // g)
  assert abs(y.shape[0] - ref.shape[0]) <= 1
  n = min(y.shape[0], ref.shape[0])
  core = slice(n // 10, n - n // 10)  # ignore the two resamplers' different edge handling
  err = np.sqrt(np.mean((y[core] - ref[core]) ** 2))
  assert err < 2e-3, err  # the signal rms is 0.35
  # The tone's frequency survives: the spectrum peaks at 523 Hz.
  spec = np.abs(np.fft.rfft(y[core] * np.hanning(y[core].shape[0])))
  peak_hz = np.argmax(spec) * target / y[core].shape[0]
  assert abs(peak_hz - 523.0) < 5


@pytest.mark.parametrize('subtype,tol', [('PCM_U8', 256), ('PCM_24', 1), ('PCM_32', 1),
                                         ('FLOAT', 1), ('DOUBLE', 1)])
def test_bit_depths_map_to_int16_scale(tmp_path, subtype, tol):
  x = fixtures_audio.tone(300.0, 0.1, 16000, 1)[:, 0]
  path = _write(tmp_path / f'{subtype}.wav', x, 16000, subtype)
  y = audio_decode.load_audio(path, 16000).astype(np.int32)
  ref = np.rint(x.astype(np.float64) * 32768).astype(np.int32)
  assert np.max(np.abs(y - ref)) <= tol


@pytest.mark.parametrize('kind', sorted(fixtures_audio.BAD_KINDS))
def test_every_bad_file_kind_names_the_file_and_the_problem(tmp_path, kind):
  path = str(tmp_path / f'bad_{kind}.wav')
  fixtures_audio._write_bad(path, kind, 22050)  # pylint: disable=protected-access
  with pytest.raises(audio_decode.BadAudioFileError) as err:
    audio_decode.load_audio(path, 16000, trim=True)
  assert err.value.path == path
  assert path in str(err.value)
  assert fixtures_audio.BAD_KINDS[kind] in str(err.value)


def test_unexpected_rate_is_rejected(tmp_path):
  path = _write(tmp_path / 'slow.wav', np.ones(100, np.float32) * 0.1, 1000)
  with pytest.raises(audio_decode.BadAudioFileError, match='unexpected sample rate 1000 Hz'):
    audio_decode.load_audio(path, 16000)


def test_non_finite_float_samples_are_rejected(tmp_path):
  x = np.full(100, 0.1, np.float32)
  x[50] = np.nan
  path = _write(tmp_path / 'nan.wav', x, 16000, 'FLOAT')
  with pytest.raises(audio_decode.BadAudioFileError, match='NaN'):
    audio_decode.load_audio(path, 16000)


def test_wav_with_trailing_chunk_is_not_reported_truncated(tmp_path):
  path = _write(tmp_path / 'list.wav', np.full(64, 1000, np.int16), 16000)
  with open(path, 'ab') as f:  # a LIST chunk after data (common in real files)
    f.write(b'LIST\x04\x00\x00\x00INFO')
  np.testing.assert_array_equal(audio_decode.load_audio(path, 16000), np.full(64, 1000))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(-3, 3), max_size=40))
def test_trim_zeros_law(values):
  x = np.asarray(values, np.int16)
  y = audio_decode.trim_zeros(x)
  nz = np.flatnonzero(x)
  if nz.size == 0:
    assert y.size == 0
  else:
    assert y[0] != 0 and y[-1] != 0
    np.testing.assert_array_equal(y, x[nz[0]:nz[-1] + 1])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-2.0, 2.0, allow_nan=False), min_size=1, max_size=30))
def test_to_int16_rounds_and_saturates(values):
  x = np.asarray(values)
  y = audio_decode.to_int16(x)
  assert y.dtype == np.int16
  ref = np.clip(np.round(x * 32768), -32768, 32767)
  np.testing.assert_array_equal(y, ref)


def test_error_message_is_readable(tmp_path):
  path = os.path.join(tmp_path, 'nothing.wav')
  err = audio_decode.BadAudioFileError(path, 'empty file (0 bytes)')
  assert str(err) == f'{path}: empty file (0 bytes)'
