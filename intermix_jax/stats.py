"""Paired statistics of two classifiers on the same test clips: McNemar's exact test and a paired
bootstrap interval of the error difference (the report's `paired_comparisons`).

A "correct" array is boolean, one entry per test clip, clips in the same order for the two
methods. Errors are in percent (0-100).
"""
from __future__ import annotations

import math

import numpy as np

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95
# Elements of one block of resampled indices (int64, about 32 MB), whatever the number of clips.
_BLOCK_ELEMENTS = 4_000_000


def _as_correct(x, name: str) -> np.ndarray:
  a = np.asarray(x)
  if a.dtype != bool:
    if not np.all((a == 0) | (a == 1)):
      raise ValueError(f'stats: {name} must hold booleans (or 0/1), one per clip')
    a = a.astype(bool)
  return a


def error_percent(correct) -> float:
  """Error % of boolean `correct` (any shape): 100 * (1 - mean). NaN for an empty array."""
  a = _as_correct(correct, 'correct')
  return float('nan') if a.size == 0 else float(100.0 * (1.0 - a.mean()))


def mcnemar_counts(correct_ref, correct_new) -> tuple[int, int]:
  """Discordant clip counts (b, c) of a reference method (e.g. standard training) and a compared
  one, each a bool (n,) "correct" array: b = clips the reference got right and the compared
  method wrong, c = the reverse."""
  ref, new = _as_correct(correct_ref, 'correct_ref'), _as_correct(correct_new, 'correct_new')
  if ref.shape != new.shape or ref.ndim != 1:
    raise ValueError(f'stats: correct_ref {ref.shape} and correct_new {new.shape} must be the '
                     'same (n,) clips')
  return int(np.sum(ref & ~new)), int(np.sum(~ref & new))


def mcnemar_exact(b: int, c: int) -> float:
  """The two-sided p-value of McNemar's exact test of b vs c discordant clips (`mcnemar_counts`,
  each >= 0): min(1, 2 * P[X <= min(b, c)]), X ~ Binomial(b + c, 1/2), in exact integers (1 when
  b + c = 0)."""
  b, c = int(b), int(c)
  if b < 0 or c < 0:
    raise ValueError(f'stats: McNemar counts must be >= 0, got b={b}, c={c}')
  n = b + c
  if n == 0:
    return 1.0
  tail = sum(math.comb(n, k) for k in range(min(b, c) + 1))
  return min(1.0, 2 * tail / 2 ** n)  # int / int: exact, then correctly rounded


def paired_bootstrap(correct_ref, correct_new, num_resamples: int = BOOTSTRAP_RESAMPLES,
                     seed: int = BOOTSTRAP_SEED, confidence: float = CONFIDENCE) -> dict:
  """Paired bootstrap interval of error(new) - error(ref): each resample draws n clips with
  replacement (the same for both methods); the interval is the central `confidence` percentiles.

  Args:
    correct_ref: bool (n,) or (k, n): the reference method got clip i right; (k, n) for k repeated
      runs (seeds) on the same n clips, whose differences are averaged over the k runs (a clip and
      all its runs are resampled together).
    correct_new: bool, the same shape: the compared method.
    num_resamples, seed, confidence: the resamples, the numpy Generator's seed (the same inputs
      and seed give the same interval) and the interval's coverage, in (0, 1).

  Returns:
    dict with diff (error(new) - error(ref) on all clips, percentage points), low and high (the
    interval, percentage points), n (clips), num_resamples, seed, confidence.
  """
  ref, new = _as_correct(correct_ref, 'correct_ref'), _as_correct(correct_new, 'correct_new')
  if ref.shape != new.shape or ref.ndim not in (1, 2) or ref.shape[-1] == 0:
    raise ValueError(f'stats: correct_ref {ref.shape} and correct_new {new.shape} must be the '
                     'same non-empty (n,) or (k, n) clips')
  if not 0 < confidence < 1 or num_resamples < 1:
    raise ValueError(f'stats: need 0 < confidence < 1 and num_resamples >= 1, got {confidence}, '
                     f'{num_resamples}')
  # Per clip, averaged over runs: its share of error(new) - error(ref).
  d = 100.0 * (ref.astype(np.float64) - new.astype(np.float64))
  d = d.reshape(-1, d.shape[-1]).mean(0)
  n = d.shape[0]
  rng = np.random.default_rng(seed)
  block = max(1, _BLOCK_ELEMENTS // n)
  resampled = np.empty(num_resamples, np.float64)
  for start in range(0, num_resamples, block):
    rows = min(block, num_resamples - start)
    resampled[start:start + rows] = d[rng.integers(0, n, size=(rows, n))].mean(1)
  alpha = 100.0 * (1.0 - confidence) / 2.0
  low, high = np.percentile(resampled, [alpha, 100.0 - alpha])
  return dict(diff=float(d.mean()), low=float(low), high=float(high), n=int(n),
              num_resamples=int(num_resamples), seed=int(seed), confidence=float(confidence))
