"""Signal-level laws of the mixing strategies (docs/method.md §2 and §3 step 1), in jnp, jittable.

- `frame_length(fs)`: the A-weighting frame size for a sample rate (Python int, static).
- `a_weighting(fs, n_fft)`: the A-curve in dB per rfft bin (float64 numpy, a trace-time constant).
- `a_weighted_gain(x, fs)`: the A-weighted level of a signal in dB (BC learning's G).
- `phase_shift(x, phi)`: rotation of every rfft bin of a real signal by e^{i phi}.

Every function takes arrays with any leading (batch) axes; time is the last axis, in samples.
`fs` is always a static Python number in Hz.
"""
import math
from typing import Tuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ['frame_length', 'a_weighting', 'a_weighted_gain', 'phase_shift', 'MIN_DB']

# docs/method.md §2: the A-curve and the per-frame power are floored at -80 dB.
MIN_DB = -80.0
# Frame length in seconds used to pick n_fft for rates other than 16 kHz and 44.1 kHz.
_FRAME_SECONDS = 0.093


def frame_length(fs: float) -> int:
  """The A-weighting frame size n_fft (samples) for sample rate `fs` (Hz), docs/method.md §2.

  2048 at 16 kHz and 4096 at 44.1 kHz (BC learning's values); any other rate gets the power of two
  nearest (on a log scale) to 0.093 s, which also reproduces both published values. At least 2.
  """
  if isinstance(fs, bool) or not isinstance(fs, (int, float, np.integer, np.floating)) or not fs > 0:
    raise ValueError(f'audio: the sample rate fs must be a positive Python number in Hz, got {fs!r}')
  if fs == 16000:
    return 2048
  if fs == 44100:
    return 4096
  return max(2, 2 ** int(round(math.log2(_FRAME_SECONDS * float(fs)))))


def a_weighting(fs: float, n_fft: int, min_db: float = MIN_DB) -> np.ndarray:
  """A-weighting curve A(f) in dB at the n_fft // 2 + 1 rfft bin frequencies k * fs / n_fft.

  docs/method.md §2: A(f) = 2.0 + 20 (2 log10 12194 + 2 log10 f^2 - log10(f^2 + 12194^2)
  - log10(f^2 + 20.6^2) - 0.5 log10(f^2 + 107.7^2) - 0.5 log10(f^2 + 737.9^2)), f^2 at DC set to
  1, floored at `min_db`.
  Returns a float64 numpy array of shape (n_fft // 2 + 1,) (computed once at trace time).
  """
  freq = np.arange(n_fft // 2 + 1, dtype=np.float64) * (float(fs) / n_fft)
  f2 = freq ** 2
  f2[0] = 1.0
  weight = 2.0 + 20.0 * (2 * np.log10(12194.0) + 2 * np.log10(f2)
                         - np.log10(f2 + 12194.0 ** 2)
                         - np.log10(f2 + 20.6 ** 2)
                         - 0.5 * np.log10(f2 + 107.7 ** 2)
                         - 0.5 * np.log10(f2 + 737.9 ** 2))
  return np.maximum(weight, min_db)


def _frame_sets(x: jax.Array, n_fft: int) -> Tuple[jax.Array, ...]:
  """(..., T) -> the full frames (hop n_fft / 2) as one or two arrays (..., F_k, n_fft).

  Even-numbered frames tile x from sample 0 and odd-numbered ones from sample n_fft / 2, so each
  set is a plain reshape of a slice (no gather, no overlapping copy): together they are exactly
  the frames at 0, hop, 2 hop, ... that fit in T. Inputs shorter than one frame are zero-padded at
  the end to exactly one frame.
  """
  t = x.shape[-1]
  if t < n_fft:
    x = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, n_fft - t)])
    t = n_fft
  hop = n_fft // 2
  n_frames = (t - n_fft) // hop + 1
  sets = []
  for offset, count in ((0, (n_frames + 1) // 2), (hop, n_frames // 2)):
    if count:
      sets.append(x[..., offset:offset + count * n_fft].reshape(x.shape[:-1] + (count, n_fft)))
  return tuple(sets)


def a_weighted_gain(x: jax.Array, fs: float, min_db: float = MIN_DB) -> jax.Array:
  """A-weighted level of `x` in dB (BC's G, docs/method.md §2): max over frames, floored at min_db.

  Args:
    x: (..., T) real signal (any scale; the project feeds waveforms normalised by 32768, or a
      flattened hidden tensor read "as if a signal at rate fs"). T < n_fft is zero-padded at the
      end to one frame of n_fft samples, so every input has at least one frame.
    fs: sample rate in Hz (static Python number); picks n_fft with `frame_length(fs)`.
    min_db: floor in dB for the A-curve and for each frame's power (silence gives exactly min_db).

  Returns:
    (...) float32 level in dB, >= min_db; never -inf or NaN for finite input.

  Each frame of n_fft samples (hop n_fft / 2, full frames only) is multiplied by a periodic Hann
  window; its power spectrum |rfft|^2 is weighted by 10^(A(f)/10) and summed over bins. Before the
  FFT each signal is scaled by an exact power of two (from its peak), and the exponent is added back
  in dB, so |x| up to float32's range neither overflows nor underflows in the power.
  """
  n_fft = frame_length(fs)
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    x = x.astype(jnp.float32)
  if x.ndim < 1:
    raise ValueError(f'audio.a_weighted_gain: x must have a time axis (..., T), got shape {x.shape}')
  # Exact power-of-two normalisation: x = x_scaled * 2^e with |x_scaled| < 1.
  peak = jax.lax.stop_gradient(jnp.max(jnp.abs(x), axis=-1, keepdims=True))
  _, exponent = jnp.frexp(peak)
  x_scaled = x * jnp.ldexp(jnp.ones((), x.dtype), -exponent)
  n = np.arange(n_fft)
  window = jnp.asarray(0.5 - 0.5 * np.cos(2 * np.pi * n / n_fft), x.dtype)  # periodic Hann
  weights = jnp.asarray(10.0 ** (a_weighting(fs, n_fft, min_db) / 10.0), x.dtype)
  peak_power = None
  for frames in _frame_sets(x_scaled, n_fft):
    spec = jnp.fft.rfft(frames * window, axis=-1)
    frame_power = (jnp.real(spec) ** 2 + jnp.imag(spec) ** 2) @ weights  # (..., F_k)
    # max over frames commutes with the monotone dB map: take it on the power
    set_peak = jnp.max(frame_power, axis=-1)
    peak_power = set_peak if peak_power is None else jnp.maximum(peak_power, set_peak)
  tiny = jnp.finfo(peak_power.dtype).tiny
  db = (10.0 * jnp.log10(jnp.maximum(peak_power, tiny))
        + (20.0 * math.log10(2.0)) * exponent[..., 0].astype(peak_power.dtype))
  return jnp.maximum(db, min_db)


def phase_shift(x: jax.Array, phi: jax.Array) -> jax.Array:
  """Rotate every rfft bin of `x` by e^{i phi} (docs/method.md §3 step 1).

  Computes irfft(rfft(x) * e^{i phi}, n=T).

  Args:
    x: (..., T) real signal; any T (odd T keeps its length).
    phi: (...) phase in radians, one per signal (broadcast against x.shape[:-1]).

  Returns:
    (..., T) real signal, x.dtype. Equals cos(phi) x - sin(phi) H(x) with H the Hilbert
    transform. The DC bin (and the Nyquist bin for even T) have no quadrature partner and are
    scaled by cos(phi); every other component keeps its energy, so the energy of a signal without
    DC / Nyquist content is preserved exactly.
  """
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    x = x.astype(jnp.float32)
  t = x.shape[-1]
  phi = jnp.asarray(phi, x.dtype)
  rotation = jax.lax.complex(jnp.cos(phi), jnp.sin(phi))[..., None]
  spec = jnp.fft.rfft(x, axis=-1)
  return jnp.fft.irfft(spec * rotation, n=t, axis=-1).astype(x.dtype)
