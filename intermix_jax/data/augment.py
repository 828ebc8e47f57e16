"""Host-side (numpy) preprocessing of docs/method.md §5: time scale, pad T/2, crops, /32768, gain.

Pure functions of the clips and explicitly passed random variates; windows are cut from the
unpadded clip and only the samples inside them are interpolated (O(T) per clip).

Conventions (the reference code, mil-tokyo/bc_learning_sound utils.py):
  time scale s: output length n' = max(1, int(n * s)); sample i = linear interpolation of the
    clip at position i / s (ref1 = floor, ref2 = min(ref1 + 1, n - 1)).
  padding: T // 2 zeros on both sides -> padded length L = n' + 2 (T // 2) (>= T).
  random crop: offset o = floor(u (L - T + 1)), u in [0, 1), window [o, o + T) of the padded clip.
  eval crops: stride = (L - T) // (n_crops - 1), offsets stride * k (one crop: centred).
  output = window / 32768 * gain.
"""
from typing import Sequence

import numpy as np

INT16_SCALE = 32768.0


def _window(row, clip, length_out, offset, scale, factor) -> None:
  """Writes samples [offset, offset + T) of the zero-padded (and time-scaled) clip * `factor`
  into the zero (T,) float32 `row`."""
  pad = row.shape[0] // 2
  dst0 = max(0, pad - offset)
  dst1 = min(row.shape[0], pad + length_out - offset)
  if dst1 <= dst0:
    return
  i0 = offset + dst0 - pad
  i1 = i0 + (dst1 - dst0)
  if scale is None:
    row[dst0:dst1] = clip[i0:i1].astype(np.float32) * factor
    return
  ref = np.arange(i0, i1, dtype=np.float64) / scale
  ref1 = ref.astype(np.int64)
  ref2 = np.minimum(ref1 + 1, clip.shape[0] - 1)
  r = (ref - ref1).astype(np.float32)
  lo = clip[ref1].astype(np.float32)
  row[dst0:dst1] = (lo + (clip[ref2].astype(np.float32) - lo) * r) * factor


def train_crops(clips: Sequence[np.ndarray], input_length: int, offsets_u: np.ndarray,
                scales: np.ndarray | None = None, gains: np.ndarray | None = None) -> np.ndarray:
  """One random crop per clip, normalised: the training input of docs/method.md §5.

  Args:
    clips: B int16 arrays (n_b,), n_b >= 1, int16 scale.
    input_length: T samples.
    offsets_u: float (B,) in [0, 1): crop position as a fraction (see module docstring).
    scales: float (B,) time-scale factors, or None for no time scaling.
    gains: float (B,) linear gains, or None for unit gain.

  Returns:
    float32 (B, T): crop / 32768 * gain.
  """
  t = int(input_length)
  out = np.zeros((len(clips), t), np.float32)
  n_out, offsets, factors = crop_geometry([c.shape[0] for c in clips], t, offsets_u, scales, gains)
  for b, clip in enumerate(clips):
    scale = None if scales is None else float(scales[b])
    _window(out[b], clip, int(n_out[b]), int(offsets[b]), scale, factors[b])
  return out


def crop_geometry(lengths, input_length: int, offsets_u: np.ndarray,
                  scales: np.ndarray | None = None, gains: np.ndarray | None = None):
  """Where each random crop lies (the rule of the module docstring, for `train_crops` and the
  on-device crops of data/on_device.py alike).

  Args: lengths: B clip lengths (samples); the rest as `train_crops`.
  Returns:
    n_out: int64 (B,) samples of the time-scaled clip; offsets: int64 (B,) crop offset into the
    padded (time-scaled) clip; factors: float32 (B,) gain / 32768.
  """
  t = int(input_length)
  lengths = np.asarray(lengths, np.int64)
  n_out = lengths if scales is None else np.maximum(
      1, (lengths * np.asarray(scales, np.float64)).astype(np.int64))
  slack = n_out + 2 * (t // 2) - t
  offsets = np.minimum((np.asarray(offsets_u, np.float64) * (slack + 1)).astype(np.int64), slack)
  gains = np.ones(lengths.shape[0]) if gains is None else np.asarray(gains, np.float64)
  return n_out, offsets, (gains / INT16_SCALE).astype(np.float32)


def eval_crops(clip: np.ndarray, input_length: int, num_crops: int) -> np.ndarray:
  """(num_crops, T) float32: evenly spaced crops of the padded clip / 32768 (docs/method.md §5)."""
  if num_crops < 1:
    raise ValueError(f'num_eval_crops must be >= 1, got {num_crops}')
  t = int(input_length)
  slack = clip.shape[0] + 2 * (t // 2) - t
  offsets = [slack // 2] if num_crops == 1 else (slack // (num_crops - 1)) * np.arange(num_crops)
  out = np.zeros((num_crops, t), np.float32)
  for k, offset in enumerate(offsets):
    _window(out[k], clip, clip.shape[0], int(offset), None, np.float32(1.0 / INT16_SCALE))
  return out
