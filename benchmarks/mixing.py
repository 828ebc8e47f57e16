#!/usr/bin/env python3
"""Time the InterMix input path: JAX (jitted) vs a straightforward float64 numpy implementation.

The input path of one InterMix step at mix point 0 (EnvNet-v2 input, 44.1 kHz): phase shift of
every waveform by its phi, A-weighted gain of every (shifted) waveform, BC's p from the gains and
r, and the mix of row n with its partner n ^ 1 (signed waveforms: 'superpose', the normalised
p-weighted sum of the phase-shifted sounds). Prints the machine state, the command, and a table:

    .venv/bin/python benchmarks/mixing.py                  # batch 64 x 66650 samples, 10 repeats
    .venv/bin/python benchmarks/mixing.py --batch 32 --repeats 20

Rows: jax jitted (intermix strategy: prepare_input + mixer at layer 0), its two halves (phase
shift alone, gain alone), numpy float64 as the reference code does it (loop over rows and frames),
and numpy float64 vectorised over rows and frames. Every path runs once per round (so a shared
machine's load falls on all alike); median and min over rounds after one warm-up call, and the
first jax call (trace + compile). The last column is numpy-loop time / this path's time.
"""
import argparse
import os
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from intermix_jax import audio
from intermix_jax import mixing

FS = 44100
N_FFT = 4096


# --- numpy float64 references ----------------------------------------------------------------------
def _a_weight_linear(fs, n_fft):
  freq = np.linspace(0, fs / 2, n_fft // 2 + 1)
  f2 = freq ** 2
  f2[0] = 1.0
  a_db = 2.0 + 20.0 * (2 * np.log10(12194) + 2 * np.log10(f2) - np.log10(f2 + 12194 ** 2)
                       - np.log10(f2 + 20.6 ** 2) - 0.5 * np.log10(f2 + 107.7 ** 2)
                       - 0.5 * np.log10(f2 + 737.9 ** 2))
  return 10 ** (np.maximum(a_db, -80.0) / 10)


def numpy_loop(x, phi, r):
  """Row by row and frame by frame, as the BC / InterMix reference code computes it (float64)."""
  n, t = x.shape
  weight = _a_weight_linear(FS, N_FFT)
  window = np.hanning(N_FFT + 1)[:-1]
  shifted = np.stack([np.fft.irfft(np.fft.rfft(row) * np.exp(1j * p), n=t) for row, p in zip(x, phi)])
  gains = np.empty(n)
  for i, row in enumerate(shifted):
    g = [np.sum(np.abs(np.fft.rfft(window * row[s:s + N_FFT])) ** 2 * weight)
         for s in range(0, t - N_FFT + 1, N_FFT // 2)]
    gains[i] = 10 * np.log10(max(max(g), 1e-8))
  out = np.empty_like(shifted)
  for i in range(n):
    j = i ^ 1
    p = 1.0 / (1 + 10 ** ((gains[i] - gains[j]) / 20) * (1 - r[i]) / r[i])
    out[i] = (p * shifted[i] + (1 - p) * shifted[j]) / np.sqrt(p ** 2 + (1 - p) ** 2)
  return out


def numpy_vectorised(x, phi, r):
  """The same in float64 numpy, vectorised over rows and frames (strided frame view)."""
  n, t = x.shape
  shifted = np.fft.irfft(np.fft.rfft(x, axis=-1) * np.exp(1j * phi)[:, None], n=t, axis=-1)
  frames = np.lib.stride_tricks.sliding_window_view(shifted, N_FFT, axis=-1)[:, ::N_FFT // 2]
  power = np.abs(np.fft.rfft(frames * np.hanning(N_FFT + 1)[:-1], axis=-1)) ** 2
  gains = 10 * np.log10(np.maximum((power @ _a_weight_linear(FS, N_FFT)).max(-1), 1e-8))
  partner = np.arange(n) ^ 1
  p = 1.0 / (1 + 10 ** ((gains - gains[partner]) / 20) * (1 - r) / r)
  p = p[:, None]
  return (p * shifted + (1 - p) * shifted[partner]) / np.sqrt(p ** 2 + (1 - p) ** 2)


# --- timing ------------------------------------------------------------------------------------------
def _time_interleaved(fns, repeats):
  """{name: (median s, min s, first-call s)}; one call of every fn per round, so that the load of
  a shared machine falls on all of them alike."""
  first, times = {}, {name: [] for name in fns}
  for name, fn in fns.items():
    start = time.perf_counter()
    fn()
    first[name] = time.perf_counter() - start
    fn()
  for _ in range(repeats):
    for name, fn in fns.items():
      start = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - start)
  return {name: (statistics.median(t), min(t), first[name]) for name, t in times.items()}


def _machine_state():
  try:
    cpu = next(l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name'))
  except (OSError, StopIteration):
    cpu = platform.processor() or platform.machine()
  load = ', '.join(f'{v:.2f}' for v in os.getloadavg())
  return (f'machine: {cpu}; {os.cpu_count()} cores; load average {load}\n'
          f'jax {jax.__version__} on {jax.devices()}; numpy {np.__version__}; '
          f'XLA_FLAGS={os.environ.get("XLA_FLAGS", "")!r}')


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--batch', type=int, default=64, help='waveforms per batch (even)')
  parser.add_argument('--length', type=int, default=66650, help='samples per waveform (44.1 kHz)')
  parser.add_argument('--repeats', type=int, default=10)
  args = parser.parse_args()

  print(_machine_state())
  print('command: ' + ' '.join([os.path.basename(sys.executable)] + sys.argv))
  rng = np.random.default_rng(0)
  x64 = 0.1 * rng.standard_normal((args.batch, args.length)) * rng.uniform(0.05, 2, (args.batch, 1))
  x = jnp.asarray(x64, jnp.float32)
  strategy = mixing.get_strategy('intermix', eligible_layers=(0,))
  plan = strategy.plan(jax.random.key(0), args.batch, 1)
  phi, r = np.asarray(plan.phi, np.float64), np.asarray(plan.r, np.float64)

  @jax.jit
  def input_path(plan, x):
    return strategy.mixer(plan, FS)(strategy.prepare_input(plan, x), 0)

  shift = jax.jit(audio.phase_shift)
  gain = jax.jit(lambda v: audio.a_weighted_gain(v, FS))
  block = jax.block_until_ready
  fns = {
      'jax jit: phase shift + gain + mix (float32)': lambda: block(input_path(plan, x)),
      '  jax jit: phase shift only': lambda: block(shift(x, plan.phi)),
      '  jax jit: A-weighted gain only': lambda: block(gain(x)),
      'numpy float64, loops as the reference code': lambda: numpy_loop(x64, phi, r),
      'numpy float64, vectorised': lambda: numpy_vectorised(x64, phi, r),
  }
  results = _time_interleaved(fns, args.repeats)
  t_jax = results['jax jit: phase shift + gain + mix (float32)'][0]
  t_loop = results['numpy float64, loops as the reference code'][0]
  t_vec = results['numpy float64, vectorised'][0]

  want = numpy_vectorised(x64, phi, r)
  got = np.asarray(input_path(plan, x), np.float64)
  err = np.max(np.abs(got - want)) / np.max(np.abs(want))
  loop_err = np.max(np.abs(numpy_loop(x64[:4], phi[:4], r[:4]) - want[:4])) / np.max(np.abs(want[:4]))

  print(f'\nInterMix input path, batch {args.batch} x {args.length} samples at {FS} Hz '
        f'(interleaved rounds: median and min of {args.repeats})')
  print(f'{"path":46s} {"median ms":>10s} {"min ms":>8s} {"first call s":>13s} {"numpy-loop/this":>16s}')
  for name, (median, fastest, first) in results.items():
    first_s = f'{first:13.2f}' if name.startswith(('jax', '  jax')) else f'{"":13s}'
    print(f'{name:46s} {1e3 * median:10.1f} {1e3 * fastest:8.1f} {first_s} {t_loop / median:15.1f}x')
  best = {name: v[1] for name, v in results.items()}
  jax_name = 'jax jit: phase shift + gain + mix (float32)'
  print(f'\nratio numpy-loop / jax = {t_loop / t_jax:.1f}x; numpy-vectorised / jax = {t_vec / t_jax:.1f}x '
        f'(medians); {best["numpy float64, loops as the reference code"] / best[jax_name]:.1f}x and '
        f'{best["numpy float64, vectorised"] / best[jax_name]:.1f}x (mins)')
  print(f'max |jax - numpy float64| / max |numpy| = {err:.2e} (loop vs vectorised numpy: {loop_err:.1e})')


if __name__ == '__main__':
  main()
