"""Classification losses on logits: KL divergence to soft targets (mixing) and cross-entropy.

Both reduce to a scalar: the mean over the batch rows (every axis but the last), optionally over
the rows where `mask` is True only (a padded final partial batch).
"""
from typing import Optional

import jax
import jax.numpy as jnp

__all__ = ['kl_divergence', 'cross_entropy']


def _batch_mean(per_row: jax.Array, mask: Optional[jax.Array]) -> jax.Array:
  """Mean of per-row values (...) over all rows, or over the rows where `mask` (...) is True."""
  if mask is None:
    return jnp.mean(per_row)
  mask = jnp.broadcast_to(jnp.asarray(mask, bool), per_row.shape)
  total = jnp.sum(jnp.where(mask, per_row, 0.0))
  return total / jnp.maximum(jnp.sum(mask), 1).astype(per_row.dtype)


def _check_shapes(fn: str, logits: jax.Array, targets: jax.Array) -> None:
  if logits.ndim < 1 or logits.shape != targets.shape:
    raise ValueError(f'losses.{fn}: logits {logits.shape} and targets {targets.shape} must both be '
                     '(..., C) with the same shape')


def kl_divergence(logits: jax.Array, targets: jax.Array,
                  mask: Optional[jax.Array] = None) -> jax.Array:
  """KL(targets || softmax(logits)), summed over classes, mean over the batch; 0 log 0 = 0.

  Args:
    logits: (..., C) unnormalised log-probabilities.
    targets: (..., C) probabilities (rows sum to 1; zeros allowed).
    mask: optional (...) bool, rows to average over (default: all rows).

  Returns:
    float32 scalar in nats, >= 0. Gradients are finite for targets with zeros (double where).
  """
  logits = jnp.asarray(logits)
  targets = jnp.asarray(targets, logits.dtype)
  _check_shapes('kl_divergence', logits, targets)
  positive = targets > 0
  safe_targets = jnp.where(positive, targets, 1.0)
  entropy_term = jnp.where(positive, targets * jnp.log(safe_targets), 0.0)  # t log t, 0 log 0 = 0
  per_row = jnp.sum(entropy_term - targets * jax.nn.log_softmax(logits, axis=-1), axis=-1)
  return _batch_mean(per_row, mask)


def cross_entropy(logits: jax.Array, targets: jax.Array,
                  mask: Optional[jax.Array] = None) -> jax.Array:
  """Softmax cross-entropy -sum_c t_c log softmax(logits)_c, mean over the batch.

  Args:
    logits: (..., C) unnormalised log-probabilities.
    targets: (..., C) probabilities (one-hot or soft), or (...) integer class labels.
    mask: optional (...) bool, rows to average over (default: all rows).

  Returns:
    float32 scalar in nats. For one-hot targets it equals `kl_divergence`.
  """
  logits = jnp.asarray(logits)
  targets = jnp.asarray(targets)
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  if jnp.issubdtype(targets.dtype, jnp.integer):
    if targets.shape != logits.shape[:-1]:
      raise ValueError(f'losses.cross_entropy: integer labels {targets.shape} must have the shape of '
                       f'logits {logits.shape} without its class axis')
    per_row = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
  else:
    targets = targets.astype(logits.dtype)
    _check_shapes('cross_entropy', logits, targets)
    per_row = -jnp.sum(targets * log_probs, axis=-1)
  return _batch_mean(per_row, mask)
