"""Tests of intermix_jax.audio against independent float64 numpy / scipy references."""
import glob
import math
import os

import chex
import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import helpers
from intermix_jax import audio

# The real ESC-10: $INTERMIX_ESC10_DIR, else <$INTERMIX_SHARED or ../shared beside the repo>/data/esc10.
_SHARED = os.environ.get('INTERMIX_SHARED', os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), 'shared'))
ESC10_DIR = os.environ.get('INTERMIX_ESC10_DIR', os.path.join(_SHARED, 'data', 'esc10'))

# The independent float64 references (BC learning's numpy code, rewritten in float64 with a frame
# loop; scipy's Hilbert transform) are helpers.reference_gain and helpers.reference_phase_shift.


def band_limited(rng, t, n=None):
  """Random signals (n, t) or (t,) without DC and (even t) Nyquist content."""
  x = rng.standard_normal((n or 1, t))
  spec = np.fft.rfft(x)
  spec[:, 0] = 0
  if t % 2 == 0:
    spec[:, -1] = 0
  x = np.fft.irfft(spec, n=t)
  return x if n else x[0]


_gain = jax.jit(audio.a_weighted_gain, static_argnums=1)
_shift = jax.jit(audio.phase_shift)


# --- frame length ---------------------------------------------------------------------------------
def test_frame_length_published_and_rule():
  assert audio.frame_length(16000) == 2048
  assert audio.frame_length(44100) == 4096
  for fs in (8000, 11025, 22050, 32000, 48000, 96000):
    n = audio.frame_length(fs)
    assert n & (n - 1) == 0
    # nearest power of two to 0.093 s on a log scale
    assert abs(math.log2(n) - math.log2(0.093 * fs)) <= 0.5
  # the log-scale rule reproduces the published values too
  for fs, n in ((16000, 2048), (44100, 4096)):
    assert 2 ** round(math.log2(0.093 * fs)) == n


@pytest.mark.parametrize('bad', [0, -16000, 'x', None, True])
def test_frame_length_rejects_bad_rate(bad):
  with pytest.raises(ValueError, match='sample rate'):
    audio.frame_length(bad)


# --- A-weighted gain ------------------------------------------------------------------------------
@pytest.mark.parametrize('fs,t', [(16000, 24014), (44100, 20000), (22050, 5000), (8000, 1500),
                                  (16000, 2048), (16000, 3071)])
def test_gain_matches_float64_reference_on_random_audio(fs, t):
  rng = np.random.default_rng(fs + t)
  n_fft = audio.frame_length(fs)
  # White noise, a quiet tone with noise, a low-frequency rumble: different parts of the A-curve.
  n = np.arange(t)
  x = np.stack([0.1 * rng.standard_normal(t),
                1e-3 * np.sin(2 * np.pi * 1000 * n / fs) + 1e-5 * rng.standard_normal(t),
                0.5 * np.sin(2 * np.pi * 30 * n / fs) + 1e-4 * rng.standard_normal(t)])
  got = np.asarray(_gain(jnp.asarray(x, jnp.float32), fs))
  want = np.array([helpers.reference_gain(row, fs, n_fft) for row in x])
  chex.assert_shape(got, (3,))
  np.testing.assert_allclose(got, want, atol=0.01)


def _esc10_clips(k):
  files = sorted(glob.glob(os.path.join(ESC10_DIR, 'audio', '*.wav')))
  if not files:
    pytest.skip(f'ESC-10 audio not found under {ESC10_DIR} (real-audio check skipped)')
  import soundfile
  step = max(1, len(files) // k)
  return [soundfile.read(f, dtype='float32')[0] for f in files[::step][:k]]  # int16 / 32768 scale


def test_gain_matches_reference_on_real_esc10_audio():
  clips = _esc10_clips(6)
  for clip in clips:
    for start in (0, 100000):
      x = clip[start:start + 66650]
      got = float(_gain(jnp.asarray(x), 44100))
      assert abs(got - helpers.reference_gain(x, 44100, 4096)) < 0.01
  import soxr  # the 16 kHz path on real audio too
  x = soxr.resample(clips[0], 44100, 16000)[:24014]
  assert abs(float(_gain(jnp.asarray(x), 16000)) - helpers.reference_gain(x, 16000, 2048)) < 0.01


@hypothesis.settings(max_examples=20, deadline=None)
@hypothesis.given(seed=st.integers(0, 2 ** 31), log_scale=st.floats(-3, 3))
def test_gain_scales_by_20log10(seed, log_scale):
  x = 0.1 * np.random.default_rng(seed).standard_normal(5000).astype(np.float32)
  base = float(_gain(jnp.asarray(x), 16000))
  scaled = float(_gain(jnp.asarray(x * 10 ** log_scale), 16000))
  assert abs(scaled - (base + 20 * log_scale)) < 0.01


def test_doubling_amplitude_adds_6_02_db():
  x = 0.05 * np.random.default_rng(1).standard_normal((2, 8000)).astype(np.float32)
  delta = np.asarray(_gain(jnp.asarray(2 * x), 16000) - _gain(jnp.asarray(x), 16000))
  np.testing.assert_allclose(delta, 20 * np.log10(2), atol=1e-3)
  np.testing.assert_allclose(delta, 6.02, atol=0.01)


def test_silence_and_tiny_signals_give_the_floor():
  x = jnp.stack([jnp.zeros(5000), jnp.full(5000, 1e-20), 1e-30 * jnp.sin(jnp.arange(5000.0))])
  got = _gain(x, 16000)
  np.testing.assert_array_equal(np.asarray(got), -80.0)
  grad = jax.jit(jax.grad(lambda v: audio.a_weighted_gain(v, 16000).sum()))(x)
  assert np.isfinite(np.asarray(grad)).all()


def test_huge_magnitudes_do_not_overflow():
  x = 0.1 * np.random.default_rng(2).standard_normal(5000)
  base = helpers.reference_gain(x, 16000, 2048)
  got = float(_gain(jnp.asarray(x * 1e20, jnp.float32), 16000))
  assert np.isfinite(got)
  assert abs(got - (base + 400.0)) < 0.01


def test_short_input_is_zero_padded_to_one_frame():
  x = np.random.default_rng(3).standard_normal(700).astype(np.float32)
  padded = np.concatenate([x, np.zeros(2048 - 700, np.float32)])
  np.testing.assert_allclose(float(_gain(jnp.asarray(x), 16000)),
                             float(_gain(jnp.asarray(padded), 16000)), atol=1e-4)
  assert abs(float(_gain(jnp.asarray(x), 16000)) - helpers.reference_gain(x, 16000, 2048)) < 0.01


def test_gain_batch_axes():
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 3, 4000)), jnp.float32)
  got = _gain(x, 16000)
  chex.assert_shape(got, (2, 3))
  want = [helpers.reference_gain(row, 16000, 2048) for row in np.asarray(x).reshape(6, -1)]
  np.testing.assert_allclose(np.asarray(got).reshape(6), want, atol=0.01)


# --- phase shift ----------------------------------------------------------------------------------
@pytest.mark.parametrize('t', [1000, 1001, 66650])
def test_phase_shift_equals_cos_minus_sin_hilbert(t):
  rng = np.random.default_rng(t)
  x = rng.standard_normal((3, t))  # with DC and Nyquist content: they follow cos(phi) in both
  phi = np.array([0.7, -1.3, math.pi / 2])
  got = np.asarray(_shift(jnp.asarray(x, jnp.float32), jnp.asarray(phi, jnp.float32)))
  chex.assert_shape(got, (3, t))
  want = np.stack([helpers.reference_phase_shift(row, p) for row, p in zip(x, phi)])
  np.testing.assert_allclose(got, want, atol=2e-5 * np.sqrt(np.log2(t)))


def test_phase_shift_zero_is_identity():
  x = np.random.default_rng(0).standard_normal((2, 777)).astype(np.float32)
  np.testing.assert_allclose(np.asarray(_shift(jnp.asarray(x), jnp.zeros(2))), x, atol=1e-5)


@hypothesis.settings(max_examples=25, deadline=None)
@hypothesis.given(seed=st.integers(0, 2 ** 31), t=st.sampled_from([64, 255, 1000]),
                  phi=st.floats(-math.pi, math.pi))
def test_phase_shift_inverse_and_energy(seed, t, phi):
  x = band_limited(np.random.default_rng(seed), t).astype(np.float32)
  y = _shift(jnp.asarray(x), phi)
  back = _shift(y, -phi)
  np.testing.assert_allclose(np.asarray(back), x, atol=1e-5)
  np.testing.assert_allclose(float(jnp.sum(y ** 2)), float(np.sum(x.astype(np.float64) ** 2)),
                             rtol=1e-5)


def test_phase_shift_by_pi_negates_and_composes():
  x = band_limited(np.random.default_rng(5), 512, n=2).astype(np.float32)
  np.testing.assert_allclose(np.asarray(_shift(jnp.asarray(x), jnp.full(2, math.pi))), -x, atol=1e-5)
  a, b = 0.4, -1.1
  np.testing.assert_allclose(np.asarray(_shift(_shift(jnp.asarray(x), a), b)),
                             np.asarray(_shift(jnp.asarray(x), a + b)), atol=1e-5)


def test_phase_shift_dc_follows_cosine():
  # DC has no quadrature partner: a constant becomes cos(phi) times itself (as in the Hilbert form).
  got = np.asarray(_shift(jnp.ones(101), 1.0))
  np.testing.assert_allclose(got, np.cos(1.0), atol=1e-6)


def test_phase_shift_real_audio_with_per_row_phases():
  clips = _esc10_clips(2)
  x = np.stack([c[:66650] for c in clips])
  phi = np.array([0.3, -1.2], np.float32)
  got = np.asarray(_shift(jnp.asarray(x), jnp.asarray(phi)))
  want = np.stack([helpers.reference_phase_shift(row, p) for row, p in zip(x, phi)])
  np.testing.assert_allclose(got, want, atol=1e-5)
