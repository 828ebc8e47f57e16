"""A whole row of table 1 in one accelerator window: EnvNet-v2 on ESC-10, the four strategies x
five folds at the paper's protocol, each strategy's five folds as ONE program.

    python -m launch.device.table_row pack                         # HERE: ESC-10 -> .esc10_ogg
    python -m launch.device.table_row run --out OUT --scratch S --budget_s 540   # THERE (a GPU)
    STAGES="deps row" bash launch/device/accelerator_check.sh OUT  # the same, as a stage
    python -m launch.device.table_row run --cpu --out OUT --scratch S      # dry run, tiny

`pack` re-encodes the ESC-10 copy (official ESC-50 layout, 44.1 kHz WAV, 152 MiB) as Ogg Vorbis
into .esc10_ogg/ (about 17 MiB, git-ignored): small enough to travel to the device machine, whose
whole transfer is limited to 64 MB. This is a second lossy generation (the WAVs were decoded from
ESC-10's original OGG release), so errors measured from it are the protocol on slightly different
audio; the throughput is what this stage is for.

`run` decodes the pack back into an ESC-50 layout (int16 WAV) in --scratch, then trains, for each
strategy in turn, `configs/esc10.py:backbone=envnetv2,fold=all` with `stack_runs=True`,
`data_on_device=True` and `model.precision=bfloat16` (the five folds in one program, the clips on
the device, the crops cut inside the step), `stack_method=auto` (unrolled for EnvNet-v2 on a GPU:
vmapped it ran 3.3-3.6x slower on an H200) and checkpoints only every 1000 epochs (and at
SIGTERM). The dataset is prepared once first; then each strategy gets an equal share of what is
left of --budget_s; at the end of its share the trainer is sent SIGTERM (it saves every run and
writes results.json as 'preempted'). One JSON line per strategy in OUT/row.jsonl: status, steps reached
of the total, seconds, steps/s after the first logged step (compilation excluded), examples/s of
the five runs, the projected seconds for the whole protocol at that rate, and per-fold and
cross-validated errors when finished. The fold results.json files are copied to OUT/row/.
"""
from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

STRATEGIES = ('standard', 'bc', 'speechmix', 'intermix')
PACKED = os.path.join(ROOT, '.esc10_ogg')
SOURCE = os.path.join(os.path.dirname(ROOT), 'shared', 'data', 'esc10')
CPU_TINY = ('model.width=0.3,model.fc_units=32,batch_size=8,steps_per_epoch=2,num_epochs=1,'
            'num_eval_crops=2,eval_batch_size=8,eval_every_epochs=1,checkpoint_every_epochs=1,'
            'log_every_steps=1')
_PROGRESS = re.compile(r'step (\d+)/(\d+)')
# argv: the configs/esc10.py argument. Prepares config.dataset at the backbone's sample rate.
_PREPARE = '''
import sys
from configs import esc10
from intermix_jax import data, trained
config = esc10.get_config(sys.argv[1])
data.prepare(config, trained.build_model(config, data.dataset_info(config).num_classes).sample_rate)
'''


def cmd_pack(args) -> int:
  """ESC-50 layout (WAV) -> the same layout with Ogg Vorbis files, names kept with .ogg."""
  import soundfile as sf  # pylint: disable=g-import-not-at-top
  src_csv = os.path.join(args.source, 'meta', 'esc50.csv')
  if not os.path.exists(src_csv):
    print(f'{src_csv}: no ESC-50 layout to pack', file=sys.stderr)
    return 1
  os.makedirs(os.path.join(args.dest, 'audio'), exist_ok=True)
  os.makedirs(os.path.join(args.dest, 'meta'), exist_ok=True)
  shutil.copy(src_csv, os.path.join(args.dest, 'meta', 'esc50.csv'))
  total = 0
  with open(src_csv) as f:
    names = [row['filename'] for row in csv.DictReader(f)]
  for name in names:
    audio, rate = sf.read(os.path.join(args.source, 'audio', name), dtype='float32')
    out = os.path.join(args.dest, 'audio', os.path.splitext(name)[0] + '.ogg')
    sf.write(out, audio, rate, format='OGG', subtype='VORBIS')
    total += os.path.getsize(out)
  print(f'packed {len(names)} clips into {args.dest}: {total / 2**20:.1f} MiB')
  return 0


def unpack(packed: str, layout: str) -> int:
  """The pack -> an ESC-50 layout of int16 WAVs (the builder's input); returns clips written."""
  import soundfile as sf  # pylint: disable=g-import-not-at-top
  os.makedirs(os.path.join(layout, 'audio'), exist_ok=True)
  os.makedirs(os.path.join(layout, 'meta'), exist_ok=True)
  shutil.copy(os.path.join(packed, 'meta', 'esc50.csv'), os.path.join(layout, 'meta', 'esc50.csv'))
  n = 0
  for path in sorted(glob.glob(os.path.join(packed, 'audio', '*.ogg'))):
    audio, rate = sf.read(path, dtype='float32')
    name = os.path.splitext(os.path.basename(path))[0] + '.wav'
    sf.write(os.path.join(layout, 'audio', name), audio, rate, subtype='PCM_16')
    n += 1
  return n


def _train(cmd, log_path, env, stop_after_s):
  """Runs cmd; SIGTERM once stop_after_s have passed (it saves and exits). Returns (rc, seconds,
  [(time, step, total)] of the progress lines)."""
  start = time.perf_counter()
  progress, seen = [], 0
  with open(log_path, 'w') as log:
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    sent = False
    while proc.poll() is None:
      time.sleep(0.2)
      with open(log_path, errors='replace') as f:
        text = f.read()
      for m in _PROGRESS.finditer(text, seen):
        progress.append((time.perf_counter() - start, int(m.group(1)), int(m.group(2))))
        seen = m.end()
      if not sent and time.perf_counter() - start > stop_after_s:
        proc.send_signal(signal.SIGTERM)
        sent = True
    proc.wait()
  return proc.returncode, time.perf_counter() - start, progress


def _read(path):
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def cmd_run(args) -> int:
  start = time.perf_counter()
  layout = os.path.join(args.scratch, 'esc10_layout')
  if not os.path.exists(os.path.join(layout, 'meta', 'esc50.csv')):
    if not os.path.exists(os.path.join(args.packed, 'meta', 'esc50.csv')):
      print(f'{args.packed}: no packed ESC-10 (run `python -m launch.device.table_row pack` where '
            'the data is)', file=sys.stderr)
      return 1
    n = unpack(args.packed, layout)
    print(f'unpacked {n} clips into {layout} in {time.perf_counter() - start:.1f} s', flush=True)
  env = dict(os.environ)
  env.setdefault('JAX_COMPILATION_CACHE_DIR', os.path.join(args.scratch, 'jax_cache'))
  strategies = [s for s in args.strategies.split(',') if s]
  deadline = start + args.budget_s
  common = [f'backbone={args.backbone}', 'fold=all',
            f'data_dir={os.path.join(args.scratch, "tfds")}', f'manual_dir={layout}']
  # The TFDS build is the same for every strategy: done once here, outside their equal shares.
  t = time.perf_counter()
  prep = subprocess.run([sys.executable, '-c', _PREPARE, ','.join(common)],
                        cwd=ROOT, env=env, capture_output=True, text=True)
  if prep.returncode:
    print(f'preparing the dataset failed:\n{prep.stderr[-3000:]}', file=sys.stderr)
    return 1
  print(f'dataset prepared in {time.perf_counter() - t:.1f} s', flush=True)
  os.makedirs(os.path.join(args.out, 'row'), exist_ok=True)
  ok = True
  for i, strategy in enumerate(strategies):
    share = (deadline - time.perf_counter()) / (len(strategies) - i)
    workdir = os.path.join(args.scratch, 'row', strategy)
    overrides = common + [f'strategy={strategy}', f'model.precision={args.precision}',
                          f'checkpoint_every_epochs={args.checkpoint_every_epochs}']
    if args.cpu:
      overrides.append(CPU_TINY)
    cmd = [sys.executable, '-m', 'intermix_jax.main',
           '--config=configs/esc10.py:' + ','.join(overrides), f'--workdir={workdir}',
           '--config.stack_runs=True', '--config.data_on_device=True',
           f'--config.stack_method={args.stack_method}']
    rc, seconds, progress = _train(cmd, os.path.join(args.out, f'row_{strategy}.log'), env,
                                   max(share - args.grace_s, 1.0))
    folds = []
    for k in range(1, 6):
      r = _read(os.path.join(workdir, f'fold_{k}', 'results.json')) or {}
      folds.append(dict(fold=k, status=r.get('status'), step=r.get('step'),
                        final_error=r.get('final_error')))
      if r:
        dest = os.path.join(args.out, 'row', strategy, f'fold_{k}')
        os.makedirs(dest, exist_ok=True)
        shutil.copy(os.path.join(workdir, f'fold_{k}', 'results.json'), dest)
    cv = _read(os.path.join(workdir, 'cv_results.json')) or {}
    total = progress[-1][2] if progress else None
    rate = None
    if len(progress) >= 2 and progress[-1][0] > progress[0][0]:
      rate = (progress[-1][1] - progress[0][1]) / (progress[-1][0] - progress[0][0])
    batch = 8 if args.cpu else 64
    row = dict(backbone=args.backbone, strategy=strategy, precision=args.precision,
               runs=5, rc=rc, seconds=seconds, status=cv.get('status'),
               step=progress[-1][1] if progress else None, total_steps=total,
               first_logged_s=progress[0][0] if progress else None, steps_per_s=rate,
               examples_per_s=None if rate is None else rate * 5 * batch,
               projected_s=None if rate is None or total is None else total / rate,
               cv_error=cv.get('mean_error'), folds=folds, command=' '.join(['python'] + cmd[1:]))
    with open(os.path.join(args.out, 'row.jsonl'), 'a') as f:
      f.write(json.dumps(row) + '\n')
    print(f'{strategy}: exit {rc}, {cv.get("status")!r}, step {row["step"]} of {total} in '
          f'{seconds:.0f} s ({_fmt(rate, ".2f")} steps/s of 5 runs; the whole protocol would take '
          f'{_fmt(row["projected_s"], ".0f")} s), cv error {_fmt(row["cv_error"], ".2f")}',
          flush=True)
    ok &= rc == 0 and cv.get('status') in ('finished', 'preempted')
  return 0 if ok else 1


def _fmt(v, spec):
  return '-' if v is None else format(v, spec)


def table(rows: list[dict]) -> str:
  """Markdown table of row.jsonl rows."""
  out = ['| strategy | precision | status | steps done / total | seconds | steps/s (5 runs) | '
         'ex/s (5 runs) | whole protocol at that rate | cv error % |',
         '|---|---|---|---|---|---|---|---|---|']
  for r in rows:
    proj = r.get('projected_s')
    out.append(f'| {r["strategy"]} | {r["precision"]} | {r["status"]} | {r["step"]} / '
               f'{r["total_steps"]} | {r["seconds"]:.0f} | {_fmt(r["steps_per_s"], ".2f")} | '
               f'{_fmt(r["examples_per_s"], ".0f")} | '
               f'{"-" if proj is None else f"{proj / 60:.1f} min"} | '
               f'{_fmt(r["cv_error"], ".2f")} |')
  return '\n'.join(out)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  sub = p.add_subparsers(dest='cmd', required=True)
  a = sub.add_parser('pack')
  a.add_argument('--source', default=SOURCE, help='ESC-10 in the official ESC-50 layout')
  a.add_argument('--dest', default=PACKED)
  r = sub.add_parser('run')
  r.add_argument('--out', required=True)
  r.add_argument('--scratch', required=True)
  r.add_argument('--packed', default=PACKED)
  r.add_argument('--budget_s', type=float, default=540.0)
  r.add_argument('--grace_s', type=float, default=20.0,
                 help='seconds before a share ends at which SIGTERM is sent (saving takes time)')
  r.add_argument('--strategies', default=','.join(STRATEGIES))
  r.add_argument('--backbone', default='envnetv2')
  r.add_argument('--precision', default='bfloat16', choices=('bfloat16', 'float32'))
  r.add_argument('--stack_method', default='auto', choices=('vmap', 'unroll', 'auto'))
  r.add_argument('--checkpoint_every_epochs', type=int, default=1000,
                 help="ESC-10's default (10 epochs = 50 steps) saved 5 EnvNet-v2 states (about 4 GB, "
                      'written and read back) every 50 steps on an H200: 26 s of every 33 s. A '
                      'window saves at its SIGTERM instead')
  r.add_argument('--cpu', action='store_true', help='tiny sizes (a dry run of the stage)')
  args = p.parse_args(argv)
  if args.cmd == 'run':
    os.makedirs(args.out, exist_ok=True)
    os.makedirs(args.scratch, exist_ok=True)
  return dict(pack=cmd_pack, run=cmd_run)[args.cmd](args)


if __name__ == '__main__':
  sys.exit(main())
