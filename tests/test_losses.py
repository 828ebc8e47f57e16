"""Tests of intermix_jax.losses against float64 numpy references."""
import chex
import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special

from intermix_jax import losses

_kl = jax.jit(losses.kl_divergence)
_ce = jax.jit(losses.cross_entropy)


def _random_targets(rng, n, c, zeros=True):
  t = rng.random((n, c))
  if zeros:
    t[rng.random((n, c)) < 0.4] = 0.0
    t[:, 0] += 1e-3  # keep every row normalisable
  return t / t.sum(-1, keepdims=True)


@hypothesis.settings(max_examples=25, deadline=None)
@hypothesis.given(seed=st.integers(0, 2 ** 31))
def test_kl_matches_numpy_reference_and_is_non_negative(seed):
  rng = np.random.default_rng(seed)
  logits = 3 * rng.standard_normal((6, 5))
  targets = _random_targets(rng, 6, 5)
  log_q = scipy.special.log_softmax(logits, axis=-1)
  want = np.mean(np.sum(scipy.special.rel_entr(targets, np.exp(log_q)), axis=-1))
  got = float(_kl(jnp.asarray(logits, jnp.float32), jnp.asarray(targets, jnp.float32)))
  assert got >= -1e-6
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_kl_of_a_target_with_itself_is_zero():
  targets = _random_targets(np.random.default_rng(0), 8, 10)
  logits = np.log(np.where(targets > 0, targets, 1e-30))  # softmax(logits) == targets
  assert abs(float(_kl(jnp.asarray(logits, jnp.float32), jnp.asarray(targets, jnp.float32)))) < 1e-6


def test_kl_equals_cross_entropy_for_one_hot():
  rng = np.random.default_rng(1)
  logits = jnp.asarray(rng.standard_normal((7, 4)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 4, 7))
  onehot = jax.nn.one_hot(labels, 4)
  np.testing.assert_allclose(float(_kl(logits, onehot)), float(_ce(logits, onehot)), rtol=1e-6)
  np.testing.assert_allclose(float(_ce(logits, labels)), float(_ce(logits, onehot)), rtol=1e-6)
  want = -np.mean(scipy.special.log_softmax(np.asarray(logits, np.float64), -1)[np.arange(7), labels])
  np.testing.assert_allclose(float(_ce(logits, labels)), want, rtol=1e-5)


def test_kl_gradients_are_finite_with_zero_targets():
  targets = jnp.asarray([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
  logits = jnp.asarray([[100.0, -100.0, 0.0], [0.0, 1.0, 2.0]])
  g_logits, g_targets = jax.jit(jax.grad(losses.kl_divergence, argnums=(0, 1)))(logits, targets)
  assert np.isfinite(np.asarray(g_logits)).all() and np.isfinite(np.asarray(g_targets)).all()
  # d KL / d logits = (softmax(logits) - targets) / N
  chex.assert_trees_all_close(g_logits, (jax.nn.softmax(logits) - targets) / 2, atol=1e-6)


def test_mean_over_batch_and_mask():
  rng = np.random.default_rng(2)
  logits = jnp.asarray(rng.standard_normal((6, 3)), jnp.float32)
  targets = jnp.asarray(_random_targets(rng, 6, 3, zeros=False), jnp.float32)
  per_row = np.array([float(_kl(logits[i:i + 1], targets[i:i + 1])) for i in range(6)])
  np.testing.assert_allclose(float(_kl(logits, targets)), per_row.mean(), rtol=1e-5)
  mask = jnp.asarray([True, False, True, True, False, False])
  np.testing.assert_allclose(float(losses.kl_divergence(logits, targets, mask)),
                             per_row[[0, 2, 3]].mean(), rtol=1e-5)
  np.testing.assert_allclose(float(losses.cross_entropy(logits, targets, mask)),
                             float(_ce(logits[mask], targets[mask])), rtol=1e-5)


def test_shape_errors_are_clear():
  with pytest.raises(ValueError, match='kl_divergence'):
    losses.kl_divergence(jnp.zeros((4, 3)), jnp.zeros((4, 2)))
  with pytest.raises(ValueError, match='cross_entropy'):
    losses.cross_entropy(jnp.zeros((4, 3)), jnp.zeros((3,), jnp.int32))
