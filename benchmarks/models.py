"""Train-step benchmark of the backbones: forward + backward + SGD update per batch, on this machine.

    .venv/bin/python benchmarks/models.py                                  # envnet, envnetv2; batch 8, 32
    .venv/bin/python benchmarks/models.py --models all --batches 8 --impls cpu,plain --repeats 3
    .venv/bin/python benchmarks/models.py --models envnetv2 --batches 8 --layers   # per-conv-layer costs

Prints the machine state (CPU, cores, load average, versions, measured float32 matmul rate), then one
row per (model, batch, impl): `impl` is the convolution and pooling path forced with
`intermix_jax.models.cpu_ops.force` ('cpu': the CPU rewrites, what the CPU backend runs by default;
'plain': `lax.conv_general_dilated` / `reduce_window`, what GPU/TPU run); compile time; the model's GFLOPs per step (XLA cost analysis of the
step with plain convolutions, the same count for every row); the compiled program's own GFLOPs (lower
where the CPU rewrites compute a weight gradient by FFT); median / min step time after two warm-up
steps; achieved model GFLOP/s and its fraction of the matmul rate (model FLOP utilisation, MFU; the
matmul rate is re-measured after every row and the best so far is used, as the machine is shared). The step is the one the trainer runs: soft-target cross-entropy (as in mixing),
gradients, optax SGD with Nesterov momentum 0.9 and coupled weight decay 5e-4, BatchNorm statistics
updated, dropout on. Timings are noisy on a shared machine: compare rows from one run.

`--layers` times each convolution of a model alone (forward, input gradient, weight gradient) for
every impl, to see where a step's time goes.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from intermix_jax import host_memory, models
from intermix_jax.models import cpu_ops, layers
from machine import cpu_name, flops_of, matmul_rate


def timed(fn, *args, repeats: int, warmup: int = 2):
  """Median and min wall time (s) of fn(*args) (blocked), after `warmup` calls; the last output."""
  out = None
  for _ in range(warmup):
    out = jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times), min(times), out


def make_step(model, num_classes: int):
  tx = optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(0.01, momentum=0.9, nesterov=True))

  def loss_fn(params, batch_stats, x, targets, key):
    logits, updates = model.apply({'params': params, 'batch_stats': batch_stats}, x, train=True,
                                  rngs={'dropout': key}, mutable=['batch_stats'])
    loss = -jnp.mean(jnp.sum(targets * jax.nn.log_softmax(logits), axis=-1))
    return loss, updates['batch_stats']

  def step(params, batch_stats, opt_state, x, targets, key):
    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, batch_stats, x, targets, key)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state, loss

  return tx, jax.jit(step, donate_argnums=(0, 1, 2))


def bench_step(name: str, batch: int, impl: str, repeats: int, width: float, fc_units, num_classes=50):
  """One row: the train step traced with the convolution / pooling path `impl` ('cpu' | 'plain')."""
  with cpu_ops.force(impl):
    return _bench_step(name, batch, impl, repeats, width, fc_units, num_classes)


def _bench_step(name: str, batch: int, impl: str, repeats: int, width: float, fc_units, num_classes):
  model = models.get_model(name, num_classes, width=width, fc_units=fc_units)
  key = jax.random.key(0)
  x = 0.1 * jax.random.normal(key, (batch, model.input_length), jnp.float32)
  targets = jax.nn.softmax(jax.random.normal(jax.random.key(1), (batch, num_classes)))
  variables = jax.jit(lambda x: model.init({'params': key, 'dropout': key}, x, train=False))(x[:2])
  params, batch_stats = variables['params'], variables.get('batch_stats', {})
  tx, step = make_step(model, num_classes)
  opt_state = tx.init(params)
  args = (params, batch_stats, opt_state, x, targets, jax.random.key(2))
  start = time.perf_counter()
  compiled = step.lower(*args).compile()
  compile_s = time.perf_counter() - start
  program_gflops = flops_of(compiled) / 1e9
  with cpu_ops.force('plain'):
    gflops = flops_of(make_step(model, num_classes)[1].lower(*args)) / 1e9
  state = [params, batch_stats, opt_state]

  def run(x, targets, k):
    state[0], state[1], state[2], loss = compiled(state[0], state[1], state[2], x, targets, k)
    return loss

  median, best, loss = timed(run, x, targets, jax.random.key(2), repeats=repeats)
  n_params = sum(p.size for p in jax.tree.leaves(params))
  return dict(model=name, batch=batch, impl=impl, compile_s=compile_s, gflops=gflops,
              program_gflops=program_gflops,
              median_s=median, min_s=best, gflops_per_s=gflops / median, params=n_params,
              loss=float(loss))


def conv_layers(name: str, width: float, fc_units):
  """(path, input shape, kernel shape, strides, padding) of every conv of the model, from a trace."""
  model = models.get_model(name, 10, width=width, fc_units=fc_units)
  found = []
  original = layers.conv2d

  def spy(x, kernel, strides=(1, 1), padding=((0, 0), (0, 0))):
    found.append((tuple(x.shape[1:]), tuple(kernel.shape), tuple(strides), padding))
    return original(x, kernel, strides, padding)

  layers.conv2d = spy
  try:
    jax.eval_shape(lambda x: model.init({'params': jax.random.key(0), 'dropout': jax.random.key(0)},
                                        x, train=False),
                   jax.ShapeDtypeStruct((1, model.input_length), jnp.float32))
  finally:
    layers.conv2d = original
  return found


def bench_layers(name: str, batch: int, impls, repeats: int, width: float, fc_units):
  rows = []
  for i, (in_shape, k_shape, strides, padding) in enumerate(conv_layers(name, width, fc_units)):
    key = jax.random.key(i)
    x = jax.random.normal(key, (batch,) + in_shape, jnp.float32)
    w = jax.random.normal(key, k_shape, jnp.float32)
    y_shape = jax.eval_shape(lambda x, w: layers.plain_conv(x, w, strides, padding), x, w).shape
    g = jax.random.normal(key, y_shape, jnp.float32)
    fwd_flops = 2 * np.prod(y_shape) * np.prod(k_shape[:3])
    row = dict(layer=f'conv{i + 1}', shape=f'{in_shape}*{k_shape[:2]}/{strides[1]}', gflop=fwd_flops / 1e9)
    for impl in impls:
      conv = lambda x, w: layers.conv2d(x, w, strides, padding)
      fns = {
          'fwd': jax.jit(conv),
          'dx': jax.jit(lambda x, w, g: jax.vjp(lambda x: conv(x, w), x)[1](g)[0]),
          'dw': jax.jit(lambda x, w, g: jax.vjp(lambda w: conv(x, w), w)[1](g)[0]),
      }
      for part, fn in fns.items():
        args = (x, w) if part == 'fwd' else (x, w, g)
        with cpu_ops.force(impl):  # traced by the warm-up call inside
          median, _, _ = timed(fn, *args, repeats=repeats, warmup=1)
        row[f'{impl}_{part}_ms'] = 1e3 * median
    rows.append(row)
    print_layer_row(row, impls, header=(i == 0))
  return rows


def print_layer_row(row, impls, header):
  if header:
    cols = ' '.join(f'{impl + " " + p:>12s}' for impl in impls for p in ('fwd', 'dx', 'dw'))
    print(f'{"layer":7s} {"input*kernel/stride":34s} {"GFLOP":>6s} {cols}   (ms; GFLOP = forward)')
  cols = ' '.join(f'{row[f"{impl}_{p}_ms"]:12.1f}' for impl in impls for p in ('fwd', 'dx', 'dw'))
  print(f'{row["layer"]:7s} {row["shape"]:34s} {row["gflop"]:6.2f} {cols}', flush=True)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--models', default='envnet,envnetv2',
                      help=f'comma-separated names or "all" ({", ".join(models.MODELS)})')
  parser.add_argument('--batches', default='8,32')
  parser.add_argument('--impls', default='cpu,plain',
                      help='convolution / pooling paths to compare (cpu_ops.force)')
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--width', type=float, default=1.0)
  parser.add_argument('--fc_units', type=int, default=None)
  parser.add_argument('--layers', action='store_true', help='per-convolution timings instead')
  parser.add_argument('--reuse_host_memory', action=argparse.BooleanOptionalAction, default=True,
                      help='intermix_jax.host_memory.reuse_freed_memory(), as intermix_jax.main does')
  args = parser.parse_args(argv)
  reused = args.reuse_host_memory and host_memory.reuse_freed_memory()  # before JAX's threads
  names = list(models.MODELS) if args.models == 'all' else args.models.split(',')
  batches = [int(b) for b in args.batches.split(',')]
  impls = args.impls.split(',')

  print(f'# command: {" ".join([os.path.basename(sys.executable)] + sys.argv)}')
  print(f'# machine: {cpu_name()}, {os.cpu_count()} cores, load average '
        f'{" ".join(f"{v:.2f}" for v in os.getloadavg())}; jax {jax.__version__}, '
        f'backend {jax.default_backend()}, XLA_FLAGS={os.environ.get("XLA_FLAGS", "")!r}')
  print(f'# host_memory.reuse_freed_memory: {reused}')
  peak = matmul_rate(2048, repeats=5)
  print(f'# float32 matmul 2048^3: {peak:.1f} GFLOP/s (best of 5)', flush=True)
  if args.layers:
    for name in names:
      for batch in batches:
        print(f'## {name}, batch {batch}')
        bench_layers(name, batch, impls, args.repeats, args.width, args.fc_units)
    return
  print(f'{"model":10s} {"batch":>5s} {"impl":>5s} {"compile s":>9s} {"GFLOP":>7s} {"prog GF":>7s} '
        f'{"median s":>9s} {"min s":>7s} {"GFLOP/s":>8s} {"MFU":>5s} {"params":>11s}', flush=True)
  for name in names:
    for batch in batches:
      for impl in impls:
        r = bench_step(name, batch, impl, args.repeats, args.width, args.fc_units)
        peak = max(peak, matmul_rate(2048, repeats=5))  # the machine is shared: the best rate seen so far
        print(f'{r["model"]:10s} {r["batch"]:5d} {r["impl"]:>5s} {r["compile_s"]:9.2f} '
              f'{r["gflops"]:7.1f} {r["program_gflops"]:7.1f} {r["median_s"]:9.3f} {r["min_s"]:7.3f} '
              f'{r["gflops_per_s"]:8.1f} '
              f'{r["gflops_per_s"] / peak:5.0%} {r["params"]:11,d}', flush=True)


if __name__ == '__main__':
  main()
