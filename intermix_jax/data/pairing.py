"""Pairs of sounds of different classes for mixing strategies (SPEC §3, docs/architecture.md).

A mixing batch has rows (2k, 2k+1) of different classes. The epoch's shuffled order is repaired
deterministically by swaps, so it stays a permutation: every clip still appears exactly once.
"""
import numpy as np


def pair_different_classes(order: np.ndarray, labels: np.ndarray, num_used: int) -> np.ndarray:
  """Reorders `order` so that positions (2k, 2k+1) < num_used hold examples of different labels.

  Walks the pairs in order; a same-class pair swaps its second element with the first later
  element (anywhere in `order`, including the unused tail) of another class, or, failing that,
  with the first element of an earlier pair whose two classes both differ (both pairs stay valid).
  Pairs that are already valid are only touched by such swaps when needed.

  Args:
    order: int (N,), a permutation of example indices (e.g. the epoch's shuffle).
    labels: int (num_examples,), label of each example index.
    num_used: how many leading positions form pairs (e.g. steps * batch size); even, <= N.

  Returns:
    int (N,), a permutation of the same indices with every used pair of two classes.

  Raises:
    ValueError: if no such arrangement is reachable (one class holds most of the clips).
  """
  order = np.array(order, copy=True)
  if num_used % 2 or num_used > order.shape[0]:
    raise ValueError(f'num_used={num_used} must be even and <= {order.shape[0]}')
  lab = np.asarray(labels)[order]
  for k in range(num_used // 2):
    a, b = 2 * k, 2 * k + 1
    if lab[a] != lab[b]:
      continue
    later = np.flatnonzero(lab[b + 1:] != lab[a])
    if later.size:
      j = b + 1 + later[0]
    else:
      first, second = lab[0:a:2], lab[1:a:2]
      earlier = np.flatnonzero((first != lab[a]) & (second != lab[a]))
      if not earlier.size:
        counts = np.bincount(lab[:num_used])
        raise ValueError(
            f'cannot form {num_used // 2} pairs of different classes: class {int(lab[a])} has '
            f'{int(counts[lab[a]])} of the {num_used} clips used per epoch (label counts '
            f'{counts.tolist()}); mixing needs every class to be at most half of them')
      j = 2 * earlier[0]
    order[[b, j]] = order[[j, b]]
    lab[[b, j]] = lab[[j, b]]
  return order
