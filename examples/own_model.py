"""Hidden-space InterMix in your own Flax Linen model, with your own training loop.

    python examples/own_model.py [--strategy intermix] [--steps 60]

Uses only `intermix_jax.get_strategy`, `intermix_jax.mix_point` and the five methods of the strategy;
nothing of the project's trainer, models or data pipeline. The recipe for any model:

  1. Give the model numbered mix points: `h = intermix_jax.mix_point(h, k, mix, channel_axis=-1)`
     at point k (a Python int; 0 = the input waveform), where `mix` is an optional argument of
     `__call__` (None: no mixing). Hidden points should be non-negative (after ReLU / pooling).
     `channel_axis` says where the channels are (-1 for Flax's (N, T, C) / (N, H, W, C)): with
     p-weighting the strategy reads each row channel-first, flattened, as a signal for the
     A-weighted gain (docs/method.md §3), and mix_point hands it the tensor that way. Say how many
     points there are (`num_mix_points`).
  2. Batches hold pairs: rows 2k and 2k+1 are sounds of different classes (N even).
  3. In the loss: plan -> prepare_input -> mixer -> model -> targets -> loss (below).

The data here are synthetic tones (each class a frequency band), enough to see the loss fall.
"""
import argparse
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import intermix_jax

SAMPLE_RATE = 8000   # Hz of the input waveforms
INPUT_LENGTH = 2048  # samples per example (0.256 s)
CLASS_HZ = (300.0, 700.0, 1500.0, 3000.0)  # centre frequency of each synthetic class


class TinyAudioNet(nn.Module):
  """A small 1-D CNN on raw waveforms with three mix points.

  Input (N, T) float waveform; output (N, num_classes) logits. Mix points: 0 = the input (N, T);
  1 = after conv block 1 (N, T/32, C1) and 2 = after conv block 2 (N, T/256, C2), both
  non-negative, channel-last (Flax's layout), sown as intermediates/mix_point_{k}.
  """
  num_classes: int
  channels: int = 16
  num_mix_points = 3     # not a dataclass field: a fact about the architecture
  sample_rate = SAMPLE_RATE

  @nn.compact
  def __call__(self, x, mix=None):
    h = intermix_jax.mix_point(x, 0, mix)[..., None]                 # point 0: (N, T) -> (N, T, 1)
    h = nn.relu(nn.Conv(self.channels, (32,), strides=(4,))(h))
    h = nn.max_pool(h, (8,), strides=(8,))                           # (N, T/32, C1)
    h = intermix_jax.mix_point(h, 1, mix, channel_axis=-1)           # point 1
    self.sow('intermediates', 'mix_point_1', h)
    h = nn.relu(nn.Conv(2 * self.channels, (8,))(h))
    h = nn.max_pool(h, (8,), strides=(8,))                           # (N, T/256, C2)
    h = intermix_jax.mix_point(h, 2, mix, channel_axis=-1)           # point 2
    self.sow('intermediates', 'mix_point_2', h)
    h = jnp.mean(h, axis=1)                                          # (N, C2)
    return nn.Dense(self.num_classes)(h)


def make_batch(rng: np.random.Generator, num_pairs: int):
  """Synthetic tones: x float32 (2P, T) in [-1, 1], y int32 (2P,); rows 2k, 2k+1 differ in class."""
  first = rng.integers(0, len(CLASS_HZ), num_pairs)
  second = (first + rng.integers(1, len(CLASS_HZ), num_pairs)) % len(CLASS_HZ)
  y = np.stack([first, second], 1).reshape(-1).astype(np.int32)
  t = np.arange(INPUT_LENGTH) / SAMPLE_RATE
  f = np.asarray(CLASS_HZ)[y] * rng.uniform(0.9, 1.1, y.shape)
  phase = rng.uniform(0, 2 * math.pi, y.shape)
  level = 10 ** (rng.uniform(-20, -3, y.shape) / 20)
  x = level[:, None] * np.sin(2 * math.pi * f[:, None] * t + phase[:, None])
  x = x + 0.003 * rng.standard_normal(x.shape)
  return x.astype(np.float32), y


def make_train_step(model, strategy, tx):
  """One jitted optimiser step with `strategy` applied inside the loss."""

  def loss_fn(params, x, y, key):
    plan = strategy.plan(key, x.shape[0], model.num_mix_points)   # layer, r, phi for this step
    x = strategy.prepare_input(plan, x)                            # InterMix: phase shift
    mix = strategy.mixer(plan, model.sample_rate)                  # (h, k) -> h
    logits = model.apply({'params': params}, x, mix=mix)
    targets = strategy.targets(plan, jax.nn.one_hot(y, model.num_classes))
    return strategy.loss(logits, targets)                          # KL (mixing) or CE (standard)

  @jax.jit
  def step(params, opt_state, x, y, key):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y, key)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return step


def accuracy(model, params, x, y) -> float:
  """Fraction of rows whose argmax (no mixing) is the label."""
  logits = model.apply({'params': params}, x)
  return float(jnp.mean(jnp.argmax(logits, -1) == y))


def train(strategy_name: str = 'intermix', steps: int = 60, num_pairs: int = 8, seed: int = 0,
          learning_rate: float = 1e-2):
  """Trains TinyAudioNet; returns (model, params, per-step losses)."""
  model = TinyAudioNet(num_classes=len(CLASS_HZ))
  strategy = intermix_jax.get_strategy(strategy_name)   # intermix: hidden points 1..K-1
  key = jax.random.key(seed)
  init_key, key = jax.random.split(key)
  params = model.init(init_key, jnp.zeros((2, INPUT_LENGTH)))['params']
  tx = optax.adam(learning_rate)
  opt_state = tx.init(params)
  step = make_train_step(model, strategy, tx)
  rng = np.random.default_rng(seed)
  losses = []
  for i in range(steps):
    x, y = make_batch(rng, num_pairs)
    params, opt_state, loss = step(params, opt_state, x, y, jax.random.fold_in(key, i))
    losses.append(float(loss))
  return model, params, losses


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--strategy', default='intermix', choices=intermix_jax.STRATEGY_NAMES)
  parser.add_argument('--steps', type=int, default=60)
  args = parser.parse_args()
  model, params, losses = train(args.strategy, args.steps)
  for i in range(0, len(losses), 10):
    print(f'step {i + 1:4d}  loss {np.mean(losses[i:i + 10]):.4f}')
  x, y = make_batch(np.random.default_rng(12345), 64)
  print(f'held-out accuracy (no mixing): {accuracy(model, params, x, y):.3f} '
        f'(chance {1 / len(CLASS_HZ):.2f})')


if __name__ == '__main__':
  main()
