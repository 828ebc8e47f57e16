"""Log-mel spectrogram and delta features in jnp (the on-device front end of PiczakCNN).

Piczak (2015) computed, with librosa: mel spectrogram (power), 60 bands, window 1024, hop 512, at
22.05 kHz; `logamplitude` (dB re 1.0, amin 1e-10, floor at max - 80 dB); and the deltas of the log-mel
(`librosa.feature.delta`, width 9). This module computes the same values as jittable, differentiable
functions of a batch of waveforms, so the whole PiczakCNN (front end included) is one compiled function
and mixing strategies can act on the waveform before it. Defaults follow librosa of Piczak's time:
centred frames with reflect padding, periodic Hann window, Slaney mel scale and Slaney (area)
normalisation of the filters.

The filterbank is a numpy constant built at trace time (no jnp randomness, no state).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ['hz_to_mel', 'mel_to_hz', 'mel_filterbank', 'hann_window', 'num_frames', 'frames',
           'power_spectrogram', 'power_to_db', 'log_mel_spectrogram', 'delta', 'log_mel_with_delta']

# Slaney's mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above.
_F_SP = 200.0 / 3
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel(hz):
  """Slaney mel scale. hz: array-like (Hz) -> mels (float64 numpy)."""
  hz = np.asarray(hz, np.float64)
  linear = hz / _F_SP
  log = _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
  return np.where(hz >= _MIN_LOG_HZ, log, linear)


def mel_to_hz(mels):
  """Inverse of `hz_to_mel`. mels -> Hz (float64 numpy)."""
  mels = np.asarray(mels, np.float64)
  linear = mels * _F_SP
  log = _MIN_LOG_HZ * np.exp(_LOGSTEP * (np.maximum(mels, _MIN_LOG_MEL) - _MIN_LOG_MEL))
  return np.where(mels >= _MIN_LOG_MEL, log, linear)


@functools.lru_cache(maxsize=16)
def _mel_filterbank(sample_rate: float, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
  bins = np.arange(n_fft // 2 + 1) * (sample_rate / n_fft)               # (F,) Hz
  edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))  # (n_mels + 2,) Hz
  lo, centre, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
  rising = (bins[None] - lo) / (centre - lo)
  falling = (hi - bins[None]) / (hi - centre)
  weights = np.maximum(0.0, np.minimum(rising, falling))                 # (n_mels, F), peak 1
  weights *= 2.0 / (hi - lo)                                             # unit area (Slaney norm)
  out = weights.T.astype(np.float32)
  out.setflags(write=False)
  return out


def mel_filterbank(sample_rate: float, n_fft: int, n_mels: int, fmin: float = 0.0,
                   fmax: float | None = None) -> np.ndarray:
  """Triangular mel filters, (n_fft // 2 + 1, n_mels) float32 numpy (read-only).

  Column m maps power-spectrum bins (bin b at b * sample_rate / n_fft Hz) to mel band m: triangles
  between n_mels + 2 edges equally spaced on the Slaney mel scale from fmin to fmax (default
  sample_rate / 2), each scaled to unit area in Hz (2 / (upper edge - lower edge)). Equals
  `librosa.filters.mel(sr=..., n_fft=..., n_mels=..., htk=False, norm='slaney').T`.
  """
  fmax = sample_rate / 2.0 if fmax is None else fmax
  if not 0 <= fmin < fmax <= sample_rate / 2.0:
    raise ValueError(f'melspec: need 0 <= fmin < fmax <= sample_rate / 2, got fmin={fmin}, '
                     f'fmax={fmax}, sample_rate={sample_rate}')
  return _mel_filterbank(float(sample_rate), int(n_fft), int(n_mels), float(fmin), float(fmax))


def hann_window(n: int) -> np.ndarray:
  """Periodic Hann window (n,) float32: 0.5 - 0.5 cos(2 pi i / n) (scipy `get_window('hann')`)."""
  return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)).astype(np.float32)


def num_frames(length: int, n_fft: int = 1024, hop_length: int = 512, center: bool = True) -> int:
  """Number of frames of a `length`-sample signal (librosa's count)."""
  if center:
    return 1 + length // hop_length
  if length < n_fft:
    raise ValueError(f'melspec: a {length}-sample signal is shorter than one {n_fft}-sample frame')
  return 1 + (length - n_fft) // hop_length


def frames(x: jax.Array, n_fft: int = 1024, hop_length: int = 512, center: bool = True,
           pad_mode: str = 'reflect') -> jax.Array:
  """Overlapping frames of x (N, T): (N, num_frames, n_fft).

  center: pad n_fft // 2 samples on both sides first (`pad_mode` 'reflect' or 'constant' = zeros),
  so frame t is centred on sample t * hop_length.
  """
  if pad_mode not in ('reflect', 'constant'):
    raise ValueError(f"melspec: pad_mode must be 'reflect' or 'constant', got {pad_mode!r}")
  n = num_frames(x.shape[-1], n_fft, hop_length, center)
  if center:
    x = jnp.pad(x, ((0, 0), (n_fft // 2, n_fft // 2)), mode=pad_mode)
  index = np.arange(n)[:, None] * hop_length + np.arange(n_fft)[None, :]
  return x[:, index]


def power_spectrogram(x: jax.Array, n_fft: int = 1024, hop_length: int = 512, center: bool = True,
                      pad_mode: str = 'reflect') -> jax.Array:
  """|STFT|^2 with a periodic Hann window: x (N, T) -> (N, num_frames, n_fft // 2 + 1)."""
  spec = jnp.fft.rfft(frames(x, n_fft, hop_length, center, pad_mode) * hann_window(n_fft), axis=-1)
  return jnp.real(spec) ** 2 + jnp.imag(spec) ** 2


def power_to_db(s: jax.Array, amin: float = 1e-10, top_db: float | None = 80.0) -> jax.Array:
  """10 log10(max(s, amin)) (dB re 1.0), floored at (max over each example) - top_db.

  s: (N, ...) non-negative. The max is taken per example (over all axes but the first), as librosa
  does per clip.
  """
  db = 10.0 * jnp.log10(jnp.maximum(s, amin))
  if top_db is not None:
    peak = jnp.max(db.reshape(db.shape[0], -1), axis=1).reshape((-1,) + (1,) * (db.ndim - 1))
    db = jnp.maximum(db, peak - top_db)
  return db


def log_mel_spectrogram(x: jax.Array, sample_rate: float, n_fft: int = 1024, hop_length: int = 512,
                        n_mels: int = 60, center: bool = True, pad_mode: str = 'reflect',
                        amin: float = 1e-10, top_db: float | None = 80.0) -> jax.Array:
  """Log-mel spectrogram in dB: x (N, T) at `sample_rate` Hz -> (N, num_frames, n_mels)."""
  power = power_spectrogram(x, n_fft, hop_length, center, pad_mode)
  mel = jnp.matmul(power, mel_filterbank(sample_rate, n_fft, n_mels),
                   precision=jax.lax.Precision.HIGHEST)
  return power_to_db(mel, amin, top_db)


def delta(features: jax.Array, width: int = 9, axis: int = -2) -> jax.Array:
  """First-order deltas along `axis` (frames), as `librosa.feature.delta(order=1, mode='interp')`.

  Interior frames: the least-squares slope over `width` frames, sum_k k x[t+k] / sum_k k^2 for
  k = -(width//2) .. width//2. The first and last width//2 frames take the slope of the first and
  last full window (a straight-line fit over the edge window has one slope: Savitzky-Golay 'interp').
  Needs at least `width` frames; width odd >= 3.
  """
  if width < 3 or width % 2 == 0:
    raise ValueError(f'melspec: delta width must be odd and >= 3, got {width}')
  x = jnp.moveaxis(features, axis, -1)
  t = x.shape[-1]
  if t < width:
    raise ValueError(f'melspec: delta over {t} frames needs at least width={width} frames')
  half = width // 2
  norm = 2.0 * sum(k * k for k in range(1, half + 1))
  inner = sum(k * (x[..., half + k:t - half + k] - x[..., half - k:t - half - k])
              for k in range(1, half + 1)) / norm                     # (..., t - 2 half)
  d = jnp.concatenate([jnp.repeat(inner[..., :1], half, axis=-1), inner,
                       jnp.repeat(inner[..., -1:], half, axis=-1)], axis=-1)
  return jnp.moveaxis(d, -1, axis)


def log_mel_with_delta(x: jax.Array, sample_rate: float, n_fft: int = 1024, hop_length: int = 512,
                       n_mels: int = 60, delta_width: int = 9, **kwargs) -> jax.Array:
  """Piczak's input: x (N, T) -> (N, n_mels, num_frames, 2) float32, channels (log-mel dB, delta).

  Laid out NHWC for a 2-D convolution: height = mel band (low to high), width = frame. Always
  computed in float32 (x is cast), whatever the model's compute precision: the dB values are logs
  of powers summed over 1024-sample frames, and the 80 dB floor is relative to the clip's maximum;
  the first convolution rounds the features to its compute dtype.
  """
  x = jnp.asarray(x, jnp.float32)
  logmel = log_mel_spectrogram(x, sample_rate, n_fft, hop_length, n_mels, **kwargs)  # (N, F, M)
  logmel = jnp.swapaxes(logmel, 1, 2)                                               # (N, M, F)
  return jnp.stack([logmel, delta(logmel, delta_width, axis=-1)], axis=-1)
