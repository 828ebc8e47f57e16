"""The memory floor of a K-run train step, and how close measured steps came to it.

    python -m benchmarks.roofline          # the H200 rows in results/accelerator/h200-2026-11-30
    python -m benchmarks.roofline --rows a.jsonl,b.jsonl --bandwidth_tbps 4.8 --xla

The rows are JSON lines of `python -m benchmarks.multirun --out` (any device). Per backbone the
bytes of the state the rows trained (`harness.init_state`, shapes only): P of parameters, O of
optimiser state. Every step of every run moves that state through device memory:

    trainer's floor = 7 P + 2 O per run and step: forward and backward read the parameters, the
        weight gradients are written, the non-finite guard (`steps.train_step`) reads them before
        any update, the optimiser reads gradients, parameters and its state and writes the last two
        (float32 with Nesterov momentum: 36 bytes per parameter; 32 without the guard);
    strict floor = 2 P + 2 O: parameters and optimiser state read and written once (no gradient
        ever in memory).

Gradients are counted at the parameters' dtype (bfloat16 compute can move less); activations,
batch and BatchNorm statistics are left out: both are lower bounds. At bandwidth B, K runs take at
least K x floor / B per step; the ceiling on "x one run" is t1 / (floor / B) for every K (t1: one
run alone's measured step). `--xla` adds XLA's 'bytes accessed' of the one-run step compiled on
THIS backend (`harness.compile_step`: the accelerator's program), a cross-check.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import jax.numpy as jnp

from benchmarks import harness
from intermix_jax import parallel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

H200_ROWS = ('results/accelerator/h200-2026-11-30/multirun.jsonl,'
             'results/accelerator/h200-2026-11-30/multirun_unroll.jsonl')
H200_TBPS = 4.8  # H200 SXM data sheet: HBM3e, 4.8 TB/s


def _bytes(tree) -> int:
  return sum(leaf.size * jnp.dtype(leaf.dtype).itemsize for leaf in jax.tree.leaves(tree))


def state_bytes(row: dict) -> dict:
  """{'params': P, 'opt_state': O, 'n_params': parameter count} of the state a multirun row
  trained (its backbone, width, fc_units, precision; `harness.PAPER_OPT` and 50 classes)."""
  model, _ = harness.model_and_strategy(row['backbone'], row['strategy'], width=row['width'],
                                        fc_units=row['fc_units'], precision=row['precision'])
  state = harness.init_state(model, parallel.make_mesh(1), abstract=True)
  return dict(params=_bytes(state.params), opt_state=_bytes(state.opt_state),
              n_params=sum(leaf.size for leaf in jax.tree.leaves(state.params)))


def floors(sizes: dict) -> tuple[int, int]:
  """(trainer's, strict) floor in bytes per run and step (module docstring)."""
  p, o = sizes['params'], sizes['opt_state']
  return 7 * p + 2 * o, 2 * p + 2 * o


def xla_bytes_accessed(row: dict) -> float:
  """XLA's 'bytes accessed' of the one-run train step of `row` compiled on this backend."""
  _, compiled = harness.compile_step(row['backbone'], precision=row['precision'],
                                     batch=row['batch'], width=row['width'],
                                     fc_units=row['fc_units'], strategy=row['strategy'])
  return float(harness.cost_of(compiled).get('bytes accessed', float('nan')))


def _group(row: dict) -> tuple:
  """Rows of one group share their one-run row: the same model and step, from the same file."""
  return tuple(row.get(k) for k in ('backbone', 'strategy', 'width', 'fc_units', 'precision',
                                    'batch', 'data', 'device', 'source'))


def analyse(rows: list[dict], bandwidth_tbps: float, xla: bool = False) -> list[dict]:
  """One dict per row with a one-run row of its group: the row's numbers and its floors."""
  ones = {_group(r): r['step_s'] for r in rows if r['runs'] is None}
  sizes, xla_cache, out = {}, {}, []
  bw = bandwidth_tbps * 1e12
  for r in rows:
    g = _group(r)
    if g not in ones:
      continue
    if g[:5] not in sizes:
      sizes[g[:5]] = state_bytes(r)
    if xla and g not in xla_cache:
      xla_cache[g] = xla_bytes_accessed(r)
    trainer, strict = floors(sizes[g[:5]])
    k, t1 = r['runs'] or 1, ones[g]
    out.append(dict(
        backbone=r['backbone'], method=r['method'], runs=r['runs'], step_s=r['step_s'],
        x_one_run=k * t1 / r['step_s'], floor_s=k * trainer / bw, floor_bytes=trainer,
        strict_bytes=strict, n_params=sizes[g[:5]]['n_params'],
        floor_tbps=k * trainer / r['step_s'] / 1e12,
        ceiling_x=t1 * bw / trainer, strict_ceiling_x=t1 * bw / strict,
        xla_bytes=xla_cache.get(g),
        row_xla_bytes_per_run=(r['xla_bytes_accessed'] / k if r.get('xla_bytes_accessed')
                               else None)))
  return out


def table(results: list[dict], bandwidth_tbps: float) -> str:
  return harness.md_table(
      ['backbone', 'method', 'runs', 'step ms', 'x one run', f'floor ms at {bandwidth_tbps:g} TB/s',
       'step / floor', 'floor traffic TB/s', 'ceiling x (7P+2O)', 'ceiling x (2P+2O)',
       "row's XLA MB / run"],
      [[r['backbone'], r['method'] or '-', 'one run alone' if r['runs'] is None else r['runs'],
        f'{1e3 * r["step_s"]:.2f}', f'{r["x_one_run"]:.2f}', f'{1e3 * r["floor_s"]:.2f}',
        f'{r["step_s"] / r["floor_s"]:.1f}', f'{r["floor_tbps"]:.2f}', f'{r["ceiling_x"]:.1f}',
        f'{r["strict_ceiling_x"]:.1f}',
        '' if r['row_xla_bytes_per_run'] is None else f'{r["row_xla_bytes_per_run"] / 1e6:.0f}']
       for r in results])


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--rows', default=H200_ROWS, help='multirun --out files, comma-separated')
  p.add_argument('--bandwidth_tbps', type=float, default=H200_TBPS,
                 help='the device memory bandwidth (default: the H200 data sheet)')
  p.add_argument('--xla', action='store_true',
                 help="also compile each one-run step here for XLA's 'bytes accessed'")
  args = p.parse_args(argv)
  rows = []
  for path in args.rows.split(','):
    path = path if os.path.isabs(path) else os.path.join(ROOT, path)
    with open(path) as f:
      rows += [dict(json.loads(line), source=path) for line in f if line.strip()]
  results = analyse(rows, args.bandwidth_tbps, xla=args.xla)
  devices = sorted({r.get('device', '?') for r in rows})
  print(f'# rows: {args.rows} ({", ".join(devices)}); bandwidth {args.bandwidth_tbps:g} TB/s')
  for backbone in dict.fromkeys(r['backbone'] for r in results):
    r = next(r for r in results if r['backbone'] == backbone)
    line = (f'# {r["backbone"]}: {r["n_params"] / 1e6:.2f} M parameters; floor per run and step '
            f'{r["floor_bytes"] / 1e6:.0f} MB (7P+2O), {r["strict_bytes"] / 1e6:.0f} MB (2P+2O)')
    if r['xla_bytes'] is not None:
      line += f"; XLA's bytes accessed of the one-run step here: {r['xla_bytes'] / 1e6:.0f} MB"
    print(line)
  print(table(results, args.bandwidth_tbps))
  return 0


if __name__ == '__main__':
  sys.exit(main())
