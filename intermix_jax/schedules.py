"""Epoch counts and the piecewise-constant learning-rate schedule of docs/method.md §5 (the
reference code's rule, as an optax schedule of the 0-based optimiser step; constant per epoch).
"""
from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np
import optax


def total_epochs(num_epochs: int, mixes: bool, double_for_mixing: bool = True) -> int:
  """Epochs actually trained: `num_epochs`, doubled for mixing strategies (docs/method.md §5)."""
  return int(num_epochs) * (2 if (mixes and double_for_mixing) else 1)


def lr_schedule(base_lr: float, num_epochs: int, steps_per_epoch: int,
                schedule: Sequence[float], warmup_epochs: int) -> optax.Schedule:
  """Step -> learning rate (float32 scalar): at 1-based epoch e of N, LR0 * 0.1 ** #{f in schedule :
  e > N * f}, or LR0 * 0.1 during the warm-up.

  Args:
    base_lr: LR0.
    num_epochs: N, the epochs actually trained (already doubled for mixing; the fractions scale).
    steps_per_epoch: optimiser steps per epoch (> 0).
    schedule: fractions of N after which the LR is multiplied by 0.1.
    warmup_epochs: the first `warmup_epochs` epochs run at LR0 * 0.1 (not scaled by mixing).
  """
  if steps_per_epoch <= 0:
    raise ValueError(f'steps_per_epoch must be > 0, got {steps_per_epoch}')
  points = jnp.asarray(_decay_points(num_epochs, schedule), jnp.float32)

  def fn(step):
    epoch = (jnp.asarray(step, jnp.int32) // steps_per_epoch + 1).astype(jnp.float32)  # 1-based
    decay = jnp.sum(epoch > points).astype(jnp.float32)
    decay = jnp.where(epoch <= warmup_epochs, 1.0, decay)
    return jnp.asarray(base_lr, jnp.float32) * jnp.power(jnp.float32(0.1), decay)

  return fn


def _decay_points(num_epochs: int, schedule: Sequence[float]) -> np.ndarray:
  """The float32 epochs after which the LR is multiplied by 0.1 (inf: never), as `lr_schedule`
  has them."""
  return np.asarray([num_epochs * f for f in schedule] or [float('inf')], np.float32)


def epochs_at_base_lr(num_epochs: int, schedule: Sequence[float], warmup_epochs: int) -> int:
  """How many of the `num_epochs` epochs (`lr_schedule`'s N) `lr_schedule` runs at LR0 itself:
  after the warm-up and before the first decay (0, e.g., when warmup_epochs >= num_epochs)."""
  points = _decay_points(num_epochs, schedule)
  return sum(1 for e in range(int(warmup_epochs) + 1, int(num_epochs) + 1)
             if not np.any(np.float32(e) > points))
