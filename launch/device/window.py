"""The accelerator-window plan: one command that any session drawing a window runs. It trains the
next unfinished items of the plan, each to the end inside the one device call, and brings back
only finished runs; a second command here commits them under results/<study>/.

    python -m launch.device.window plan                # HERE: what is done, what is next, costs
    bash launch/device/window.sh "$OUT"                # THERE: the one command (one device call)
    python -m launch.device.window collect FILES_AT    # HERE: into results/<study>/..., committed
    bash launch/device/window.sh --cpu OUT             # HERE: the dry run, tiny sizes

The plan, in order (`PLAN`; an item = one strategy's runs stacked in ONE program, `stack_runs`,
`data_on_device`, checkpoints only at the end):
  (a) EnvNet-v2 on ESC-10 at the protocol, standard and InterMix, five folds each (bfloat16,
      unrolled: results/esc10_envnetv2_gpu/envnetv2/<strategy>/seed0/fold<k>/);
  (b) EnvNet-v2 BC (independent pairs, its reference code's and now its default) and SpeechMix;
  (c) the PiczakCNN ESC-10 study (results/esc10_protocol) on the GPU, seeds 0-2 x 5 folds = 15
      runs per program, into results/esc10_protocol_gpu/piczakcnn/<folder>/seed<s>/fold<k>/:
      standard, InterMix, SpeechMix, BC with independent pairs (`bc-independent-pairs`) and BC
      with shared pairs (`bc-shared-pairs`, the scheme of the CPU study's seed-0 BC runs); float32
      parameters at the platform's default matmul precision (TF32 on NVIDIA), vmapped (auto).

`run` (on the device; started by window.sh after the wheels are installed) reads what is done from
the results tree it travelled with (a run is done when its results.json there says finished),
then takes the items in plan order: the next unfinished one first, then any later one that still
fits; an item whose estimate (`estimate`: the measured rates below, or a later window's on the
same card) does not fit in what is left of --budget_s is not started. While an item trains, its
progress lines give its wall rate; once the projected end passes the deadline it is stopped (its
checkpoints could not come home anyway: 5 EnvNet-v2 states are 4 GB against the call's 64 MB) and
the rate is recorded for the next plan. Each finished item is packed at once into OUT/<item>.tgz
(its results.json files, the trainer's log, item.json); OUT/window.json (card, versions, the code's
fingerprint, the command, per item its timings and rates) is rewritten after every item, so a
call stopped at its limit still returns what finished. At most 8 files come back from a call, no
more than 2 folders down: hence the archives (6 items at most per call).

`collect` (here) unpacks FILES_AT's archives, checks every results.json (finished; backbone,
strategy, method, fold and seed as the item says) and copies it to
results/<study>/<backbone>/<folder>/seed<s>/fold<f>/results.json (a finished file already there is
kept), fills versions.git_commit (the device's copy has no .git) with the commit whose files equal
the code's fingerprint, writes results/<study>/windows/<window>.json and a row of
results/<study>/windows/README.md, and commits those paths only.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import glob
import hashlib
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

from launch.device import table_row

ROOT = table_row.ROOT
RESULTS = os.path.join(ROOT, 'results')
FOLDS = 5              # ESC-10's official folds
EPOCHS = 600           # ESC-10 protocol (docs/method.md §5), EnvNet-v2 and PiczakCNN alike
STEPS_PER_EPOCH = 5    # 320 training clips / batch 64
EVAL_EVERY_EPOCHS = 50  # configs' default
CHECKPOINT_EVERY_EPOCHS = 100000  # never periodic: at the end (and at a SIGTERM) only
MAX_ITEMS = 6          # archives per call: with window.json and window.log, 8 files come back
WINDOW_FILE = 'window.json'


@dataclasses.dataclass(frozen=True)
class Item:
  """One program of the plan: `strategy`'s runs (seeds x 5 folds) of `backbone` on ESC-10."""
  key: str
  part: str                # the plan's (a), (b), (c)
  study: str               # results/<study>
  backbone: str
  strategy: str
  folder: str              # results/<study>/<backbone>/<folder>: strategy, or strategy-variant
  seeds: tuple = (0,)
  overrides: tuple = ()    # configs/esc10.py items beyond backbone, strategy, fold, seed(s)
  precision: str = 'bfloat16'
  stack_method: str = 'unroll'
  method: str = ''         # the report's label of these runs (`mixing.method_label`)

  @property
  def runs(self) -> int:
    return len(self.seeds) * FOLDS

  @property
  def mixes(self) -> bool:
    return self.strategy != 'standard'

  @property
  def steps(self) -> int:
    return EPOCHS * (2 if self.mixes else 1) * STEPS_PER_EPOCH

  def run_paths(self) -> list:
    """[(seed, fold, path relative to the results root)] of every run."""
    return [(s, k, os.path.join(self.study, self.backbone, self.folder, f'seed{s}', f'fold{k}',
                                'results.json'))
            for s in self.seeds for k in range(1, FOLDS + 1)]

  def workdir_run(self, workdir: str, seed: int, fold: int) -> str:
    """Where the trainer writes run (seed, fold) under `workdir` (train._many_runs)."""
    parts = [workdir] + ([f'seed_{seed}'] if len(self.seeds) > 1 else []) + [f'fold_{fold}']
    return os.path.join(*parts)

  def config_arg(self, data_dir: str, manual_dir: str, cpu: bool) -> str:
    items = [f'backbone={self.backbone}', f'strategy={self.strategy}', 'fold=all',
             (f'seeds=({",".join(map(str, self.seeds))})' if len(self.seeds) > 1
              else f'seed={self.seeds[0]}'),
             f'data_dir={data_dir}', f'manual_dir={manual_dir}',
             f'model.precision={self.precision}',
             f'checkpoint_every_epochs={CHECKPOINT_EVERY_EPOCHS}', *self.overrides]
    if cpu:
      items.append(CPU_TINY)
    return ','.join(items)


_ENVNET = dict(study='esc10_envnetv2_gpu', backbone='envnetv2')
_PICZAK = dict(study='esc10_protocol_gpu', backbone='piczakcnn', seeds=(0, 1, 2),
               precision='float32', stack_method='auto', part='c')
PLAN = (
    Item('envnetv2-standard', 'a', strategy='standard', folder='standard', method='standard',
         **_ENVNET),
    Item('envnetv2-intermix', 'a', strategy='intermix', folder='intermix', method='intermix',
         **_ENVNET),
    Item('envnetv2-bc-independent-pairs', 'b', strategy='bc', folder='bc-independent-pairs',
         overrides=('mixing.pairing=independent',), method='bc', **_ENVNET),
    Item('envnetv2-speechmix', 'b', strategy='speechmix', folder='speechmix', method='speechmix',
         **_ENVNET),
    Item('piczakcnn-standard', strategy='standard', folder='standard', method='standard',
         **_PICZAK),
    Item('piczakcnn-intermix', strategy='intermix', folder='intermix', method='intermix',
         **_PICZAK),
    Item('piczakcnn-speechmix', strategy='speechmix', folder='speechmix', method='speechmix',
         **_PICZAK),
    Item('piczakcnn-bc-independent-pairs', strategy='bc', folder='bc-independent-pairs',
         overrides=('mixing.pairing=independent',), method='bc', **_PICZAK),
    Item('piczakcnn-bc-shared-pairs', strategy='bc', folder='bc-shared-pairs',
         overrides=('mixing.pairing=shared',), method='bc[shared-pairs]', **_PICZAK),
)
ITEMS = {item.key: item for item in PLAN}

# --- the cost of an item ------------------------------------------------------------------------
# Measured on ONE NVIDIA H200 on 2026-11-30 (results/accelerator/h200-2026-11-30/: row_unroll.jsonl,
# multirun.jsonl, the row logs; benchmarks/README.md "Runs in one program on an H200"). Steps/s of
# the whole stacked program, training only (the trainer's logged rate):
MEASURED_CARD = 'NVIDIA H200'
RATES = {
    # EnvNet-v2, 5 folds unrolled, bfloat16, clips on the device: standard 23.76 steps/s (42 ms),
    # InterMix 21.39 (47 ms). BC and SpeechMix were not measured: taken at InterMix's rate (BC's
    # network step is standard's, SpeechMix mixes hidden layers as InterMix does).
    ('envnetv2', False): 23.76,
    ('envnetv2', True): 21.39,
    # PiczakCNN, 15 runs vmapped, float32 at TF32, InterMix: between the measured K = 10 (5.09 ms)
    # and K = 20 (9.64 ms) steps, 7.37 ms; standard taken at the same rate.
    ('piczakcnn', False): 1 / 7.37e-3,
    ('piczakcnn', True): 1 / 7.37e-3,
}
RATE_SOURCES = {
    'envnetv2': 'H200 measured, 5 folds unrolled bf16 (standard 23.76, InterMix 21.39 steps/s; '
                'BC and SpeechMix at InterMix\'s)',
    'piczakcnn': 'H200 interpolated, 15 runs vmapped TF32 (7.37 ms between K = 10 and 20)',
}
# Process start to the first progress line (imports, the clips onto the device, compilation):
# EnvNet-v2 46-48 s measured (the unrolled row, H200); PiczakCNN assumed (vmapped K = 20 compiled
# in 16.5 s in multirun).
STARTUP_S = {'envnetv2': 48.0, 'piczakcnn': 40.0}
# The final checkpoint of every run (saved, read back, verified), seconds per run: 5 EnvNet-v2
# states (4 GB) took 26 s on the H200; PiczakCNN (212 MB per run) scaled by its size.
SAVE_S_PER_RUN = {'envnetv2': 26.0 / 5, 'piczakcnn': 26.0 / 5 * 212 / 810}
# Assumed (not measured on a device): one evaluation of one run (10 crops of 80 test clips and its
# results.json), and the trainer's per-epoch bookkeeping of one run (its slice of the stacked
# state, finiteness check, TensorBoard; results.json only at evaluations: train._Loop).
EVAL_S_PER_RUN = {'envnetv2': 0.15, 'piczakcnn': 0.05}
EPOCH_S_PER_RUN = 0.002
# On every estimate, and on the training time of a card no window has measured, against the
# H200's (the H100: the same bf16 matrix rate, 0.7x the memory bandwidth). Lean: an estimate too
# low costs about a minute (the guard stops the item once its wall rate is known, and the rest of
# the call goes to the next item that fits), one too high never starts the item on that card.
MARGIN = 1.05
OTHER_CARD = 1.15
# Once per call: the wheels (11 s measured) and, per sample rate, the Ogg pack decoded and the
# dataset prepared (12 s measured for 44.1 kHz).
DEPS_S, PREPARE_S = 11.0, 12.0


def _fmt(v, spec='.0f'):
  return '-' if v is None else format(v, spec)


def measured(results_root: str) -> list:
  """Item records of every committed window (results/*/windows/*.json) that trained to the end."""
  out = []
  for path in sorted(glob.glob(os.path.join(results_root, '*', 'windows', '*.json'))):
    try:
      with open(path) as f:
        window = json.load(f)
    except (OSError, ValueError):
      continue
    for rec in window.get('items', []):
      if rec.get('status') == 'finished' and rec.get('wall_steps_per_s'):
        out.append(dict(rec, device=window.get('device'), window=window.get('window')))
  return out


def estimate(item: Item, card: str, seen: list = ()) -> dict:
  """Seconds `item` takes on `card` (one NVIDIA device kind, as nvidia-smi names it), and why:
  a finished item of the same backbone, mixing or not, and run count measured on this card by an
  earlier window (its startup, wall rate and end), else the H200's rates above (x
  OTHER_CARD on another card), x MARGIN."""
  for rec in seen:
    it = rec.get('item', {})
    if (rec.get('device') == card and it.get('backbone') == item.backbone
        and (it.get('strategy') != 'standard') == item.mixes
        and len(it.get('seeds', ())) * FOLDS == item.runs):
      seconds = (rec["startup_s"] + item.steps / rec["wall_steps_per_s"] + rec["end_s"]) * MARGIN
      return dict(seconds=seconds, source=f'measured on this card by window {rec.get("window")} '
                                          f'({it.get("key")})')
  rate = RATES[(item.backbone, item.mixes)]
  factor = 1.0 if card == MEASURED_CARD else OTHER_CARD
  epochs = item.steps // STEPS_PER_EPOCH
  parts = dict(startup=STARTUP_S[item.backbone],
               train=item.steps / rate * factor,
               epochs=epochs * item.runs * EPOCH_S_PER_RUN,
               evals=(epochs // EVAL_EVERY_EPOCHS) * item.runs * EVAL_S_PER_RUN[item.backbone],
               save=item.runs * SAVE_S_PER_RUN[item.backbone])
  return dict(seconds=sum(parts.values()) * MARGIN, parts=parts,
              source=RATE_SOURCES[item.backbone] + ('' if factor == 1 else
                                                    f'; x{OTHER_CARD} on an unmeasured card'))


# --- what is done -------------------------------------------------------------------------------
def _status(path: str):
  try:
    with open(path) as f:
      return json.load(f).get('status')
  except (OSError, ValueError, AttributeError):
    return None


def done_runs(item: Item, results_root: str) -> int:
  return sum(_status(os.path.join(results_root, rel)) == 'finished'
             for _, _, rel in item.run_paths())


def unfinished(results_root: str, keys=None) -> list:
  """The plan's items (or those named in `keys`, in plan order) with a run not finished."""
  chosen = [i for i in PLAN if keys is None or i.key in keys]
  return [i for i in chosen if done_runs(i, results_root) < i.runs]


def choose(todo: list, budget_s: float, card: str, seen: list = (), max_items: int = MAX_ITEMS):
  """(items to run, [(item, estimate s)] not started): in order, each that fits in what is left."""
  take, skip, left = [], [], budget_s
  prepared = set()
  for item in todo:
    need = estimate(item, card, seen)['seconds'] + (
        0 if table_row_rate(item) in prepared else PREPARE_S)
    if len(take) < max_items and need <= left:
      take.append(item)
      left -= need
      prepared.add(table_row_rate(item))
    else:
      skip.append((item, need))
  return take, skip


def table_row_rate(item: Item) -> str:
  """The sample rate an item's data is prepared at (one preparation per rate and call)."""
  return {'envnetv2': '44100', 'piczakcnn': '22050'}.get(item.backbone, item.backbone)


# --- the code's fingerprint ---------------------------------------------------------------------
FINGERPRINTED = ('intermix_jax', 'configs', 'launch')


def _blob_sha(data: bytes) -> str:
  """git's object id of a file's content (git hash-object)."""
  return hashlib.sha1(b'blob %d\0' % len(data) + data).hexdigest()


def fingerprint(root: str = ROOT) -> dict:
  """{path: git blob id} of every file under FINGERPRINTED (no __pycache__): what trains."""
  out = {}
  for top in FINGERPRINTED:
    for base, dirs, files in os.walk(os.path.join(root, top)):
      dirs[:] = [d for d in dirs if d != '__pycache__']
      for name in files:
        if name.endswith('.pyc'):
          continue
        path = os.path.join(base, name)
        with open(path, 'rb') as f:
          out[os.path.relpath(path, root)] = _blob_sha(f.read())
  return dict(sorted(out.items()))


def matching_commit(prints: dict, repo: str = ROOT, depth: int = 200) -> tuple:
  """(commit whose tracked files under FINGERPRINTED are exactly `prints`, or None; the paths by
  which HEAD differs). Searches HEAD and its last `depth` ancestors."""
  commits = subprocess.run(['git', '-C', repo, 'rev-list', f'--max-count={depth}', 'HEAD'],
                           capture_output=True, text=True).stdout.split()
  differs = None
  for commit in commits:
    tree = subprocess.run(['git', '-C', repo, 'ls-tree', '-r', commit, '--', *FINGERPRINTED],
                          capture_output=True, text=True).stdout
    files = {}
    for line in tree.splitlines():
      meta, path = line.split('\t', 1)
      files[path] = meta.split()[2]
    if files == prints:
      return commit, []
    if differs is None:
      differs = sorted(p for p in set(files) | set(prints) if files.get(p) != prints.get(p))
  return None, differs or []


# --- on the device ------------------------------------------------------------------------------
CPU_TINY = ('model.width=0.3,model.fc_units=16,batch_size=4,steps_per_epoch=1,num_epochs=1,'
            'num_eval_crops=1,eval_batch_size=8,eval_every_epochs=1,log_every_steps=1')


def gpu_name() -> str | None:
  """nvidia-smi's name of device 0 (the runner never imports JAX: the trainer gets the device)."""
  try:
    out = subprocess.run(['nvidia-smi', '--query-gpu=name', '--format=csv,noheader'],
                         capture_output=True, text=True, timeout=20).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return None
  return out.splitlines()[0].strip() if out else None


def _machine() -> str:
  try:
    smi = subprocess.run(['nvidia-smi', '--query-gpu=name,memory.total,driver_version',
                          '--format=csv,noheader'], capture_output=True, text=True,
                         timeout=20).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    smi = ''
  cpu = '?'
  try:
    with open('/proc/cpuinfo') as f:
      cpu = next((l.split(':', 1)[1].strip() for l in f if l.startswith('model name')), '?')
  except OSError:
    pass
  return f'{smi or "no GPU"}; {cpu}, {os.cpu_count()} cores; Python {platform.python_version()}'


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M:%S UTC')


_EVALUATED = re.compile(r'test error')


def train_guarded(cmd, log_path, env, deadline: float, end_s: float, check_after_s: float = 10.0):
  """Runs the trainer; stops it (SIGKILL: nothing it would save can come home) once the deadline
  passes, or once now + the steps left at its wall rate + `end_s` pass the deadline. The wall rate
  is measured from the first progress line after the first evaluation (the evaluation step's
  compilation is paid once; every later evaluation is in the rate), once `check_after_s` of
  progress lines lie beyond it.

  Returns dict(rc, seconds, stopped (None or why), progress [(s, step, total)]).
  """
  start = time.time()
  progress, seen, stopped, ref = [], 0, None, None
  with open(log_path, 'w') as log:
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    while proc.poll() is None:
      time.sleep(0.25)
      with open(log_path, errors='replace') as f:
        text = f.read()
      for m in table_row._PROGRESS.finditer(text, seen):  # pylint: disable=protected-access
        progress.append((time.time() - start, int(m.group(1)), int(m.group(2))))
        seen = m.end()
        if ref is None and _EVALUATED.search(text, 0, m.start()):
          ref = len(progress) - 1
      now = time.time()
      if now > deadline:
        stopped = 'the deadline passed'
      elif ref is not None and progress[-1][0] - progress[ref][0] >= check_after_s:
        (t0, s0, _), (t1, s1, total) = progress[ref], progress[-1]
        rate = (s1 - s0) / max(t1 - t0, 1e-9)
        end = now + (total - s1) / rate + end_s if rate > 0 else float('inf')
        if end > deadline:
          stopped = (f'projected to end {end - deadline:.0f} s after the deadline (wall rate '
                     f'{rate:.2f} steps/s at step {s1} of {total})')
      if stopped:
        proc.kill()
        break
    rc = proc.wait()
  return dict(rc=rc, seconds=time.time() - start, stopped=stopped, progress=progress, ref=ref)


def _rates(result: dict, item: Item) -> dict:
  """Startup, training, wall rate and end of a trainer run from its progress lines."""
  p = result['progress']
  out = dict(startup_s=None, wall_steps_per_s=None, end_s=None, steps_done=p[-1][1] if p else 0)
  if p:
    out['startup_s'] = p[0][0]
    out['end_s'] = result['seconds'] - p[-1][0]
  r = result.get('ref') or 0  # after the first evaluation (its compilation) where there was one
  if len(p) - r >= 2 and p[-1][0] > p[r][0]:
    out['wall_steps_per_s'] = (p[-1][1] - p[r][1]) / (p[-1][0] - p[r][0])
  with open(result['log'], errors='replace') as f:
    logged = [float(x) for x in re.findall(r'\| ([0-9.]+) steps/s', f.read())]
  if logged:
    out['train_steps_per_s'] = sorted(logged)[len(logged) // 2]  # median of the logged rates
  del item
  return out


def _bundle(out: str, item: Item, workdir: str, record: dict, log_path: str) -> tuple:
  """OUT/<key>.tgz: <key>/item.json, <key>/train.log, <key>/runs/seed<s>/fold<k>/results.json of
  every finished run; returns (archive name, runs packed)."""
  name = f'{item.key}.tgz'
  packed = 0
  with tarfile.open(os.path.join(out, name), 'w:gz') as tar:
    for seed, fold, _ in item.run_paths():
      path = os.path.join(item.workdir_run(workdir, seed, fold), 'results.json')
      if _status(path) == 'finished':
        tar.add(path, arcname=f'{item.key}/runs/seed{seed}/fold{fold}/results.json')
        packed += 1
    tar.add(log_path, arcname=f'{item.key}/train.log')
    data = json.dumps(record, indent=1).encode()
    info = tarfile.TarInfo(f'{item.key}/item.json')
    info.size, info.mtime = len(data), int(time.time())
    tar.addfile(info, io.BytesIO(data))
  return name, packed


def cmd_run(args) -> int:
  start = time.time()
  deadline = start + args.budget_s
  os.makedirs(args.out, exist_ok=True)
  os.makedirs(args.scratch, exist_ok=True)
  card = 'cpu' if args.cpu else (gpu_name() or 'unknown')
  keys = set(args.items.split(',')) if args.items else None
  if keys and keys - set(ITEMS):
    print(f'unknown items: {sorted(keys - set(ITEMS))}; the plan: {", ".join(ITEMS)}',
          file=sys.stderr)
    return 2
  seen = measured(args.results)
  todo = unfinished(args.results, keys)
  if args.cpu:  # tiny sizes: every item takes seconds; the budget is the only limit
    take, skip = todo[:args.max_items], []
  else:
    take, skip = choose(todo, args.budget_s, card, seen, args.max_items)
  stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%dT%H%MZ')
  window = dict(
      window=f'{stamp}-{re.sub(r"[^a-z0-9]+", "-", card.lower()).strip("-")}',
      date=_now(), device=card, machine=_machine(), mode='cpu' if args.cpu else 'accelerator',
      command=args.command or ' '.join(['python -m launch.device.window'] + sys.argv[1:]),
      budget_s=args.budget_s, deps=_read_json(args.deps), code=fingerprint(),
      plan_left=[i.key for i in todo], planned=[i.key for i in take], items=[])
  log = open(os.path.join(args.out, 'window.log'), 'a')

  def say(msg):
    line = f'[window {time.strftime("%H:%M:%S")}] {msg}'
    print(line, flush=True)
    log.write(line + '\n')
    log.flush()

  def save():
    with open(os.path.join(args.out, WINDOW_FILE), 'w') as f:
      json.dump(window, f, indent=1)

  save()
  say(f'{card}: {len(todo)} items unfinished; by the estimates {args.budget_s:.0f} s run '
      f'{", ".join(i.key for i in take) or "none"}; not: '
      + (', '.join(f'{i.key} (~{s:.0f} s)' for i, s in skip) or 'none'))
  layout = os.path.join(args.scratch, 'esc10_layout')
  data_dir = os.path.join(args.scratch, 'tfds')
  env = dict(os.environ)
  env.setdefault('JAX_COMPILATION_CACHE_DIR', os.path.join(args.scratch, 'jax_cache'))
  if args.cpu:
    env['JAX_PLATFORMS'] = 'cpu'
  prepared, failures, ran = set(), 0, 0
  for item in todo:
    est = estimate(item, card, seen)
    need = est['seconds'] + (0 if table_row_rate(item) in prepared else PREPARE_S)
    if ran >= args.max_items or (not args.cpu and need > deadline - time.time()):
      continue  # decided again for every item: an early finish leaves room for a later one
    ran += 1
    rec = dict(key=item.key, item=dataclasses.asdict(item), estimate_s=round(est['seconds']),
               estimate_source=est['source'], status='not started', started=_now())
    window['items'].append(rec)
    t = time.time()
    if not os.path.exists(os.path.join(layout, 'meta', 'esc50.csv')):
      if not os.path.exists(os.path.join(args.packed, 'meta', 'esc50.csv')):
        say(f'{args.packed}: no packed ESC-10 (`python -m launch.device.table_row pack` here, then '
            'carry .esc10_ogg)')
        rec['status'] = 'no data'
        save()
        return 1
      n = table_row.unpack(args.packed, layout)
      say(f'unpacked {n} clips in {time.time() - t:.1f} s')
    common = item.config_arg(data_dir, layout, args.cpu)
    if table_row_rate(item) not in prepared:
      t = time.time()
      prep = subprocess.run([sys.executable, '-c', table_row._PREPARE, common],  # pylint: disable=protected-access
                            cwd=ROOT, env=env, capture_output=True, text=True)
      if prep.returncode:
        say(f'preparing the dataset for {item.backbone} failed:\n{prep.stderr[-3000:]}')
        rec['status'] = 'data preparation failed'
        failures += 1
        save()
        continue
      prepared.add(table_row_rate(item))
      say(f'dataset prepared for {item.backbone} in {time.time() - t:.1f} s')
    left = deadline - time.time()
    if not args.cpu and est['seconds'] > left:
      say(f'{item.key}: ~{est["seconds"]:.0f} s no longer fits in the {left:.0f} s left; not started')
      rec['status'] = 'not started: no time left'
      window['items'].pop()
      save()
      continue
    workdir = os.path.join(args.scratch, 'runs', item.key)
    if os.path.exists(workdir):
      shutil.rmtree(workdir)  # never a resume from an earlier call's leftovers: whole runs only
    # The CPU dry run vmaps: one step body compiles in 25 s on 2 cores where five unrolled EnvNet-v2
    # ones took 84 s (the unrolled program itself: tests/test_train_together.py).
    method = 'vmap' if args.cpu else item.stack_method
    cmd = [sys.executable, '-m', 'intermix_jax.main', f'--config=configs/esc10.py:{common}',
           f'--workdir={workdir}', '--config.stack_runs=True', '--config.data_on_device=True',
           f'--config.stack_method={method}']
    rec['command'] = ' '.join(['python'] + cmd[1:])
    rec['status'] = 'training'
    save()
    end_s = est.get('parts', {}).get('save', 20.0) + 10.0
    log_path = os.path.join(args.scratch, f'{item.key}.log')
    say(f'{item.key}: {item.runs} runs x {"1 (tiny)" if args.cpu else item.steps} steps in one '
        f'program, ~{est["seconds"]:.0f} s estimated on {card} ({est["source"]}), {left:.0f} s '
        'left')
    result = train_guarded(cmd, log_path, env, deadline - args.spare_s, end_s)
    result['log'] = log_path
    rec.update(rc=result['rc'], seconds=round(result['seconds'], 1), stopped=result['stopped'],
               ended=_now(), **_rates(result, item))
    finished = [_status(os.path.join(item.workdir_run(workdir, s, k), 'results.json'))
                == 'finished' for s, k, _ in item.run_paths()]
    rec['runs_finished'] = sum(finished)
    rec['status'] = ('finished' if all(finished) else
                     f'stopped: {result["stopped"]}' if result['stopped'] else
                     f'exit {result["rc"]}, {sum(finished)} of {item.runs} runs finished')
    if any(finished):
      rec['bundle'], rec['runs_packed'] = _bundle(args.out, item, workdir, rec, log_path)
    else:
      shutil.copy(log_path, os.path.join(args.out, f'{item.key}.log'))  # why it failed
    failures += not all(finished)
    say(f'{item.key}: {rec["status"]} in {rec["seconds"]:.0f} s (estimated {rec["estimate_s"]} '
        f's); wall rate {_fmt(rec["wall_steps_per_s"], ".2f")} steps/s, startup '
        f'{_fmt(rec["startup_s"])} s, end {_fmt(rec["end_s"])} s')
    save()
    shutil.rmtree(workdir, ignore_errors=True)  # checkpoints: GBs that cannot come home
  window['seconds'] = round(time.time() - start, 1)
  started = {r['key'] for r in window['items']}
  window['not_started'] = [dict(key=i.key, estimate_s=round(estimate(i, card, seen)['seconds']))
                           for i in todo if i.key not in started]
  save()
  say(f'done in {window["seconds"]:.0f} s: ' + (', '.join(
      f'{r["key"]} {r["status"]}' for r in window['items']) or 'nothing ran'))
  log.close()
  return 1 if failures else 0


def _read_json(path):
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError, TypeError):
    return None


# --- here ---------------------------------------------------------------------------------------
def cmd_plan(args) -> int:
  seen = measured(args.results)
  todo = unfinished(args.results)
  print(f'| item | part | results | runs done | estimate on {args.card} | from |')
  print('|---|---|---|---|---|---|')
  for item in PLAN:
    est = estimate(item, args.card, seen)
    print(f'| {item.key} | ({item.part}) | results/{item.study}/{item.backbone}/{item.folder} | '
          f'{done_runs(item, args.results)} / {item.runs} | {est["seconds"]:.0f} s | '
          f'{est["source"]} |')
  take, skip = choose(todo, args.budget_s - DEPS_S, args.card, seen)
  print(f'\nnext: {todo[0].key if todo else "nothing: the plan is done"}; a window of '
        f'{args.budget_s:.0f} s on {args.card} runs: {", ".join(i.key for i in take) or "none"}')
  return 0


def _find_windows(files_at: str) -> list:
  return sorted(glob.glob(os.path.join(files_at, '**', WINDOW_FILE), recursive=True))


def _check(r: dict, item: dict, seed: int, fold: int) -> str | None:
  """Why a collected results.json does not belong where the item puts it (None: it does)."""
  want = dict(status='finished', dataset='esc10', backbone=item['backbone'],
              strategy=item['strategy'], fold=fold, seed=seed)
  if item.get('method'):
    want['method'] = item['method']
  bad = [f'{k} {r.get(k)!r} (want {v!r})' for k, v in want.items() if r.get(k) != v]
  if r.get('final_error') is None:
    bad.append('no final_error')
  return '; '.join(bad) or None


def _git(repo, *args):
  return subprocess.run(['git', '-C', repo, *args], capture_output=True, text=True)


def collect_window(path: str, results_root: str, code_repo: str) -> dict:
  """Copies one window's finished runs into `results_root`; returns what it did, per study."""
  files_at = os.path.dirname(path)
  with open(path) as f:
    window = json.load(f)
  commit, differs = matching_commit(window.get('code', {}), code_repo)
  studies = {}
  for rec in window.get('items', []):
    if not rec.get('bundle'):
      continue
    item = rec['item']
    study = studies.setdefault(item['study'], dict(written=[], kept=[], refused=[], items=[]))
    study['items'].append(rec)
    with tempfile.TemporaryDirectory() as tmp:
      with tarfile.open(os.path.join(files_at, rec['bundle'])) as tar:
        if hasattr(tarfile, 'data_filter'):  # Python >= 3.11.4: no links, no paths outside tmp
          tar.extractall(tmp, filter='data')
        else:
          tar.extractall(tmp)  # pylint: disable=unexpected-keyword-arg
      for seed in item['seeds']:
        for fold in range(1, FOLDS + 1):
          src = os.path.join(tmp, rec['key'], 'runs', f'seed{seed}', f'fold{fold}', 'results.json')
          if not os.path.exists(src):
            continue
          rel = os.path.join(item['study'], item['backbone'], item['folder'], f'seed{seed}',
                             f'fold{fold}', 'results.json')
          dest = os.path.join(results_root, rel)
          r = _read_json(src) or {}
          why = _check(r, item, seed, fold)
          if why:
            study['refused'].append(f'{rel}: {why}')
            continue
          if _status(dest) == 'finished':
            study['kept'].append(rel)
            continue
          versions = r.setdefault('versions', {})
          if versions.get('git_commit', 'unknown') == 'unknown' and commit:
            versions['git_commit'] = commit
          versions['window'] = window['window']
          os.makedirs(os.path.dirname(dest), exist_ok=True)
          with open(dest + '.tmp', 'w') as f:
            json.dump(r, f, indent=1, sort_keys=True)
          os.replace(dest + '.tmp', dest)
          study['written'].append(rel)
  for name, study in studies.items():
    meta = dict((k, window.get(k)) for k in ('window', 'date', 'device', 'machine', 'mode',
                                             'command', 'budget_s', 'seconds', 'deps'))
    meta.update(commit=commit, commit_note=(None if commit else
                                            'no commit matches the code that ran; HEAD differs in: '
                                            + ', '.join(differs[:20])),
                items=[dict(rec, item=rec['item']) for rec in study['items']],
                not_started=window.get('not_started'), runs_written=study['written'],
                runs_kept=study['kept'], runs_refused=study['refused'])
    wdir = os.path.join(results_root, name, 'windows')
    os.makedirs(wdir, exist_ok=True)
    meta_path = os.path.join(wdir, f'{window["window"]}.json')
    with open(meta_path, 'w') as f:
      json.dump(meta, f, indent=1)
    readme = os.path.join(wdir, 'README.md')
    if not os.path.exists(readme):
      with open(readme, 'w') as f:
        f.write(f'# Accelerator windows of results/{name}\n\n'
                'One row per window that brought runs home (`python -m launch.device.window\n'
                'collect`); the whole record is `<window>.json` beside this file: the machine,\n'
                'versions, the command, per item its trainer command, timings and rates. The plan\n'
                'and its costs: launch/device/README.md.\n\n'
                '| window | card | commit | command | item: status, seconds (estimated), wall '
                'steps/s | runs committed |\n|---|---|---|---|---|---|\n')
    items = '; '.join(f'{r["key"]}: {r["status"]}, {r.get("seconds", 0):.0f} s '
                      f'({r.get("estimate_s")}), {_fmt(r.get("wall_steps_per_s"), ".2f")}'
                      for r in study['items'])
    with open(readme, 'a') as f:
      f.write(f'| {window["window"]} | {window.get("device")} | '
              f'{commit[:10] if commit else "unknown"} | `{window.get("command")}` | {items} | '
              f'{len(study["written"])} |\n')
    study['paths'] = [os.path.join(results_root, p) for p in study['written']] + [meta_path, readme]
  return dict(window=window['window'], device=window.get('device'), commit=commit, studies=studies)


def cmd_collect(args) -> int:
  paths = _find_windows(args.files_at)
  if not paths:
    print(f'{args.files_at}: no {WINDOW_FILE} under it', file=sys.stderr)
    return 1
  rc = 0
  for path in paths:
    done = collect_window(path, args.results, args.code_repo)
    for name, study in done['studies'].items():
      print(f'{done["window"]} -> results/{name}: {len(study["written"])} runs written, '
            f'{len(study["kept"])} already there, {len(study["refused"])} refused'
            + ''.join(f'\n  refused {r}' for r in study['refused']))
      rc |= bool(study['refused'])
      if args.no_commit or not study['written']:
        continue
      repo = _git(args.results, 'rev-parse', '--show-toplevel').stdout.strip()
      keys = ', '.join(r['key'] for r in study['items'])
      msg = (f'results/{name}: {len(study["written"])} runs from accelerator window '
             f'{done["window"]} ({done["device"]}, code at '
             f'{done["commit"][:10] if done["commit"] else "an uncommitted tree"}): {keys}')
      add = _git(repo, 'add', '--', *study['paths'])
      com = add.returncode == 0 and _git(repo, 'commit', '-q', '-m', msg, '--only', '--',
                                         *study['paths'])
      if not com or com.returncode:
        print(f'could not commit: {(add.stderr or (com and com.stderr) or "").strip()}',
              file=sys.stderr)
        rc = 1
      else:
        print(f'committed: {msg}')
    if not done['studies']:
      print(f'{done["window"]}: no finished runs came back')
  return rc


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
  sub = p.add_subparsers(dest='cmd', required=True)
  a = sub.add_parser('plan', help='what is done, what is next, what each item costs')
  a.add_argument('--card', default=MEASURED_CARD, help="nvidia-smi's name of the card")
  a.add_argument('--budget_s', type=float, default=560.0, help="window.sh's BUDGET_S")
  r = sub.add_parser('run', help='there: the next unfinished items (window.sh runs this)')
  r.add_argument('--out', required=True)
  r.add_argument('--scratch', required=True)
  r.add_argument('--packed', default=table_row.PACKED)
  r.add_argument('--budget_s', type=float, default=540.0,
                 help='seconds from now by which every item must have ended')
  r.add_argument('--spare_s', type=float, default=5.0,
                 help='seconds before the deadline at which an item still training is stopped')
  r.add_argument('--items', default='', help='only these items (comma-separated keys)')
  r.add_argument('--max_items', type=int, default=MAX_ITEMS)
  r.add_argument('--deps', default=None, help="the deps stage's deps.json, recorded")
  r.add_argument('--command', default='', help='the command as the session ran it, recorded')
  r.add_argument('--cpu', action='store_true', help='tiny sizes on the CPU (the dry run)')
  c = sub.add_parser('collect', help="here: a window's files into results/<study>/, committed")
  c.add_argument('files_at', help="the folder the device call's files came back to")
  c.add_argument('--no-commit', action='store_true', dest='no_commit')
  c.add_argument('--code_repo', default=ROOT, help='the repository whose commits the code is matched against')
  for q in (a, r, c):
    q.add_argument('--results', default=RESULTS, help='the results tree (what is done)')
  args = p.parse_args(argv)
  return dict(plan=cmd_plan, run=cmd_run, collect=cmd_collect)[args.cmd](args)


if __name__ == '__main__':
  sys.exit(main())
