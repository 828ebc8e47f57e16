"""Pairs of sounds of different classes for mixing strategies (docs/method.md §3): rows (2k, 2k+1)
of a mixing batch differ in class, by shared pairs (`pair_different_classes`: the epoch's shuffle
repaired by swaps) or independent pairs (`independent_pairs`: BC's reference code's draws).
"""
from typing import Sequence

import numpy as np

from intermix_jax.config_lib import ConfigError


def check_pairable(labels: np.ndarray, num_used: int, class_names: Sequence[str] | None = None,
                   batch_size: int | None = None) -> None:
  """Raises config_lib.ConfigError (one line, naming the class) unless every epoch can be paired:
  `pair_different_classes` fails exactly when the largest class holds more than N - num_used // 2
  of the N clips (one per pair, the rest in the unused tail), whatever the shuffle."""
  labels = np.asarray(labels)
  if not labels.size:
    return
  counts = np.bincount(labels)
  biggest = int(np.argmax(counts))
  limit = labels.shape[0] - num_used // 2
  if counts[biggest] <= limit:
    return
  name = (repr(str(class_names[biggest])) if class_names is not None and biggest < len(class_names)
          else str(biggest))
  used = (f'config.batch_size={batch_size} x {num_used // batch_size} steps = {num_used} clips used'
          if batch_size else f'{num_used} clips used')
  raise ConfigError(
      f'mixing strategies pair sounds of different classes, but class {name} holds '
      f'{int(counts[biggest])} of the {labels.shape[0]} training clips; with {used} per epoch a '
      f'class may hold at most {limit} (training clips - used / 2): add clips of other classes, '
      f'remove clips of {name}, or use config.strategy=standard (docs/own_data_and_models.md)')


def check_two_classes(labels: np.ndarray) -> None:
  """Raises config_lib.ConfigError (one line) unless the clips hold at least two classes (what
  independent pairs need: any class balance works)."""
  present = np.unique(np.asarray(labels))
  if present.size < 2:
    raise ConfigError(f'mixing strategies pair sounds of different classes, but the training clips '
                      f'hold {present.size} class(es); add clips of other classes, or use '
                      f'config.strategy=standard (docs/own_data_and_models.md)')


def independent_pairs(rng: np.random.Generator, labels: np.ndarray, num_pairs: int) -> np.ndarray:
  """int64 (2 num_pairs,): pairs (2k, 2k+1) of clip indices of different labels, each pair drawn
  independently: two uniform draws with replacement over all clips, both redrawn until the labels
  differ (as BC's reference code draws each mixture). Deterministic given `rng`'s state; needs at
  least two labels (`check_two_classes`)."""
  labels = np.asarray(labels)
  n = labels.shape[0]
  out = rng.integers(0, n, size=(num_pairs, 2))
  pending = np.flatnonzero(labels[out[:, 0]] == labels[out[:, 1]])
  while pending.size:
    out[pending] = rng.integers(0, n, size=(pending.size, 2))
    pending = pending[labels[out[pending, 0]] == labels[out[pending, 1]]]
  return out.reshape(-1).astype(np.int64)


def pair_different_classes(order: np.ndarray, labels: np.ndarray, num_used: int) -> np.ndarray:
  """Reorders `order` so that positions (2k, 2k+1) < num_used hold examples of different labels.

  A same-class pair swaps its second element with the first later element of another class
  (the unused tail included), else with the first element of an earlier pair of two other classes.

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
