"""Input-pipeline benchmark: training examples/s on real ESC-10 at 44.1 kHz next to the train step.

    python -m benchmarks.pipeline                    # ESC-10 44.1 kHz, T=66650, batch 64
    python -m benchmarks.pipeline --threads 0,1,2 --epochs 3 --step_batch 16
    python -m benchmarks.pipeline --no_step          # the data pipeline only

One row per setting (strong augmentation off/on, clips cached in memory or read from the
array_record files per batch, background threads): examples/s of `make_train_loader(...)
.batches(epoch)` over whole epochs (median; the first epoch after construction included), the
index build time, and the evaluation loader's clips/s (10 crops each). Then the rate of the
trainer's step (`harness.build`: EnvNet-v2, published size, after compilation): the pipeline never
starves the step when the ratio is >> 1. Real ESC-10 from --manual_dir (ESC-50 layout), prepared
once into --data_dir. `--device_runs 1,5` adds config.data_on_device: for fold 1 and for the 5
folds stacked (one shared table), the table's build time and size and examples/s of all runs'
batches cut on the device (`DeviceInputs.batch`, each waited for) over whole epochs.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from benchmarks import harness
from intermix_jax import config_lib, data

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config(args, strong: bool):
  c = config_lib.base_config()
  c.dataset, c.data_dir, c.manual_dir = 'esc10', args.data_dir, args.manual_dir
  c.fold, c.strategy, c.batch_size, c.strong_augment = 1, args.strategy, args.batch, strong
  c.eval_batch_size, c.num_eval_crops = 16, 10
  return c


def pipeline_rows(args):
  rows = []
  for strong in (False, True):
    for cache in (True, False):
      for threads in args.threads:
        c = config(args, strong)
        start = time.perf_counter()
        train = data.make_train_loader(c, 44100, args.input_length, num_threads=threads,
                                       cache_bytes=data.pipeline.DEFAULT_CACHE_BYTES if cache
                                       else 0)
        build = time.perf_counter() - start
        rates = []
        for epoch in range(args.epochs):
          start = time.perf_counter()
          n = sum(b['x'].shape[0] for b in train.batches(epoch))
          rates.append(n / (time.perf_counter() - start))
        train.close()
        rows.append(dict(strong=strong, cache=cache, threads=threads, build=build,
                         rate=statistics.median(rates), rates=rates))
        print(f'  strong_augment={strong!s:5} cache={cache!s:5} threads={threads}: '
              f'{statistics.median(rates):8.0f} ex/s (epochs: '
              f'{", ".join(f"{r:.0f}" for r in rates)}), index {build:.2f} s', flush=True)
  c = config(args, False)
  test = data.make_eval_loader(c, 44100, args.input_length, num_threads=1)
  start = time.perf_counter()
  clips = sum(int(b['mask'].sum()) for b in test.batches())
  eval_rate = clips / (time.perf_counter() - start)
  return rows, eval_rate


def device_rows(args):
  """config.data_on_device: table build and the batches of K runs cut on the device."""
  import jax  # pylint: disable=g-import-not-at-top
  from intermix_jax import parallel  # pylint: disable=g-import-not-at-top
  rows, mesh = [], parallel.make_mesh()
  for strong in (False, True):
    for k in args.device_runs:
      loaders = []
      for fold in range(1, k + 1):
        c = config(args, strong)
        c.fold = fold
        loaders.append(data.make_train_loader(c, 44100, args.input_length, num_threads=0,
                                              cache_bytes=0))
      start = time.perf_counter()
      inputs = harness.device_inputs(loaders, mesh, loaders[0].pairs, k > 1)
      jax.block_until_ready(inputs.table)
      build = time.perf_counter() - start
      jax.block_until_ready(inputs.batch(0, 0))  # compile
      rates = []
      for epoch in range(args.epochs):
        start = time.perf_counter()
        n = 0
        for step in range(inputs.steps_per_epoch):
          jax.block_until_ready(inputs.batch(epoch, step))
          n += k * args.batch
        rates.append(n / (time.perf_counter() - start))
      rows.append(dict(strong=strong, runs=k, build=build, mib=inputs.table.nbytes / 2**20,
                       rate=statistics.median(rates)))
      print(f'  data_on_device strong_augment={strong!s:5} runs={k}: '
            f'{statistics.median(rates):8.0f} ex/s of all runs (epochs: '
            f'{", ".join(f"{r:.0f}" for r in rates)}), table {rows[-1]["mib"]:.0f} MiB built in '
            f'{build:.2f} s', flush=True)
  return rows


def step_rate(args):
  """(examples/s, median s, compile s) of the EnvNet-v2 InterMix train step at args.step_batch."""
  step = harness.build('envnetv2', args.strategy, batch=args.step_batch, num_classes=10)
  start = time.perf_counter()
  harness.timed_steps(step, 1)
  compile_s = time.perf_counter() - start
  median = statistics.median(harness.timed_steps(step, args.step_repeats))
  return args.step_batch / median, median, compile_s


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--manual_dir', default=os.path.join(os.path.dirname(REPO), 'shared', 'data',
                                                      'esc10'))
  p.add_argument('--data_dir', default='/tmp/intermix_jax_bench/tfds')
  p.add_argument('--input_length', type=int, default=66650)
  p.add_argument('--batch', type=int, default=64)
  p.add_argument('--strategy', default='intermix')
  p.add_argument('--epochs', type=int, default=3)
  p.add_argument('--threads', default='0,1,2', help='comma-separated background thread counts')
  p.add_argument('--no_step', action='store_true', help='skip the train-step measurement')
  p.add_argument('--step_batch', type=int, default=16)
  p.add_argument('--step_repeats', type=int, default=3)
  p.add_argument('--device_runs', default='',
                 help='comma-separated run counts for config.data_on_device rows (e.g. 1,5)')
  args = p.parse_args(argv)
  args.threads = [int(t) for t in args.threads.split(',')]
  args.device_runs = [int(k) for k in args.device_runs.split(',') if k]

  print(f'machine: {harness.machine()}')
  print('command: ' + ' '.join([os.path.basename(sys.executable), '-m', 'benchmarks.pipeline']
                               + sys.argv[1:]))
  start = time.perf_counter()
  builder = data.get_builder('esc10', 44100, data_dir=args.data_dir)
  was_prepared = builder.is_prepared()
  data.catalog.prepare_builder(builder, manual_dir=args.manual_dir)
  print(f'data: ESC-10 at 44.1 kHz in {args.data_dir} '
        f'({"reused" if was_prepared else f"prepared in {time.perf_counter() - start:.1f} s"}); '
        f'fold 1 test, 320 train clips, batch {args.batch} ({args.strategy}: pairs), '
        f'T = {args.input_length}')
  print('pipeline (examples/s over whole epochs):')
  rows, eval_rate = pipeline_rows(args)
  print(f'  eval loader: {eval_rate:.0f} clips/s (10 crops each, 1 thread)')
  print(harness.md_table(['strong augment', 'clips cached', 'threads', 'pipeline ex/s',
                          'index build (s)'],
                         [[r['strong'], r['cache'], r['threads'], f'{r["rate"]:.0f}',
                           f'{r["build"]:.2f}'] for r in rows]))
  if args.device_runs:
    print('config.data_on_device (batches cut on the device, each waited for):')
    print(harness.md_table(['strong augment', 'runs', 'ex/s of all runs', 'table (MiB)',
                            'table build (s)'],
                           [[r['strong'], r['runs'], f'{r["rate"]:.0f}', f'{r["mib"]:.0f}',
                             f'{r["build"]:.2f}'] for r in device_rows(args)]))
  if not args.no_step:
    rate, seconds, compile_s = step_rate(args)
    slowest = min(r['rate'] for r in rows)
    print()
    print(f'train step (EnvNet-v2 width 1.0, {args.strategy}, batch {args.step_batch}): '
          f'{seconds:.2f} s/step = {rate:.1f} ex/s (compile {compile_s:.1f} s); the slowest '
          f'pipeline setting above is {slowest / rate:.0f}x faster than the step consumes')


if __name__ == '__main__':
  main()
