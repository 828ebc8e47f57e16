"""Shared pieces of the multi-device tests (imported by tests/_mp_*.py scripts and the test files).

Everything here is small on purpose: the scripts run under 8 simulated CPU devices or as two real
processes, on 2 shared CPU cores.

  ToyStrategy  a mixing Strategy obeying docs/architecture.md (plan/prepare_input/mixer/targets/
               loss), simple enough to be checked by hand; used so that the parallel laws are tested
               independently of intermix_jax.mixing.
  TinyNet      the one tiny test model (tests/helpers.TinyNet is its conv configuration): the
               models' calling convention (mix points 0 and 1, BatchNorm, Dropout).
  train_step   one SGD step (loss, grads, updated params and batch_stats), the shape of the
               trainer's train_step; reference_step: the same on one device with the plan a
               sharded run draws.
"""
import dataclasses
import functools
import os
import socket
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

NUM_CLASSES = 5
T = 64  # samples per toy waveform
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


@struct.dataclass
class ToyPlan:
  layer: jax.Array  # int32 scalar: the mix point that mixes
  r: jax.Array      # (N,) mixing ratio of row n with its partner n ^ 1


@dataclasses.dataclass(frozen=True)
class ToyStrategy:
  """h_n <- r_n h_n + (1 - r_n) h_{n^1} at the plan's layer; y likewise; x scaled by (1 + r/10)."""
  layers: tuple = (0, 1)
  name: str = 'toy'
  mixes: bool = True

  def plan(self, key, batch_size, num_mix_points):
    del num_mix_points
    k1, k2 = jax.random.split(key)
    layers = jnp.asarray(self.layers, jnp.int32)
    layer = layers[jax.random.randint(k1, (), 0, len(self.layers))]
    return ToyPlan(layer=layer, r=jax.random.uniform(k2, (batch_size,)))

  def prepare_input(self, plan, x):
    return x * (1.0 + 0.1 * plan.r[:, None])

  def mixer(self, plan, sample_rate):
    del sample_rate

    def mix(h, k):
      partner = h.reshape(h.shape[0] // 2, 2, *h.shape[1:])[:, ::-1].reshape(h.shape)
      r = plan.r.reshape((-1,) + (1,) * (h.ndim - 1))
      return jnp.where(plan.layer == k, r * h + (1 - r) * partner, h)
    return mix

  def targets(self, plan, y):
    partner = y.reshape(y.shape[0] // 2, 2, -1)[:, ::-1].reshape(y.shape)
    return plan.r[:, None] * y + (1 - plan.r[:, None]) * partner

  def loss(self, logits, targets):
    return jnp.mean(optax.softmax_cross_entropy(logits, targets))


class TinyNet(nn.Module):
  """The one tiny test model (tests/helpers.TinyNet is this with conv=4, num_classes=3): (N, T=64)
  float32 -> (N, num_classes) logits, with the models' calling convention: mix points 0 (the
  input) and 1 (hidden, after BatchNorm + ReLU), Dropout before the last dense layer.

  conv=0 (the multi-device tests): Dense(hidden, no bias) -> BN -> ReLU -> [1] -> Dropout -> Dense.
  conv=C > 0 (step-level tests: a convolution, which runs in one program vmap into a grouped one):
  Conv(C, 5, no bias) -> BN -> ReLU -> max-pool 4 -> [1] -> flatten -> Dense(8) -> ReLU -> Dropout
  -> Dense."""
  sample_rate: int = 16000
  input_length: int = T
  num_mix_points: int = 2
  hidden: int = 16
  num_classes: int = NUM_CLASSES
  conv: int = 0

  @nn.compact
  def __call__(self, x, train: bool = False, mix=None):
    if mix is not None:
      x = mix(x, 0)
    if self.conv:
      h = nn.Conv(self.conv, (5,), use_bias=False)(x[..., None])
    else:
      h = nn.Dense(self.hidden, use_bias=False)(x)
    h = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=2e-5)(h)
    h = nn.relu(h)
    if self.conv:
      h = nn.max_pool(h, (4,), (4,))
    if mix is not None:
      h = mix(h, 1)
    if self.conv:
      h = nn.relu(nn.Dense(8)(h.reshape(h.shape[0], -1)))
    h = nn.Dropout(0.5, deterministic=not train)(h)
    return nn.Dense(self.num_classes)(h)


def init_variables(model, seed=0):
  return model.init(jax.random.key(seed), jnp.zeros((2, model.input_length)), train=False)


def make_tx():
  return optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(0.1, momentum=0.9, nesterov=True))


def loss_and_grads(model, strategy, params, batch_stats, x, y, plan, dropout_key):
  """Returns (loss, grads, new_batch_stats) for one batch given a mixing plan."""
  x = strategy.prepare_input(plan, x)
  targets = strategy.targets(plan, jax.nn.one_hot(y, model.num_classes))
  mix = strategy.mixer(plan, model.sample_rate) if strategy.mixes else None

  def loss_fn(p):
    logits, upd = model.apply({'params': p, 'batch_stats': batch_stats}, x, train=True, mix=mix,
                              rngs={'dropout': dropout_key}, mutable=['batch_stats'])
    return strategy.loss(logits, targets), upd['batch_stats']

  (loss, new_bs), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  return loss, grads, new_bs


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def train_step(model, strategy, tx, state, x, y, key):
  """state = (params, batch_stats, opt_state) -> (new state, loss). Plan drawn from `key`."""
  params, batch_stats, opt_state = state
  plan_key, dropout_key = jax.random.split(key)
  plan = strategy.plan(plan_key, x.shape[0], model.num_mix_points)
  loss, grads, batch_stats = loss_and_grads(model, strategy, params, batch_stats, x, y, plan,
                                            dropout_key)
  updates, opt_state = tx.update(grads, opt_state, params)
  return (optax.apply_updates(params, updates), batch_stats, opt_state), loss


def synthetic_config(data_dir, global_batch):
  """Experiment config of the two-process test: synthetic dataset, fold 1 held out, intermix."""
  from intermix_jax import config_lib  # pylint: disable=g-import-not-at-top
  config = config_lib.base_config()
  config.dataset, config.data_dir, config.fold = 'synthetic', data_dir, 1
  config.strategy, config.batch_size, config.seed = 'intermix', global_batch, 0
  return config


def free_port():
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def subprocess_env(num_devices):
  """Environment for a child python with `num_devices` simulated CPU devices and no GPU/TPU."""
  env = dict(os.environ)
  flags = [f for f in env.get('XLA_FLAGS', '').split()
           if not f.startswith('--xla_force_host_platform_device_count')]
  env['XLA_FLAGS'] = ' '.join(flags + [f'--xla_force_host_platform_device_count={num_devices}'])
  env['JAX_PLATFORMS'] = 'cpu'
  for k in list(env):  # never let a child think it is part of a cluster launch
    if k.startswith(('SLURM_', 'OMPI_', 'TPU_WORKER', 'TPU_PROCESS')) or k in (
        'JAX_COORDINATOR_ADDRESS', 'JAX_COORDINATOR_BIND_ADDRESS', 'JAX_NUM_PROCESSES',
        'JAX_PROCESS_ID', 'JAX_LOCAL_DEVICE_IDS'):
      del env[k]
  env['PYTHONPATH'] = os.pathsep.join(p for p in (TESTS_DIR, env.get('PYTHONPATH')) if p)
  return env


def run_python(script, args, env, timeout):
  """Runs tests/<script> with a bounded timeout; returns the CompletedProcess."""
  return subprocess.run([sys.executable, os.path.join(TESTS_DIR, script), *map(str, args)],
                        env=env, capture_output=True, text=True, timeout=timeout)


def concatenated_plan(strategy, key, batch_size, num_mix_points, num_devices):
  """The plan a `num_devices` sharded strategy draws, as one unwrapped plan for a 1-device
  reference: device plans plan(fold_in(key, d), batch_size / num_devices, K) with per-row fields
  concatenated and per-step fields taken from device 0 (the caller makes them agree across devices,
  e.g. with a single eligible layer)."""
  b = batch_size // num_devices
  plans = [strategy.plan(jax.random.fold_in(key, d), b, num_mix_points) for d in range(num_devices)]
  return jax.tree.map(lambda *xs: jnp.concatenate(xs) if xs[0].ndim else xs[0], *plans)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 7))
def reference_step(model, strategy, tx, state, x, y, key, num_devices):
  """C.train_step on one device, with the mixing plan the `num_devices` sharded run draws."""
  params, batch_stats, opt_state = state
  plan_key, dropout_key = jax.random.split(key)
  plan = concatenated_plan(strategy, plan_key, x.shape[0], model.num_mix_points, num_devices)
  loss, grads, batch_stats = loss_and_grads(model, strategy, params, batch_stats, x, y, plan,
                                            dropout_key)
  updates, opt_state = tx.update(grads, opt_state, params)
  return (optax.apply_updates(params, updates), batch_stats, opt_state), loss
