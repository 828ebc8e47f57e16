"""intermix_jax.stats: McNemar's exact test and the paired bootstrap against hand-computed cases."""
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from intermix_jax import stats


@pytest.mark.parametrize('b, c, p', [
    (0, 0, 1.0),                       # no discordant clip
    (0, 5, 0.0625),                    # 2 * 1/32
    (5, 0, 0.0625),                    # symmetric in b and c
    (1, 9, 2 * (1 + 10) / 1024),       # 2 * (C(10,0) + C(10,1)) / 2^10 = 0.021484375
    (2, 5, 2 * (1 + 7 + 21) / 128),    # 0.453125
    (3, 3, 1.0),                       # 2 * 42/64 > 1: capped at 1
    (0, 1, 1.0),                       # 2 * 1/2
])
def test_mcnemar_exact_hand_computed(b, c, p):
  assert stats.mcnemar_exact(b, c) == p


def test_mcnemar_exact_matches_scipy_binomtest():
  for b in range(0, 30, 3):
    for c in range(0, 60, 7):
      if b + c:
        want = scipy_stats.binomtest(min(b, c), b + c, 0.5).pvalue
        assert math.isclose(stats.mcnemar_exact(b, c), min(1.0, want), rel_tol=1e-9), (b, c)
  # Large counts stay exact (no float overflow of 2^n): 4000 vs 4100 discordant clips.
  assert math.isclose(stats.mcnemar_exact(4000, 4100),
                      scipy_stats.binomtest(4000, 8100, 0.5).pvalue, rel_tol=1e-6)
  with pytest.raises(ValueError, match='>= 0'):
    stats.mcnemar_exact(-1, 3)


def test_mcnemar_counts_and_error_percent():
  ref = np.array([1, 1, 1, 0, 0, 1], bool)
  new = np.array([1, 0, 0, 1, 0, 1], bool)
  assert stats.mcnemar_counts(ref, new) == (2, 1)  # clips 1, 2 vs clip 3
  assert stats.mcnemar_counts([1, 0, 1], [1, 0, 1]) == (0, 0)
  assert stats.error_percent(ref) == pytest.approx(100 * 2 / 6)
  assert stats.error_percent(new) == 50.0
  with pytest.raises(ValueError, match='same'):
    stats.mcnemar_counts(ref, new[:5])
  with pytest.raises(ValueError, match='booleans'):
    stats.mcnemar_counts([0, 2], [1, 1])


def test_bootstrap_identical_predictions_give_a_zero_interval():
  rng = np.random.default_rng(3)
  ok = rng.random(400) < 0.87
  r = stats.paired_bootstrap(ok, ok)
  assert (r['diff'], r['low'], r['high']) == (0.0, 0.0, 0.0)
  assert (r['n'], r['num_resamples'], r['seed'], r['confidence']) == (400, 10_000, 0, 0.95)


@pytest.mark.parametrize('ref_right', [True, False])
def test_bootstrap_every_clip_differing_the_same_way_is_degenerate(ref_right):
  """Standard right and the method wrong on every clip: +100 pp in every resample (and reverse)."""
  ref = np.full(37, ref_right)
  r = stats.paired_bootstrap(ref, ~ref, num_resamples=500)
  want = 100.0 if ref_right else -100.0
  assert (r['diff'], r['low'], r['high']) == (want, want, want)
  # With concordant clips too: one discordant clip (the method right) of 4 = -25 pp exactly; no
  # resample can be worse for the method than 0 or better than -100.
  r = stats.paired_bootstrap([1, 1, 0, 0], [1, 1, 1, 0])
  assert r['diff'] == -25.0 and -100.0 <= r['low'] <= r['diff'] <= r['high'] <= 0.0


def test_bootstrap_point_estimate_is_the_error_difference():
  ref = np.array([1, 1, 0, 0, 1, 1, 1, 0], bool)   # error 37.5 %
  new = np.array([1, 0, 1, 1, 1, 1, 1, 1], bool)   # error 12.5 %
  r = stats.paired_bootstrap(ref, new)
  assert r['diff'] == pytest.approx(stats.error_percent(new) - stats.error_percent(ref)) == -25.0
  assert r['low'] <= r['diff'] <= r['high']


def test_bootstrap_is_deterministic_and_seeded():
  rng = np.random.default_rng(0)
  ref, new = rng.random(300) < 0.85, rng.random(300) < 0.9
  a = stats.paired_bootstrap(ref, new)
  assert a == stats.paired_bootstrap(ref, new)
  assert a == stats.paired_bootstrap(ref.astype(int), new.astype(np.float32))  # 0/1 inputs
  # The seed matters (few resamples: the percentiles fall between the 1/300 grid points).
  a, c = (stats.paired_bootstrap(ref, new, num_resamples=99, seed=s) for s in (0, 1))
  assert c['diff'] == a['diff'] and (c['low'], c['high']) != (a['low'], a['high'])


def test_bootstrap_interval_contains_the_estimate_and_shrinks_like_one_over_sqrt_n():
  # 400 clips: 20 only standard right (b), 40 only the method right (c), 340 concordant.
  ref = np.array([True] * 20 + [False] * 40 + [True] * 300 + [False] * 40)
  new = np.array([False] * 20 + [True] * 40 + [True] * 300 + [False] * 40)
  small = stats.paired_bootstrap(ref, new)
  large = stats.paired_bootstrap(np.tile(ref, 4), np.tile(new, 4))
  for r in (small, large):
    assert r['diff'] == pytest.approx(100 * (20 - 40) / 400)
    assert r['low'] < r['diff'] < r['high']
  # Normal approximation of the interval: diff +- 1.96 * sqrt(var(d_i) / n).
  d = 100.0 * (ref.astype(float) - new.astype(float))
  se = d.std() / math.sqrt(len(d))
  assert small['high'] - small['low'] == pytest.approx(2 * 1.96 * se, rel=0.1)
  ratio = (small['high'] - small['low']) / (large['high'] - large['low'])
  assert 1.8 < ratio < 2.2  # 4x the clips: half the width


def test_bootstrap_over_repeated_runs_resamples_clips_with_all_their_runs():
  rng = np.random.default_rng(5)
  ref, new = rng.random(200) < 0.8, rng.random(200) < 0.9
  once = stats.paired_bootstrap(ref, new)
  # The same run twice (k=2): the same clips are drawn, so the same interval.
  assert stats.paired_bootstrap(np.stack([ref, ref]), np.stack([new, new])) == once
  # Two different runs: the point estimate is the mean of the runs' differences.
  ref2, new2 = rng.random(200) < 0.8, rng.random(200) < 0.9
  both = stats.paired_bootstrap(np.stack([ref, ref2]), np.stack([new, new2]))
  want = np.mean([stats.error_percent(new) - stats.error_percent(ref),
                  stats.error_percent(new2) - stats.error_percent(ref2)])
  assert both['diff'] == pytest.approx(want) and both['low'] <= both['diff'] <= both['high']
  with pytest.raises(ValueError, match='same non-empty'):
    stats.paired_bootstrap(np.stack([ref, ref]), new)
  with pytest.raises(ValueError, match='confidence'):
    stats.paired_bootstrap(ref, new, confidence=1.5)
