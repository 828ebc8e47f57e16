"""The stages of `launch/device/accelerator_check.sh`, one subcommand each (the shell script runs
them in order, each under its own `timeout`, and passes the same --out folder to all). From the
repository root:

    python -m launch.device.accelerator_check deps --wheels .wheels --target /tmp/x  # install, verify
    python -m launch.device.accelerator_check steps --out OUT --backbone envnetv2     # one backbone
    python -m launch.device.accelerator_check pipeline --out OUT --data_dir D --backbones envnet,...
    python -m launch.device.accelerator_check demo --out OUT --data_dir D    # train, SIGTERM, resume
    python -m launch.device.accelerator_check profile --out OUT              # the K-run step, traced
    python -m launch.device.accelerator_check report --out OUT               # the table

Add --cpu to steps / pipeline / demo for the dry run's tiny sizes. Every stage appends what it
measured to a JSON file in --out as soon as it has it (a stage killed by its time box keeps the rows
it finished); `report` reads them all, with the stage statuses the shell script wrote
(stages.tsv), and prints and writes `accelerator_check.md`.

Precisions of the step table: 'float32' is float32 compute with jax_default_matmul_precision =
'float32' (full float32 products); 'tf32' is float32 compute at the backend's default matmul
precision (TF32 tensor cores on NVIDIA Ampere and later; on a CPU the same as float32);
'bfloat16' is `model.precision='bfloat16'` (models/layers.py). MFU = the step's XLA FLOPs (cost
analysis of the compiled step) / step time / the matmul rate measured in the same process with the
same precision (a square `jnp.dot`, best of 5). Steps are built, timed and costed by
`benchmarks.harness`, as every benchmark's. `deps` runs before the wheels are in place: it imports
neither JAX nor the project.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import glob
import importlib.metadata
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PRECISIONS = ('bfloat16', 'tf32', 'float32')  # measured in this order (the time box may cut it)
# Modules the project imports that the accelerator machine may lack (launch/device/fetch_wheels.sh)
PROJECT_MODULES = ('tensorflow_datasets', 'grain', 'array_record', 'ml_collections', 'soundfile',
                   'soxr')
PREINSTALLED = ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'chex', 'numpy', 'scipy')


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M:%S UTC')


def _append_jsonl(path: str, row: dict) -> None:
  with open(path, 'a') as f:
    f.write(json.dumps(row) + '\n')


def _read_jsonl(path: str) -> list:
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def _norm(name: str) -> str:
  return re.sub(r'[-_.]+', '-', name).lower()


def _backbones() -> tuple:
  """The backbones, `models.MODELS` (imported on use: `deps` and `report` run without JAX)."""
  from intermix_jax import models  # pylint: disable=g-import-not-at-top
  return tuple(models.MODELS)


def _backbone(name: str) -> str:
  """argparse type of --backbone: a name of `models.MODELS`."""
  if name not in _backbones():
    raise argparse.ArgumentTypeError(
        f"invalid choice: {name!r} (choose from {', '.join(map(repr, _backbones()))})")
  return name


def _backbone_list(names: str) -> list:
  """argparse type of --backbones: comma-separated names of `models.MODELS`."""
  return [_backbone(name) for name in names.split(',')]


# ------------------------------------------------------------------------------------------------
# deps
# ------------------------------------------------------------------------------------------------
def _wheel_distribution(path: str) -> str:
  """The distribution name of a wheel file (its file name's first field, normalised)."""
  return _norm(os.path.basename(path).split('-')[0])


def _unzip_wheel(path: str, target: str) -> None:
  """What `pip install --no-deps --target` does with a wheel, for a machine without pip."""
  with zipfile.ZipFile(path) as z:
    for name in z.namelist():
      parts = name.split('/')
      if parts[0].endswith('.data') and len(parts) > 2 and parts[1] in ('purelib', 'platlib'):
        dest = os.path.join(target, *parts[2:])
      elif parts[0].endswith('.data'):
        continue  # scripts, headers: not needed to import
      else:
        dest = os.path.join(target, *parts)
      if name.endswith('/'):
        continue
      os.makedirs(os.path.dirname(dest), exist_ok=True)
      with z.open(name) as src, open(dest, 'wb') as out:
        out.write(src.read())
      info = z.getinfo(name)
      mode = (info.external_attr >> 16) & 0o777
      if mode:
        os.chmod(dest, mode)


def cmd_deps(args) -> int:
  """Installs the wheels whose distributions this interpreter lacks; verifies the imports."""
  installed = {_norm(d.metadata['Name'] or ''): d.version for d in importlib.metadata.distributions()}
  wheels = sorted(glob.glob(os.path.join(args.wheels, '*.whl'))) if args.wheels else []
  need = [w for w in wheels if _wheel_distribution(w) not in installed]
  print(f'python {platform.python_version()} ({sys.executable}); {len(wheels)} wheels in '
        f'{args.wheels}; already installed: '
        + (', '.join(f'{_wheel_distribution(w)} {installed[_wheel_distribution(w)]}'
                     for w in wheels if w not in need) or 'none'))
  if need:
    os.makedirs(args.target, exist_ok=True)
    print(f'installing {len(need)} into {args.target}: '
          + ', '.join(os.path.basename(w) for w in need), flush=True)
    has_pip = subprocess.call([sys.executable, '-m', 'pip', '--version'],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) == 0
    if has_pip:
      rc = subprocess.call([sys.executable, '-m', 'pip', 'install', '--quiet', '--no-index',
                            '--no-deps', '--disable-pip-version-check', '--target', args.target]
                           + need)
      if rc:
        print(f'pip install failed ({rc})')
        return rc
    else:
      print('no pip: unpacking the wheels')
      for w in need:
        _unzip_wheel(w, args.target)
  # Verify in a fresh interpreter with the PYTHONPATH the later stages use.
  env = dict(os.environ)
  env['PYTHONPATH'] = os.pathsep.join(p for p in (args.target, ROOT, env.get('PYTHONPATH', '')) if p)
  code = ('import importlib, sys\n'
          f'mods = {PROJECT_MODULES + ("intermix_jax.data", "intermix_jax.train")!r}\n'
          'bad = []\n'
          'for m in mods:\n'
          '  try:\n'
          '    importlib.import_module(m)\n'
          '  except Exception as e:\n'
          '    bad.append(f"{m}: {type(e).__name__}: {e}")\n'
          'print("imports:", "ok" if not bad else "FAILED"); [print("  " + b) for b in bad]\n'
          'sys.exit(1 if bad else 0)\n')
  rc = subprocess.call([sys.executable, '-c', code], env=env)
  if os.path.isdir(args.target):  # so that importlib.metadata sees what was installed there
    sys.path.insert(0, args.target)
    importlib.invalidate_caches()
  versions = {}
  for name in PREINSTALLED + tuple(_norm(m) for m in PROJECT_MODULES):
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = None
  print('versions: ' + ', '.join(f'{k} {v}' for k, v in versions.items()))
  with open(os.path.join(args.out, 'deps.json'), 'w') as f:
    json.dump(dict(python=platform.python_version(), installed=[os.path.basename(w) for w in need],
                   versions=versions, imports_ok=rc == 0), f, indent=1)
  return rc


# ------------------------------------------------------------------------------------------------
# steps
# ------------------------------------------------------------------------------------------------
def _precision_context(precision: str):
  import jax  # pylint: disable=g-import-not-at-top
  if precision == 'float32':
    return jax.default_matmul_precision('float32')
  return contextlib.nullcontext()


def matmul_rates(n: int, repeats: int = 5) -> dict:
  """TFLOP/s of an n x n x n `jnp.dot` per precision (best of `repeats` after a warm-up)."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from benchmarks import harness  # pylint: disable=g-import-not-at-top
  rates = {}
  for precision in PRECISIONS:
    dtype = jnp.bfloat16 if precision == 'bfloat16' else jnp.float32
    with _precision_context(precision):
      rates[precision] = harness.matmul_rate(n, repeats, dtype) / 1e3
  return rates


def _device_peak_bytes():
  import jax  # pylint: disable=g-import-not-at-top
  try:
    stats = jax.local_devices()[0].memory_stats()
  except Exception:  # pylint: disable=broad-except
    stats = None
  return (stats or {}).get('peak_bytes_in_use')


def bench_step(backbone: str, strategy: str, precision: str, batch: int, repeats: int,
               width: float, fc_units, num_classes: int = 50) -> dict:
  """Compile and time the trainer's one-run step (`harness.build`: `steps.mesh_train_step` on a
  1-device mesh, what train.py runs) for one configuration."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from benchmarks import harness  # pylint: disable=g-import-not-at-top
  with _precision_context(precision):
    step = harness.build(backbone, strategy, batch=batch, width=width, fc_units=fc_units,
                         precision='bfloat16' if precision == 'bfloat16' else 'float32',
                         num_classes=num_classes)
    start = time.perf_counter()
    lowered = step.fn.lower(step.state, step.data, step.key)
    lower_s = time.perf_counter() - start
    compiled = lowered.compile()
    compile_s = time.perf_counter() - start
  step.fn = compiled
  harness.loop_seconds(step, 2)
  times = harness.timed_steps(step, repeats)
  loop_s, metrics = harness.loop_seconds(step, repeats)  # back to back, as the trainer runs
  loss = float(metrics['loss'])
  row = dict(backbone=backbone, strategy=strategy, precision=precision, batch=batch,
             width=width, fc_units=fc_units, lower_s=lower_s, compile_s=compile_s,
             flops=float(harness.cost_of(compiled).get('flops', float('nan'))),
             median_s=statistics.median(times), min_s=min(times), loop_s=loop_s,
             examples_per_s=batch / loop_s, xla_bytes=harness.memory_bytes(compiled),
             device_peak_bytes=_device_peak_bytes(), loss=loss, finite=bool(np.isfinite(loss)),
             repeats=repeats)
  del step, compiled, lowered
  harness.clear()
  return row


def cmd_steps(args) -> int:
  import jax  # pylint: disable=g-import-not-at-top
  from benchmarks.harness import load  # pylint: disable=g-import-not-at-top
  out = os.path.join(args.out, 'steps.jsonl')
  device = jax.local_devices()[0]
  print(f'# {args.backbone}: device {device.device_kind} ({jax.default_backend()}), jax '
        f'{jax.__version__}; batch {args.batch}, width {args.width}, fc_units {args.fc_units}; '
        f'load {load()}', flush=True)
  rates = matmul_rates(args.matmul_n)
  print('# matmul peak (TFLOP/s, n=%d): %s' % (args.matmul_n, ', '.join(
      f'{p} {r:.3g}' for p, r in rates.items())), flush=True)
  failures = 0
  for strategy in args.strategies.split(','):
    for precision in args.precisions.split(','):
      try:
        row = bench_step(args.backbone, strategy, precision, args.batch, args.repeats, args.width,
                         args.fc_units)
      except Exception as e:  # pylint: disable=broad-except
        failures += 1
        row = dict(backbone=args.backbone, strategy=strategy, precision=precision,
                   batch=args.batch, error=f'{type(e).__name__}: {e}'[:500])
        print(f'  {strategy} {precision}: FAILED {row["error"]}', flush=True)
      else:
        row['matmul_tflops'] = rates[precision]
        row['mfu'] = row['flops'] / row['loop_s'] / (rates[precision] * 1e12)
        print(f'  {strategy:9s} {precision:9s} compile {row["compile_s"]:6.1f} s, step '
              f'{row["median_s"] * 1e3:8.2f} ms (loop {row["loop_s"] * 1e3:.2f} ms), '
              f'{row["examples_per_s"]:9.1f} ex/s, {row["flops"] / 1e9:8.4g} GFLOP, MFU '
              f'{100 * row["mfu"]:5.1f} %, loss {row["loss"]:.3f}', flush=True)
      row.update(device=device.device_kind, backend=jax.default_backend(), time=_now())
      _append_jsonl(out, row)
  return 1 if failures else 0


# ------------------------------------------------------------------------------------------------
# pipeline
# ------------------------------------------------------------------------------------------------
def _synthetic_config(data_dir: str, batch: int, strategy: str = 'intermix'):
  from intermix_jax import config_lib  # pylint: disable=g-import-not-at-top
  c = config_lib.base_config()
  c.dataset, c.data_dir, c.fold, c.strategy, c.batch_size = 'synthetic', data_dir, 1, strategy, batch
  return c


def cmd_pipeline(args) -> int:
  """Training examples/s of the input pipeline per backbone (its rate and crop length)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from intermix_jax import data, models  # pylint: disable=g-import-not-at-top
  tfds.disable_progress_bar()
  out = os.path.join(args.out, 'pipeline.jsonl')
  cores = os.cpu_count() or 1
  threads = sorted({1, cores})
  for backbone in args.backbones or _backbones():
    model = models.MODELS[backbone]
    c = _synthetic_config(args.data_dir, args.batch)
    start = time.perf_counter()
    data.prepare(c, model.sample_rate)
    prepare_s = time.perf_counter() - start
    for n in threads:
      loader = data.make_train_loader(c, model.sample_rate, model.input_length, num_threads=n)
      rates = []
      for epoch in range(args.epochs):
        start = time.perf_counter()
        count = sum(b['x'].shape[0] for b in loader.batches(epoch))
        rates.append(count / (time.perf_counter() - start))
      loader.close()
      row = dict(backbone=backbone, sample_rate=model.sample_rate,
                 input_length=model.input_length, threads=n, cores=cores, batch=args.batch,
                 examples_per_s=statistics.median(rates), epochs=args.epochs,
                 train_clips=loader.num_examples, prepare_s=prepare_s, time=_now())
      _append_jsonl(out, row)
      print(f'  {backbone:9s} {model.sample_rate} Hz x {model.input_length}: {n:2d} thread(s) '
            f'{row["examples_per_s"]:9.0f} ex/s (epochs: {", ".join(f"{r:.0f}" for r in rates)})'
            f'; data prepared in {prepare_s:.1f} s', flush=True)
  return 0


# ------------------------------------------------------------------------------------------------
# demo: a real training run, SIGTERM mid-run, resume
# ------------------------------------------------------------------------------------------------
_PROGRESS = re.compile(r'step (\d+)/(\d+) \|')


def _run_main(cmd, log_path, env, stop_at_step=None, timeout=None):
  """Runs `cmd`, logging to log_path; sends SIGTERM once a progress line reaches stop_at_step.

  Returns (exit code, step at which SIGTERM was sent or None, seconds).
  """
  start = time.perf_counter()
  with open(log_path, 'w') as log:
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    sent = None
    while proc.poll() is None:
      time.sleep(0.1)
      if timeout and time.perf_counter() - start > timeout:
        proc.kill()
        break
      if stop_at_step is not None and sent is None:
        with open(log_path) as f:
          steps_seen = [int(m.group(1)) for m in _PROGRESS.finditer(f.read())]
        if steps_seen and steps_seen[-1] >= stop_at_step:
          sent = steps_seen[-1]
          proc.send_signal(signal.SIGTERM)
    proc.wait()
  return proc.returncode, sent, time.perf_counter() - start


def cmd_demo(args) -> int:
  """configs/demo.py to completion with a SIGTERM in the middle and a resume; results.json."""
  workdir = os.path.join(args.workdir, f'demo_{args.precision}')
  if os.path.exists(workdir):
    import shutil  # pylint: disable=g-import-not-at-top
    shutil.rmtree(workdir)
  overrides = [f'data_dir={args.data_dir}', f'model.precision={args.precision}']
  if args.cpu:  # tiny (tests/test_reliability's runs): 2 epochs (x2 for mixing) of 3 steps of 8
    # clips, every step logged, 2 crops per test clip
    overrides += ['model.fc_units=32', 'batch_size=8', 'steps_per_epoch=3', 'num_epochs=2',
                  'num_eval_crops=2', 'eval_batch_size=20', 'eval_every_epochs=2',
                  'checkpoint_every_epochs=1', 'log_every_steps=1']
  cmd = [sys.executable, '-m', 'intermix_jax.main',
         '--config=configs/demo.py:' + ','.join(overrides), f'--workdir={workdir}']
  env = dict(os.environ)
  env.setdefault('JAX_COMPILATION_CACHE_DIR', os.path.join(args.workdir, 'jax_cache'))
  stop_at = args.sigterm_at_step
  rc1, sent, t1 = _run_main(cmd, os.path.join(args.out, f'demo_{args.precision}_part1.log'), env,
                            stop_at_step=stop_at)
  results_path = os.path.join(workdir, 'results.json')

  def results():
    try:
      with open(results_path) as f:
        return json.load(f)
    except (OSError, ValueError):
      return {}

  first = results()
  rc2, _, t2 = _run_main(cmd, os.path.join(args.out, f'demo_{args.precision}_part2.log'), env)
  final = results()
  history = final.get('history', [])
  row = dict(precision=args.precision, command=' '.join(['python'] + cmd[1:]),
             first_rc=rc1, sigterm_at_step=sent, first_status=first.get('status'),
             second_rc=rc2, status=final.get('status'), final_error=final.get('final_error'),
             epochs=len(history),
             test_errors={h['epoch']: h['test_error'] for h in history
                          if isinstance(h, dict) and h.get('test_error') is not None
                          and 'epoch' in h},
             first_s=t1, second_s=t2, wall_time_s=final.get('wall_time_s'), time=_now())
  _append_jsonl(os.path.join(args.out, 'demo.jsonl'), row)
  for name in ('results.json', 'config.json'):
    if os.path.exists(os.path.join(workdir, name)):
      with open(os.path.join(workdir, name)) as src, \
          open(os.path.join(args.out, f'demo_{args.precision}_{name}'), 'w') as dst:
        dst.write(src.read())
  ok = (rc1 == 0 and rc2 == 0 and sent is not None and first.get('status') == 'preempted'
        and final.get('status') == 'finished' and final.get('final_error') is not None)
  print(f'demo ({args.precision}): SIGTERM at step {sent} -> exit {rc1}, results.json '
        f'{first.get("status")!r}; rerun -> exit {rc2}, {final.get("status")!r}, final error '
        f'{final.get("final_error")} % after {len(history)} epochs ({t1:.0f} s + {t2:.0f} s): '
        f'{"ok" if ok else "FAILED"}', flush=True)
  return 0 if ok else 1


# ------------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------------
def _fmt(v, spec, none='-'):
  return none if v is None else format(v, spec)


def cmd_report(args) -> int:
  lines = []
  say = lines.append
  meta = {}
  if os.path.exists(os.path.join(args.out, 'meta.json')):
    with open(os.path.join(args.out, 'meta.json')) as f:
      meta = json.load(f)
  say(f'# Accelerator check ({meta.get("mode", "?")} mode), {meta.get("date", _now())}')
  say('')
  say(f'machine: {meta.get("machine", "?")}; command: `{meta.get("command", "?")}`')
  deps = {}
  if os.path.exists(os.path.join(args.out, 'deps.json')):
    with open(os.path.join(args.out, 'deps.json')) as f:
      deps = json.load(f)
  if deps:
    say(f'python {deps.get("python")}; ' + ', '.join(
        f'{k} {v}' for k, v in deps.get('versions', {}).items()) + '; installed from .wheels: '
        + (', '.join(_wheel_distribution(w) for w in deps.get('installed', [])) or 'none'))
  say('')
  say('| stage | status | seconds | limit s |')
  say('|---|---|---|---|')
  stages_path, ran = os.path.join(args.out, 'stages.tsv'), set()
  if os.path.exists(stages_path):
    with open(stages_path) as f:
      for name, rc, secs, limit in csv.reader(f, delimiter='\t'):
        ran.add(name.split('-')[0])  # steps-envnet -> steps
        status = {'0': 'ok', '124': 'TIME BOX', '137': 'KILLED'}.get(rc, f'FAILED ({rc})')
        say(f'| {name} | {status} | {secs} | {limit} |')
  rows = _read_jsonl(os.path.join(args.out, 'steps.jsonl'))
  if rows or 'steps' in ran:  # a window whose STAGES left the steps out: no empty table
    say('')
    say('Train step (`steps.mesh_train_step` on one device, state donated, batch on the device; '
        'step = median of '
        'blocked steps, ex/s from back-to-back steps; GFLOP = XLA cost analysis of the compiled '
        'step; MFU against the same-precision matmul rate measured in the same process; XLA MiB = '
        'arguments + outputs + temporaries of the compiled step; peak MiB = the device allocator\'s '
        'peak in the backbone\'s process so far):')
    say('')
    say('| backbone | strategy | precision | batch | compile s | step ms | ex/s | GFLOP | TFLOP/s '
        '| matmul TFLOP/s | MFU | XLA MiB | peak MiB | loss |')
    say('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|')
    for r in rows:
      if 'error' in r:
        say(f'| {r["backbone"]} | {r["strategy"]} | {r["precision"]} | {r["batch"]} | FAILED: '
            f'{r["error"][:120]} |||||||||')
        continue
      mib = lambda b: None if b is None else b / 2**20
      say(f'| {r["backbone"]} | {r["strategy"]} | {r["precision"]} | {r["batch"]} | '
          f'{r["compile_s"]:.1f} | {r["median_s"] * 1e3:.2f} | {r["examples_per_s"]:.1f} | '
          f'{r["flops"] / 1e9:.4g} | {r["flops"] / r["loop_s"] / 1e12:.3g} | '
          f'{r["matmul_tflops"]:.3g} | {100 * r["mfu"]:.1f}% | {_fmt(mib(r["xla_bytes"]), ".0f")} | '
          f'{_fmt(mib(r["device_peak_bytes"]), ".0f")} | {r["loss"]:.3f} |')
    measured = {(r['backbone'], r['strategy'], r['precision']) for r in rows if 'error' not in r}
    wanted = meta.get('step_configs', [])
    missing = [c for c in wanted if tuple(c) not in measured
               and not any((r['backbone'], r['strategy'], r['precision']) == tuple(c) for r in rows)]
    if missing:
      say('')
      say('Not reached (time box): ' + ', '.join('/'.join(c) for c in missing))
  pipe = _read_jsonl(os.path.join(args.out, 'pipeline.jsonl'))
  if pipe:
    say('')
    say('Input pipeline (synthetic clips, the trainer\'s TrainLoader, batch of pairs) against the '
        'step\'s consumption (fastest measured precision, InterMix):')
    say('')
    say('| backbone | rate Hz x samples | threads | pipeline ex/s | step ex/s | ratio | feeds it |')
    say('|---|---|---|---|---|---|---|')
    for p in pipe:
      step = [r['examples_per_s'] for r in rows if 'error' not in r
              and r['backbone'] == p['backbone'] and r['strategy'] == 'intermix']
      best = max(step) if step else None
      ratio = None if best is None else p['examples_per_s'] / best
      feeds = '?' if ratio is None else ('yes' if ratio >= 1.2 else 'NO')
      say(f'| {p["backbone"]} | {p["sample_rate"]} x {p["input_length"]} | {p["threads"]} of '
          f'{p["cores"]} | {p["examples_per_s"]:.0f} | {_fmt(best, ".0f")} | '
          f'{_fmt(ratio, ".2f")} | {feeds} |')
  demo = _read_jsonl(os.path.join(args.out, 'demo.jsonl'))
  if demo:
    say('')
    say('Training run (configs/demo.py: synthetic sounds, EnvNet width 0.25, InterMix), SIGTERM '
        'mid-run, then the same command again:')
    say('')
    say('| precision | SIGTERM at step | first exit / status | rerun exit / status | epochs | '
        'test error by epoch | final error % | seconds |')
    say('|---|---|---|---|---|---|---|---|')
    for d in demo:
      errors = ' '.join(f'{k}: {v:.1f}' for k, v in d['test_errors'].items())
      say(f'| {d["precision"]} | {d["sigterm_at_step"]} | {d["first_rc"]} / {d["first_status"]} | '
          f'{d["second_rc"]} / {d["status"]} | {d["epochs"]} | {errors} | '
          f'{_fmt(d["final_error"], ".2f")} | {d["first_s"]:.0f} + {d["second_s"]:.0f} |')
  multi = _read_jsonl(os.path.join(args.out, 'multirun.jsonl'))
  if multi:
    from benchmarks import multirun  # pylint: disable=g-import-not-at-top
    say('')
    say('Runs in one program (`steps.mesh_train_step(..., stack=)`, K runs of one vmapped step, batch per '
        'run on the device; "x one run" = examples/s of all K runs over `steps.mesh_train_step` '
        'of one run alone):')
    say('')
    say(multirun.table(multi))
  prof = _read_jsonl(os.path.join(args.out, 'profile.jsonl'))
  if prof:
    from benchmarks import multirun, roofline  # pylint: disable=g-import-not-at-top,reimported
    say('')
    say('The K-run step against its memory floor (profile stage: InterMix, one run alone and K '
        'runs in one program, PiczakCNN vmapped, EnvNet-v2 unrolled; benchmarks.roofline at the '
        f'H200\'s {roofline.H200_TBPS} TB/s; device time by kernel in profile/<row>.kernels.txt):')
    say('')
    say(multirun.table(prof))
    say('')
    say(roofline.table(roofline.analyse(prof, roofline.H200_TBPS), roofline.H200_TBPS))
    kernel_lines = kernel_summaries(args.out)
    if kernel_lines:
      say('')
      say('Which kernels hold each traced step back (`benchmarks.profile_step kernels`: device '
          'time per step by kernel class, then the top kernels; ms per step):')
      for line in kernel_lines:
        say(line)
  ab = _read_jsonl(os.path.join(args.out, 'envnet_ab.jsonl'))
  if ab:
    from benchmarks import envnet_ab  # pylint: disable=g-import-not-at-top
    say('')
    say('EnvNet-v2 forward-pass variants (envnet_ab stage, `python -m benchmarks.envnet_ab`: the '
        'InterMix train step per `models.accel_ops` variant, the same function of the same '
        'parameters; useful TFLOP/s = the plain program\'s FLOPs / step time):')
    say('')
    say(envnet_ab.table(ab))
  row = _read_jsonl(os.path.join(args.out, 'row.jsonl'))
  if row:
    from launch.device import table_row  # pylint: disable=g-import-not-at-top
    say('')
    say('A row of table 1 (launch/device/table_row.py: each strategy\'s five folds in one program, '
        'stack_runs + data_on_device; SIGTERM at the end of each strategy\'s share of the time '
        'box; steps/s after the first logged step):')
    say('')
    say(table_row.table(row))
  text = '\n'.join(lines) + '\n'
  print(text)
  with open(os.path.join(args.out, 'accelerator_check.md'), 'w') as f:
    f.write(text)
  return 0


def cmd_profile(args) -> int:
  """Where the step's time goes: --backbone's InterMix step, one run alone and K runs in one
  program (--method: PiczakCNN's 20 runs vmapped, issue 17's open question; EnvNet-v2's five folds
  unrolled in bfloat16, the program of the table-1 row), for each --variants entry precision:batch
  in order (the time box may cut the list); rows to profile.jsonl, the first `--traced` variants
  traced into profile/<row>/ with each trace's device time by kernel and by kernel class in
  profile/<row>.kernels.txt (`benchmarks.profile_step kernels`) and the compiled step's
  instructions by bytes moved in profile/<row>.bytes.txt (`profile_step bytes`)."""
  from benchmarks import multirun, profile_step  # pylint: disable=g-import-not-at-top
  traces = os.path.join(args.out, 'profile')
  new = []
  for i, variant in enumerate(args.variants.split(',')):
    precision, batch = variant.split(':')
    for k in [None] + [int(k) for k in args.ks.split(',')]:
      row = multirun.bench(args.backbone, 'intermix', k, batch=int(batch), repeats=args.repeats,
                           width=args.width, fc_units=args.fc_units or None, precision=precision,
                           method=args.method, profile_dir=traces if i < args.traced else None)
      _append_jsonl(os.path.join(args.out, 'profile.jsonl'), row)
      print(f'{_now()} {args.backbone} {precision} batch {batch} runs='
            f'{k or "alone"}{"" if k is None else " " + args.method}: '
            f'{1e3 * row["step_s"]:.2f} ms, {row["examples_per_s"]:.0f} ex/s', flush=True)
      if i < args.traced:
        new.append(f'{args.backbone}_intermix_{"alone" if k is None else k}_'
                   f'{args.method if k else "one"}_{precision}_b{batch}')
  for tag in new:  # this invocation's traces (multirun.bench's folder names)
    d = os.path.join(traces, tag)
    if not os.path.exists(os.path.join(d, 'meta.json')):
      continue
    with open(d + '.kernels.txt', 'w') as f, contextlib.redirect_stdout(f):
      profile_step.kernels(argparse.Namespace(dir=d, top=args.top))
    with open(d + '.bytes.txt', 'w') as f, contextlib.redirect_stdout(f):
      profile_step.cmd_bytes(argparse.Namespace(hlo=os.path.join(d, 'step.hlo.txt'), top=args.top))
  return 0


def kernel_summaries(out: str, top: int = 8) -> list:
  """Report lines: per traced row (profile/<row>.kernels.txt) its device time by kernel class and
  its `top` kernels, the part of the report that says which kernels hold each step back."""
  lines = []
  for path in sorted(glob.glob(os.path.join(out, 'profile', '*.kernels.txt'))):
    with open(path) as f:
      text = f.read().splitlines()
    head = [l for l in text if l.startswith('# ') and not l.startswith('# track')][:1]
    classes = [l[len('# class '):] for l in text if l.startswith('# class ')]
    table = [l for l in text if not l.startswith('#')][:top + 1]
    what = head[0].split(': ', 1)[-1] if head else ''  # '# <dir>: <backbone> ... traced steps'
    lines += ['', f'`{os.path.basename(path)}`: {what}', '']
    lines += [f'- {c}' for c in classes] + ['', '```'] + table + ['```']
  return lines


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  sub = p.add_subparsers(dest='cmd', required=True)
  d = sub.add_parser('deps')
  d.add_argument('--wheels', default=os.path.join(ROOT, '.wheels'))
  d.add_argument('--target', required=True)
  s = sub.add_parser('steps')
  s.add_argument('--backbone', required=True, type=_backbone, help='a name of models.MODELS')
  s.add_argument('--strategies', default='intermix,standard')
  s.add_argument('--precisions', default=','.join(PRECISIONS))
  s.add_argument('--batch', type=int, default=64)
  s.add_argument('--repeats', type=int, default=10)
  s.add_argument('--width', type=float, default=1.0)
  s.add_argument('--fc_units', type=int, default=None)
  s.add_argument('--matmul_n', type=int, default=8192)
  q = sub.add_parser('pipeline')
  q.add_argument('--backbones', type=_backbone_list, default=None,
                 help='comma-separated names of models.MODELS (default: all)')
  q.add_argument('--data_dir', required=True)
  q.add_argument('--batch', type=int, default=64)
  q.add_argument('--epochs', type=int, default=4)
  m = sub.add_parser('demo')
  m.add_argument('--data_dir', required=True)
  m.add_argument('--workdir', required=True, help='scratch folder for the run (not --out)')
  m.add_argument('--precision', default='float32', choices=('float32', 'bfloat16'))
  m.add_argument('--sigterm_at_step', type=int, default=60)
  m.add_argument('--cpu', action='store_true', help='tiny run (1 epoch x2)')
  f = sub.add_parser('profile')
  f.add_argument('--variants', default='float32:64,bfloat16:64,float32:256',
                 help='precision:batch per run, in order')
  f.add_argument('--backbone', default='piczakcnn', type=_backbone, help='a name of models.MODELS')
  f.add_argument('--method', default='vmap', choices=('vmap', 'unroll'),
                 help='how the K runs share the program (the stack option of steps.mesh_train_step)')
  f.add_argument('--ks', default='20', help='runs in one program (besides one run alone)')
  f.add_argument('--traced', type=int, default=2, help='trace the first this many variants')
  f.add_argument('--width', type=float, default=1.0)
  f.add_argument('--fc_units', type=int, default=0, help='0: the published size')
  f.add_argument('--repeats', type=int, default=20)
  f.add_argument('--top', type=int, default=40, help='kernels listed per trace')
  sub.add_parser('report')
  for q_ in (d, s, q, m, f, sub.choices['report']):
    q_.add_argument('--out', required=True)
  args = p.parse_args(argv)
  os.makedirs(args.out, exist_ok=True)
  return dict(deps=cmd_deps, steps=cmd_steps, pipeline=cmd_pipeline, demo=cmd_demo,
              profile=cmd_profile, report=cmd_report)[args.cmd](args)


if __name__ == '__main__':
  sys.exit(main())
