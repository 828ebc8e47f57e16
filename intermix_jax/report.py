"""Paper-format tables and plots from finished runs.

    python -m intermix_jax.report DIR... [--out OUT]

Finds every `results.json` under the DIRs (one per run: one fold of one seed), groups the finished
runs by (dataset, backbone, method) and writes to OUT (default: DIR/report for a single DIR, else
./report):
  report.md          the paper's table 1 layout per dataset (error %, rows = backbones, columns =
                     strategies, the paper's value beside each cell), the table 2 ablation when
                     present; then "Against the paper": every cell of tables 1, 2 and 3 with the
                     paper's value beside it and — where nothing has run; runs that deviate
                     from the docs/method.md §5 protocol (‡, e.g. a shortened schedule) listed with
                     their deviations;
                     a detailed table, and the runs left out (unfinished, incomplete,
                     unreadable or invalid files);
                     paired comparisons: each mixing method against standard training on the same
                     test clips (McNemar's exact test, paired bootstrap 95 % interval of the error
                     difference; `intermix_jax.stats`), per seed and over seeds;
                     per-fold tables: every fold's error, mean ± std over folds and over seeds
  summary.json       the same numbers, machine-readable (table 3 under "adversarial", the paired
                     comparisons under "paired", the test-error curve of each group)
  adversarial_<dataset>.png           table 3: error vs FGSM eps per (backbone, method), when
                     any adversarial.json (python -m intermix_jax.adversarial) was found
  curves_<dataset>_<backbone>.png      learning curves per method: test error at each evaluation
                     and train loss per epoch, mean over folds, min-max over folds shaded
  confusion_<dataset>_<backbone>_<method>.png   per-class confusion matrix over all its runs
  errorbars_<dataset>.png             error mean +- std per backbone and method, paper values as x

Protocol (docs/method.md §5): a run's error is its LAST epoch's test-fold error (`final_error`); the
cross-validated error of a seed is the mean over the dataset's folds; the table shows mean +- std
over seeds (sample std, ddof=1) when there are several seeds, else mean +- std over the folds of the
single seed (marked "folds"). A seed missing folds is left out when another seed has them all;
when none has, the group is shown from the folds that ran, marked * (partial cross-validation).
The command prints the main tables and the paired comparisons (--full: all of report.md); a
results.json that cannot be read or lacks needed fields is named on stderr and left out, the rest
reported. Table 3 reads every `adversarial.json` under the DIRs (they name their dataset,
backbone, method, fold and seed, so they may live outside the workdirs) and aggregates each eps
the same way.
"""
from __future__ import annotations

import argparse
import collections
import json
import math
import os
import sys
from typing import Iterable

import numpy as np

from intermix_jax import stats

# docs/method.md §6 (error %, ESC-50 / ESC-10 / US8K).
PAPER_TABLE1 = {
    'm18': {'standard': (31.5, 18.2, 28.8), 'bc': (26.7, 14.2, 26.5),
            'speechmix': (24.3, 12.4, 25.1), 'intermix': (25.4, 12.6, 25.1)},
    'soundnet5': {'standard': (33.8, 16.4, 33.3), 'bc': (27.4, 13.9, 30.2),
                  'speechmix': (25.6, 11.6, 27.4), 'intermix': (25.1, 10.6, 26.5)},
    'envnet': {'standard': (29.2, 12.8, 33.7), 'bc': (24.1, 11.3, 28.9),
               'speechmix': (22.5, 9.3, 26.5), 'intermix': (22.5, 9.1, 26.8)},
    'piczakcnn': {'standard': (27.6, 13.2, 25.3), 'bc': (23.1, 9.4, 23.5),
                  'speechmix': (22.1, 8.4, 22.1), 'intermix': (21.9, 8.3, 21.1)},
    'envnetv2': {'standard': (25.6, 14.2, 30.9), 'bc': (18.2, 10.6, 23.4),
                 'speechmix': (16.2, 8.5, 21.6), 'intermix': (15.8, 8.2, 21.4)},
    'envnetv2+aug': {'standard': (21.2, 10.9, 24.9), 'bc': (15.1, 8.6, 21.7),
                     'speechmix': (13.1, 7.1, 20.8), 'intermix': (12.9, 7.2, 20.5)},
}
# docs/method.md §3 ablation (paper table 2, EnvNet-v2 + strong aug.): method label -> values.
PAPER_TABLE2 = {
    'intermix[layers=0,r-weighting]+aug': ('vanilla (input, r-weighting)', (13.6, 7.9, 21.0)),
    'intermix[r-weighting]+aug': ('+ hidden mixing', (13.3, 7.7, 20.8)),
    'intermix+aug': ('+ p-weighting (InterMix)', (12.9, 7.2, 20.5)),
}
# docs/method.md §7 (paper table 3, ESC-10 error % under one-step FGSM; the backbone is not named).
PAPER_TABLE3_EPS = (1e-2, 1e-3, 1e-4, 1e-5)
PAPER_TABLE3 = {'standard': (64.5, 37.7, 36.5, 36.2), 'bc': (47.2, 28.7, 26.9, 26.8),
                'intermix': (42.9, 26.2, 25.1, 25.0)}
KNOWN_NUM_FOLDS = {'esc50': 5, 'esc10': 5, 'urbansound8k': 10}
NOT_RUN = '—'
DATASET_COLUMN = {'esc50': 0, 'esc10': 1, 'urbansound8k': 2}
DATASET_TITLE = {'esc50': 'ESC-50', 'esc10': 'ESC-10', 'urbansound8k': 'UrbanSound8K',
                 'synthetic': 'synthetic (not real audio)'}
BACKBONE_TITLE = {'m18': 'M18', 'soundnet5': 'SoundNet5', 'envnet': 'EnvNet',
                  'piczakcnn': 'PiczakCNN', 'envnetv2': 'EnvNet-v2',
                  'envnetv2+aug': 'EnvNet-v2 + strong aug'}
STRATEGY_ORDER = ('standard', 'mixup', 'bc', 'speechmix', 'intermix')
BACKBONE_ORDER = ('m18', 'soundnet5', 'envnet', 'piczakcnn', 'envnetv2', 'envnetv2+aug')


RESULTS_FILE = 'results.json'
ADVERSARIAL_FILE = 'adversarial.json'  # written by python -m intermix_jax.adversarial


def find_results(paths: Iterable[str], name: str = RESULTS_FILE) -> list[str]:
  """Every file called `name` under `paths` (directories), sorted.

  A path that is a file counts as an adversarial.json when it is named so, else as a results.json.
  """
  found = set()
  for p in paths:
    if os.path.isfile(p):
      if (os.path.basename(p) == ADVERSARIAL_FILE) == (name == ADVERSARIAL_FILE):
        found.add(os.path.abspath(p))
      continue
    if not os.path.isdir(p):
      raise FileNotFoundError(f'report: {p} is neither a results.json nor a directory')
    for root, dirs, files in os.walk(p):
      dirs[:] = [d for d in dirs if d != 'checkpoints']
      if name in files:
        found.add(os.path.abspath(os.path.join(root, name)))
  return sorted(found)


def _is_number(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_int(v) -> bool:
  return (isinstance(v, int) and not isinstance(v, bool)) or (
      isinstance(v, str) and v.strip().lstrip('-').isdigit())


def invalid_reason(record, name: str = RESULTS_FILE) -> str | None:
  """Why a loaded results.json (or adversarial.json) cannot be used, or None when it can.

  A results.json needs a 'status'; a finished one also needs dataset, backbone, method (strings),
  fold, seed (integers), final_error (a finite number) and, when present, a history list of dicts
  with an 'epoch'. An adversarial.json needs dataset, backbone, method, fold, seed, clean_error and
  an attacked_error dict.
  """
  if not isinstance(record, dict):
    return f'holds a {type(record).__name__}, not a JSON object'
  if name == ADVERSARIAL_FILE:
    needed = ('dataset', 'backbone', 'method', 'fold', 'seed', 'clean_error', 'attacked_error')
  elif 'status' not in record:
    return "has no 'status' field"
  elif record['status'] != 'finished':
    return None  # left out later, with its status, in the notes
  else:
    needed = ('dataset', 'backbone', 'method', 'fold', 'seed', 'final_error')
  missing = [k for k in needed if k not in record]
  if missing:
    return f"has no {', '.join(repr(k) for k in missing)} field{'s' if len(missing) > 1 else ''}"
  for k in ('dataset', 'backbone', 'method'):
    if not isinstance(record[k], str):
      return f'field {k!r} is {record[k]!r}, not a string'
  for k in ('fold', 'seed'):
    if not _is_int(record[k]):
      return f'field {k!r} is {record[k]!r}, not an integer'
  if name == ADVERSARIAL_FILE:
    if not _is_number(record['clean_error']) or not isinstance(record['attacked_error'], dict):
      return "field 'clean_error' is not a number or 'attacked_error' is not an object"
    return None
  if record['final_error'] is not None and not _is_number(record['final_error']):
    return f"field 'final_error' is {record['final_error']!r}, not a number"
  history = record.get('history')
  if history is not None and (not isinstance(history, list) or any(
      not isinstance(h, dict) or not _is_number(h.get('epoch')) for h in history)):
    return "field 'history' is not a list of per-epoch objects with an 'epoch'"
  return None


def load_runs(paths: Iterable[str], name: str = RESULTS_FILE) -> tuple[list[dict], list[str]]:
  """The records in every file called `name` under `paths`, and one line per file left out.

  A file that cannot be read, is not valid JSON or fails `invalid_reason` is skipped; the lines
  name the file and the reason. Each record gets '_path' (its absolute path).
  """
  runs, bad = [], []
  for path in find_results(paths, name):
    try:
      with open(path) as f:
        r = json.load(f)
    except (OSError, ValueError) as e:
      bad.append(f'{path}: unreadable or not valid JSON ({type(e).__name__}: {e}); left out')
      continue
    why = invalid_reason(r, name)
    if why is not None:
      bad.append(f'{path}: {why}; left out')
      continue
    r['_path'] = path
    runs.append(r)
  return runs, bad


def row_key(run: dict) -> str:
  """Table row of a run: the backbone, '+aug' with strong augmentation."""
  aug = run.get('config', {}).get('strong_augment', False)
  return run['backbone'] + ('+aug' if aug else '')


def base_method(method: str) -> str:
  """'intermix[r-weighting]+aug' -> 'intermix'."""
  return method.split('[')[0].split('+')[0]


def paper_value(dataset: str, backbone: str, method: str) -> float | None:
  """The paper's table 1 / table 2 value for a cell (docs/method.md §6 / §3), or None."""
  col = DATASET_COLUMN.get(dataset)
  if col is None:
    return None
  if method in PAPER_TABLE2 and backbone == 'envnetv2':
    return PAPER_TABLE2[method][1][col]
  if '[' in method:  # other option variants: no paper number
    return None
  row = backbone + ('+aug' if method.endswith('+aug') else '')
  values = PAPER_TABLE1.get(row, {}).get(base_method(method))
  return None if values is None else values[col]


def _std(values: list[float]) -> float:
  return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def aggregate(runs: list[dict]) -> tuple[list[dict], list[str]]:
  """Groups finished runs; returns (groups, notes about runs left out).

  Each group: dataset, backbone, method, row, seeds {seed: {fold: error}}, cv_errors {seed: mean},
  mean, std, std_over ('seeds' | 'folds'), num_folds, paper, runs (the results dicts); and both
  spreads whatever the table shows: fold_std {seed: sample std over that seed's folds},
  seed_mean / seed_std (mean and sample std of the seeds' cross-validated errors; seed_std None
  with a single seed). Errors in %.
  """
  notes = []
  by_group = collections.defaultdict(list)
  for r in runs:
    if r.get('status') != 'finished' or r.get('final_error') is None:
      notes.append(f"{r['_path']}: status {r.get('status')!r}, left out")
      continue
    by_group[(r['dataset'], r['backbone'], r['method'])].append(r)
  groups = []
  for (dataset, backbone, method), members in sorted(by_group.items()):
    seeds = collections.defaultdict(dict)
    for r in members:
      fold, seed = int(r['fold']), int(r['seed'])
      if fold in seeds[seed]:
        notes.append(f'{r["_path"]}: second run of {dataset}/{backbone}/{method} seed {seed} '
                     f'fold {fold}; the first one found is used')
        continue
      seeds[seed][fold] = float(r['final_error'])
    expected = max(int(r.get('num_folds') or 0) for r in members) or None
    complete = {s: f for s, f in seeds.items()
                if expected is None or sorted(f) == list(range(1, expected + 1))}
    partial = not complete
    if partial:  # no seed has every fold: report what there is, marked as a partial CV
      complete = dict(seeds)
    else:
      for seed in sorted(set(seeds) - set(complete)):
        missing = sorted(set(range(1, expected + 1)) - set(seeds[seed]))
        notes.append(f'{dataset}/{backbone}/{method} seed {seed}: folds {missing} missing; '
                     f'seed left out of the table')
    cv = {s: float(np.mean(list(f.values()))) for s, f in complete.items()}
    if len(cv) > 1:
      mean, std, over = float(np.mean(list(cv.values()))), _std(list(cv.values())), 'seeds'
    else:
      (only,) = complete.values()
      mean, std, over = float(np.mean(list(only.values()))), _std(list(only.values())), 'folds'
    cv_values = [cv[s] for s in sorted(cv)]
    groups.append(dict(dataset=dataset, backbone=backbone, method=method,
                       row=backbone + ('+aug' if method.endswith('+aug') else ''),
                       seeds={s: dict(sorted(f.items())) for s, f in sorted(complete.items())},
                       cv_errors=cv, mean=mean, std=std, std_over=over, num_folds=expected,
                       partial=partial, paper=paper_value(dataset, backbone, method),
                       fold_std={s: _std(list(f.values())) for s, f in sorted(complete.items())},
                       seed_mean=float(np.mean(cv_values)),
                       seed_std=_std(cv_values) if len(cv_values) > 1 else None,
                       runs=[r for r in members if int(r['seed']) in complete]))
  return groups, notes


_PROTOCOL_DEFAULTS = []


def _protocol_defaults() -> dict | None:
  """configs/base.py PROTOCOL_DEFAULTS (the docs/method.md §5 rows); None without configs/."""
  if not _PROTOCOL_DEFAULTS:
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs',
                        'base.py')
    table = None
    if os.path.isfile(path):
      import runpy
      table = runpy.run_path(path).get('PROTOCOL_DEFAULTS')
    _PROTOCOL_DEFAULTS.append(table)
  return _PROTOCOL_DEFAULTS[0]


def protocol_deviations(run: dict) -> list[str] | None:
  """How a run's config departs from the paper's protocol (docs/method.md §5).

  E.g. ['num_epochs 30 (protocol 600)']. None when it cannot be told (not a paper dataset, no
  protocol row, or an incomplete config); [] when the run follows the protocol. Checked: the
  protocol row (num_epochs, opt.lr, opt.schedule, opt.warmup_epochs), doubling for mixing, batch 64,
  the published model (width 1, fc_units None), 10 test crops, whole epochs (steps_per_epoch None).
  """
  cfg = run.get('config') or {}
  dataset, backbone = run.get('dataset'), run.get('backbone')
  table = _protocol_defaults()
  needed = ('num_epochs', 'opt', 'double_epochs_for_mixing', 'batch_size', 'model')
  if (dataset not in DATASET_COLUMN or table is None or (backbone, dataset) not in table
      or any(k not in cfg for k in needed)):
    return None
  row, opt, model = table[(backbone, dataset)], cfg['opt'], cfg['model']
  checks = [('num_epochs', cfg['num_epochs'], row['num_epochs']),
            ('opt.lr', opt.get('lr'), row['lr']),
            ('opt.schedule', tuple(opt.get('schedule') or ()), tuple(row['schedule'])),
            ('opt.warmup_epochs', opt.get('warmup_epochs'), row['warmup_epochs']),
            ('batch_size', cfg['batch_size'], 64),
            ('model.width', model.get('width'), 1.0),
            ('model.fc_units', model.get('fc_units'), None),
            ('num_eval_crops', cfg.get('num_eval_crops', 10), 10),
            ('steps_per_epoch', cfg.get('steps_per_epoch'), None)]
  if run.get('strategy', cfg.get('strategy')) != 'standard':
    checks.append(('double_epochs_for_mixing', cfg['double_epochs_for_mixing'], True))
  return [f'{name} {value} (protocol {want})' for name, value, want in checks if value != want]


def add_protocol_deviations(groups: list[dict]) -> None:
  """Sets g['deviations'] (sorted union over the group's runs) in place."""
  for g in groups:
    devs = set()
    for r in g['runs']:
      devs.update(protocol_deviations(r) or [])
    g['deviations'] = sorted(devs)


def _cv_stats(seeds: dict, expected: int | None) -> dict | None:
  """mean/std of {seed: {fold: value}} by the table's rule (see the module docstring)."""
  complete = {s: f for s, f in seeds.items()
              if expected is None or sorted(f) == list(range(1, expected + 1))}
  partial = not complete
  if partial:
    complete = {s: f for s, f in seeds.items() if f}
  if not complete:
    return None
  cv = {s: float(np.mean(list(f.values()))) for s, f in complete.items()}
  if len(cv) > 1:
    mean, std, over = float(np.mean(list(cv.values()))), _std(list(cv.values())), 'seeds'
  else:
    (only,) = complete.values()
    mean, std, over = float(np.mean(list(only.values()))), _std(list(only.values())), 'folds'
  return dict(mean=mean, std=std, std_over=over, partial=partial,
              seeds=sorted(complete), folds=sorted({f for v in complete.values() for f in v}))


def eps_label(eps: float) -> str:
  return f'{eps:.0e}'


def paper_adversarial(dataset: str, method: str, eps: float) -> float | None:
  """docs/method.md §7 value of (method, eps) on ESC-10, or None."""
  if dataset != 'esc10' or method not in PAPER_TABLE3:
    return None
  for e, v in zip(PAPER_TABLE3_EPS, PAPER_TABLE3[method]):
    if math.isclose(e, eps, rel_tol=1e-6):
      return v
  return None


def aggregate_adversarial(records: list[dict]) -> tuple[list[dict], list[str]]:
  """Groups adversarial.json records by (dataset, backbone, method); returns (groups, notes).

  Each group: dataset, backbone, method, eps (floats, strongest first), clean and attacked
  ({eps: stats}) with stats = mean, std, std_over, partial, seeds, folds, paper; deviations.
  """
  notes = []
  by_group = collections.defaultdict(list)
  for r in records:
    if r.get('run_status') not in (None, 'finished'):
      notes.append(f"{r['_path']}: attack of a run with status {r.get('run_status')!r}, left out")
      continue
    final = r.get('results_final_error')
    if final is not None and abs(float(final) - float(r['clean_error'])) > 1e-6:
      notes.append(f"{r['_path']}: clean error {r['clean_error']:.2f} differs from the run's final "
                   f"error {float(final):.2f} (not its last checkpoint?)")
    by_group[(r['dataset'], r['backbone'], r['method'])].append(r)
  groups = []
  for (dataset, backbone, method), members in sorted(by_group.items()):
    expected = (max(int(r.get('num_folds') or 0) for r in members)
                or KNOWN_NUM_FOLDS.get(dataset))
    eps_values = sorted({float(k) for r in members for k in r['attacked_error']}, reverse=True)

    def stats(value_of):
      seeds = collections.defaultdict(dict)
      for r in members:
        v = value_of(r)
        if v is not None:
          seeds[int(r['seed'])].setdefault(int(r['fold']), float(v))
      return _cv_stats(dict(seeds), expected)

    attacked = {}
    for eps in eps_values:
      def value(r, eps=eps):
        for k, v in r['attacked_error'].items():
          if math.isclose(float(k), eps, rel_tol=1e-9):
            return v
        return None
      st = stats(value)
      if st is not None:
        st['paper'] = paper_adversarial(dataset, method, eps)
        attacked[eps] = st
    clean = stats(lambda r: r['clean_error'])
    clean['paper'] = None
    devs = set()
    for r in members:
      devs.update(protocol_deviations(r) or [])
    groups.append(dict(dataset=dataset, backbone=backbone, method=method, eps=eps_values,
                       clean=clean, attacked=attacked, deviations=sorted(devs),
                       num_records=len(members)))
  return groups, notes


# ------------------------------------------------------------------------------------------------
# Paired comparisons against standard training (same test clips)
# ------------------------------------------------------------------------------------------------
def clip_outcomes(run: dict) -> tuple[dict | None, str | None]:
  """A run's test clips as {filename: (label, correct)}, or (None, why not).

  Read from results.json 'predictions' (filenames, labels, preds: one entry per test clip, the
  last evaluation's 10-crop prediction).
  """
  p = run.get('predictions')
  if not isinstance(p, dict):
    return None, 'no per-clip predictions'
  names, labels, preds = p.get('filenames'), p.get('labels'), p.get('preds')
  if not all(isinstance(x, list) for x in (names, labels, preds)) or not names or not (
      len(names) == len(labels) == len(preds)):
    return None, 'predictions without equal-length filenames, labels and preds'
  if len(set(names)) != len(names):
    return None, 'repeated filenames in its predictions'
  return {n: (int(t), int(t) == int(q)) for n, t, q in zip(names, labels, preds)}, None


def _first_by_seed_fold(runs: list[dict]) -> dict:
  """{(seed, fold): run}, the first run found of each (as in `aggregate`)."""
  out = {}
  for r in runs:
    out.setdefault((int(r['seed']), int(r['fold'])), r)
  return out


def reference_method(method: str) -> str:
  """The standard-training method a method is compared against: 'standard' or 'standard+aug'."""
  return 'standard' + ('+aug' if method.endswith('+aug') else '')


def paired_comparisons(groups: list[dict], num_resamples: int = stats.BOOTSTRAP_RESAMPLES,
                       seed: int = stats.BOOTSTRAP_SEED) -> tuple[list[dict], list[str]]:
  """Each non-standard group against the standard group of its dataset, backbone and row.

  Per seed, the folds both ran are paired clip by clip (by filename) and pooled: with
  cross-validation every clip is a test clip once per seed. A fold whose two runs lack per-clip
  predictions, or whose filenames or labels differ, is left out with a note. With several paired
  seeds on the same clips, a further comparison with seed 'all' averages the difference over the
  seeds (bootstrap resampling a clip with all its seeds; no McNemar test, a clip counting once per
  seed).

  Returns:
    (comparisons, notes). A comparison: dataset, backbone, row, method, reference (the standard
    method), seed (int or 'all'), seeds, folds (paired), unpaired_folds, n (clips), ref_error and
    error (% on the paired clips), diff, low, high (error(method) - error(standard) and its
    bootstrap interval, percentage points), confidence, num_resamples, bootstrap_seed, b (clips
    standard got right and the method wrong), c (the reverse), p (McNemar exact two-sided; b, c
    and p None for 'all').
  """
  comparisons, notes = [], []
  for g in groups:
    if base_method(g['method']) == 'standard':
      continue
    ref = next((x for x in groups if (x['dataset'], x['backbone'], x['method']) == (
        g['dataset'], g['backbone'], reference_method(g['method']))), None)
    if ref is None:
      continue
    name = f"{g['dataset']}/{g['backbone']}/{g['method']}"
    runs_new, runs_ref = _first_by_seed_fold(g['runs']), _first_by_seed_fold(ref['runs'])
    per_seed = []
    for s in sorted(set(g['seeds']) | set(ref['seeds'])):
      if s not in g['seeds'] or s not in ref['seeds']:
        notes.append(f"{name} seed {s}: {'standard' if s in g['seeds'] else g['method']} has no "
                     'runs of this seed in the table; not paired')
        continue
      folds = sorted(set(g['seeds'][s]) | set(ref['seeds'][s]))
      pooled, paired, unpaired = {}, [], []
      for fold in folds:
        r_new, r_ref = runs_new.get((s, fold)), runs_ref.get((s, fold))
        if r_new is None or r_ref is None:
          unpaired.append(fold)
          continue
        (o_new, why_new), (o_ref, why_ref) = clip_outcomes(r_new), clip_outcomes(r_ref)
        why = (f'{r_new["_path"]}: {why_new}' if o_new is None else
               f'{r_ref["_path"]}: {why_ref}' if o_ref is None else
               'the two runs tested different clips' if set(o_new) != set(o_ref) else
               'the two runs disagree on some labels' if any(
                   o_new[k][0] != o_ref[k][0] for k in o_new) else
               'a clip also tested in another fold' if set(o_new) & set(pooled) else None)
        if why is not None:
          notes.append(f'{name} seed {s} fold {fold}: not paired ({why})')
          unpaired.append(fold)
          continue
        for k in o_new:
          pooled[k] = (o_ref[k][1], o_new[k][1])
        paired.append(fold)
      if not pooled:
        notes.append(f'{name} seed {s}: no fold could be paired with standard training')
        continue
      names = sorted(pooled)
      ref_ok = np.array([pooled[k][0] for k in names])
      new_ok = np.array([pooled[k][1] for k in names])
      b, c = stats.mcnemar_counts(ref_ok, new_ok)
      boot = stats.paired_bootstrap(ref_ok, new_ok, num_resamples=num_resamples, seed=seed)
      per_seed.append((names, ref_ok, new_ok))
      comparisons.append(dict(
          dataset=g['dataset'], backbone=g['backbone'], row=g['row'], method=g['method'],
          reference=ref['method'], seed=s, seeds=[s], folds=paired, unpaired_folds=unpaired,
          n=len(names), ref_error=stats.error_percent(ref_ok), error=stats.error_percent(new_ok),
          diff=boot['diff'], low=boot['low'], high=boot['high'], confidence=boot['confidence'],
          num_resamples=num_resamples, bootstrap_seed=seed, b=b, c=c, p=stats.mcnemar_exact(b, c)))
    if len(per_seed) > 1:
      if any(names != per_seed[0][0] for names, _, _ in per_seed):
        notes.append(f'{name}: the seeds tested different clips; no comparison over all seeds')
        continue
      ref_ok = np.stack([x[1] for x in per_seed])
      new_ok = np.stack([x[2] for x in per_seed])
      boot = stats.paired_bootstrap(ref_ok, new_ok, num_resamples=num_resamples, seed=seed)
      mine = [x for x in comparisons if x['method'] == g['method'] and x['dataset'] == g['dataset']
              and x['backbone'] == g['backbone']]
      comparisons.append(dict(
          dataset=g['dataset'], backbone=g['backbone'], row=g['row'], method=g['method'],
          reference=ref['method'], seed='all', seeds=[x['seed'] for x in mine],
          folds=sorted(set.intersection(*(set(x['folds']) for x in mine))),
          unpaired_folds=sorted(set().union(*(set(x['unpaired_folds']) for x in mine))),
          n=ref_ok.shape[1], ref_error=stats.error_percent(ref_ok),
          error=stats.error_percent(new_ok), diff=boot['diff'], low=boot['low'],
          high=boot['high'], confidence=boot['confidence'], num_resamples=num_resamples,
          bootstrap_seed=seed, b=None, c=None, p=None))
  return comparisons, notes


def _p_text(p: float | None) -> str:
  if p is None:
    return '—'
  return f'{p:.4f}' if p >= 1e-4 else f'{p:.1e}'


def paired_tables(comparisons: list[dict], notes: list[str] = ()) -> list[str]:
  """Markdown lines: per (dataset, backbone), each method against standard on the same clips."""
  if not comparisons and not notes:
    return []
  first = comparisons[0] if comparisons else None
  resamples = first['num_resamples'] if first else stats.BOOTSTRAP_RESAMPLES
  boot_seed = first['bootstrap_seed'] if first else stats.BOOTSTRAP_SEED
  lines = ['## Paired comparisons against standard training', '',
           'Both methods on the same test clips: a seed\'s clips pooled over the folds both ran '
           '(cross-validation tests every clip once per seed). Δ = error(method) − error(standard) '
           'in percentage points (negative: the method makes fewer errors). 95 % CI: paired '
           f'bootstrap over clips ({resamples:,} resamples, numpy seed {boot_seed}, percentile '
           'interval). b = clips standard got right and the method wrong, c = the reverse; '
           'p = McNemar\'s exact two-sided test of b against c. Seed "all": Δ averaged over the '
           'seeds, a clip resampled with all its seeds; no McNemar test there (a clip counts once '
           'per seed, so the clips are not independent).', '']
  keys = []
  for x in comparisons:
    if (x['dataset'], x['row']) not in keys:
      keys.append((x['dataset'], x['row']))
  order = lambda m: (STRATEGY_ORDER.index(base_method(m)) if base_method(m) in STRATEGY_ORDER
                     else 99, m)
  for dataset, row in keys:
    rows = [x for x in comparisons if (x['dataset'], x['row']) == (dataset, row)]
    rows.sort(key=lambda x: (order(x['method']), x['seed'] == 'all', str(x['seed'])))
    lines += [f'### {DATASET_TITLE.get(dataset, dataset)}, {BACKBONE_TITLE.get(row, row)}', '',
              '| method | seed | folds | clips | standard error % | method error % | Δ (pp) | '
              '95 % CI (pp) | b | c | p (McNemar) |', '|---|' + '---|' * 10]
    for x in rows:
      folds = ','.join(str(f) for f in x['folds']) + ('*' if x['unpaired_folds'] else '')
      lines.append(
          f"| {x['method']} | {x['seed']} | {folds} | {x['n']} | {x['ref_error']:.2f} | "
          f"{x['error']:.2f} | {x['diff']:+.2f} | [{x['low']:+.2f}, {x['high']:+.2f}] | "
          f"{'—' if x['b'] is None else x['b']} | {'—' if x['c'] is None else x['c']} | "
          f"{_p_text(x['p'])} |")
    lines.append('')
  if any(x['unpaired_folds'] for x in comparisons):
    lines += ['\\* some folds ran for only one of the two methods (or could not be paired): '
              'compared on the folds listed.', '']
  if notes:
    lines += ['Not paired:', ''] + [f'- {n}' for n in notes] + ['']
  return lines


def per_fold_tables(groups: list[dict]) -> list[str]:
  """Markdown lines: per (dataset, row), each method's error % in every fold of every seed.

  Rows = method and seed, columns = fold 1..K, mean and sample std over the folds, the paper's
  value; with several seeds, a further row per method holds the mean over seeds of each fold and
  the mean and sample std over seeds of the seeds' cross-validated errors.
  """
  keys = []
  for g in groups:
    if (g['dataset'], g['row']) not in keys:
      keys.append((g['dataset'], g['row']))
  keys.sort(key=lambda k: (k[0] not in DATASET_COLUMN, k[0],
                           BACKBONE_ORDER.index(k[1]) if k[1] in BACKBONE_ORDER else 99, k[1]))
  if not keys:
    return []
  lines = ['## Per fold', '',
           'Error % of the last epoch on each test fold. ± std: sample std over the folds of the '
           'seed ("folds"), or over the seeds\' cross-validated errors ("seeds"). (x) = the '
           'paper\'s value. — = fold not run.', '']
  order = lambda g: (STRATEGY_ORDER.index(base_method(g['method']))
                     if base_method(g['method']) in STRATEGY_ORDER else 99, g['method'])
  for dataset, row in keys:
    gs = sorted([g for g in groups if (g['dataset'], g['row']) == (dataset, row)], key=order)
    k = max(max([g['num_folds'] or 0 for g in gs]),
            max(f for g in gs for fs in g['seeds'].values() for f in fs))
    lines += [f'### {DATASET_TITLE.get(dataset, dataset)}, {BACKBONE_TITLE.get(row, row)}', '',
              '| method | seed | ' + ' | '.join(f'fold {f}' for f in range(1, k + 1))
              + ' | mean | ± std | over | paper |', '|---|---|' + '---|' * (k + 4)]
    for g in gs:
      paper = '' if g['paper'] is None else f"{g['paper']:.1f}"
      for s, errs in g['seeds'].items():
        cells = [f'{errs[f]:.2f}' if f in errs else NOT_RUN for f in range(1, k + 1)]
        lines.append(f"| {g['method']} | {s} | " + ' | '.join(cells) +
                     f" | {g['cv_errors'][s]:.2f} | {g['fold_std'][s]:.2f} | folds | {paper} |")
      if len(g['seeds']) > 1:
        cells = []
        for f in range(1, k + 1):
          vals = [errs[f] for errs in g['seeds'].values() if f in errs]
          cells.append(f'{np.mean(vals):.2f}' if vals else NOT_RUN)
        lines.append(f"| {g['method']} | mean of {len(g['seeds'])} | " + ' | '.join(cells) +
                     f" | {g['seed_mean']:.2f} | {g['seed_std']:.2f} | seeds | {paper} |")
    lines.append('')
  return lines


def _stat_cell(st: dict | None, paper: float | None = None, deviates: bool = False) -> str:
  """'12.3 ± 1.0†* (paper)' or '— (paper)' when nothing has run."""
  if st is None:
    s = NOT_RUN
  else:
    s = f"{st['mean']:.1f} ± {st['std']:.1f}"
    s += '†' if st['std_over'] == 'folds' else ''
    s += '*' if st['partial'] else ''
    s += '‡' if deviates else ''
  if paper is not None:
    s += f' ({paper:.1f})'
  return s


def _cell(g: dict | None) -> str:
  if g is None:
    return ''
  s = f"{g['mean']:.1f} ± {g['std']:.1f}"
  if g['std_over'] == 'folds':
    s += '†'
  if g['partial']:
    s += '*'
  if g.get('deviations'):
    s += '‡'
  if g['paper'] is not None:
    s += f" ({g['paper']:.1f})"
  return s


LEGEND = ('Error % (lower is better): mean ± std over seeds of the cross-validated error (mean '
          'over folds of the LAST epoch\'s test-fold error). † = a single seed: ± std over its '
          'folds. * = partial cross-validation (not every fold has run). (x) = the paper\'s value '
          '(its table 1). ‡ = not the paper\'s protocol (see "Protocol deviations"). '
          '— = not run.')


def main_tables(groups: list[dict]) -> list[str]:
  """Markdown lines: per dataset, the paper's table 1 layout and the table 2 ablation rows run."""
  lines = []
  datasets = sorted({g['dataset'] for g in groups}, key=lambda d: (d not in DATASET_COLUMN, d))
  for dataset in datasets:
    gs = [g for g in groups if g['dataset'] == dataset and '[' not in g['method']]
    if gs:
      strategies = [s for s in STRATEGY_ORDER if any(base_method(g['method']) == s for g in gs)]
      rows = sorted({g['row'] for g in gs},
                    key=lambda r: BACKBONE_ORDER.index(r) if r in BACKBONE_ORDER else 99)
      lines += [f'## {DATASET_TITLE.get(dataset, dataset)}', '',
                '| model | ' + ' | '.join(strategies) + ' |',
                '|---|' + '---|' * len(strategies)]
      for row in rows:
        cells = []
        for s in strategies:
          match = [g for g in gs if g['row'] == row and base_method(g['method']) == s]
          cells.append(_cell(match[0] if match else None))
        lines.append(f'| {BACKBONE_TITLE.get(row, row)} | ' + ' | '.join(cells) + ' |')
      lines.append('')
    ablation = [g for g in groups if g['dataset'] == dataset and g['method'] in PAPER_TABLE2
                and g['backbone'] == 'envnetv2']
    if ablation:
      lines += [f'### Ablation (table 2), {DATASET_TITLE.get(dataset, dataset)}, EnvNet-v2 + strong aug',
                '', '| variant | error % |', '|---|---|']
      for method, (title, _) in PAPER_TABLE2.items():
        match = [g for g in ablation if g['method'] == method]
        if match:
          lines.append(f'| {title} | {_cell(match[0])} |')
      lines.append('')
  return lines


def markdown(groups: list[dict], notes: list[str], adversarial: list[dict] = (),
             comparisons: list[dict] = (), paired_notes: list[str] = ()) -> str:
  """The report as markdown text.

  Args:
    groups: the groups of `aggregate`.
    notes: runs and files left out (one line each).
    adversarial: the groups of `aggregate_adversarial`.
    comparisons: the comparisons of `paired_comparisons`, and paired_notes its notes.
  """
  lines = ['# Results', '', LEGEND, '']
  lines += main_tables(groups)
  lines += paired_tables(list(comparisons), list(paired_notes))
  lines += per_fold_tables(groups)
  lines += paper_tables(groups, adversarial)
  deviating = [g for g in list(groups) + list(adversarial) if g.get('deviations')]
  if deviating:
    lines += ['## Protocol deviations (‡)', '',
              'These cells did not use the paper\'s protocol (docs/method.md §5): their numbers '
              'are NOT comparable to the paper\'s value beside them.', '']
    seen = set()
    for g in deviating:
      key = (g['dataset'], g['backbone'], g['method'])
      if key in seen:
        continue
      seen.add(key)
      lines.append(f"- {'/'.join(key)}: {'; '.join(g['deviations'])}")
    lines.append('')
  lines += ['## All groups', '',
            '| dataset | backbone | method | seeds | folds | error % | ± std | over | paper | Δ |',
            '|---|---|---|---|---|---|---|---|---|---|']
  for g in groups:
    paper = '' if g['paper'] is None else f"{g['paper']:.1f}"
    delta = '' if g['paper'] is None else f"{g['mean'] - g['paper']:+.1f}"
    folds = sorted({f for s in g['seeds'].values() for f in s})
    lines.append(f"| {g['dataset']} | {g['backbone']} | {g['method']} | "
                 f"{','.join(str(s) for s in sorted(g['seeds']))} | "
                 f"{','.join(str(f) for f in folds)}{'*' if g['partial'] else ''} | {g['mean']:.2f} | {g['std']:.2f} | "
                 f"{g['std_over']} | {paper} | {delta} |")
  lines.append('')
  if notes:
    lines += ['## Left out', ''] + [f'- {n}' for n in notes] + ['']
  return '\n'.join(lines)


def paper_tables(groups: list[dict], adversarial: list[dict] = ()) -> list[str]:
  """Markdown lines of every cell of the paper's tables 1-3 for the paper datasets that have runs.

  Measured cells as in the compact tables, — where nothing has run, the paper's value beside each.
  Nothing when no run is on ESC-50, ESC-10 or UrbanSound8K.
  """
  datasets = [d for d in DATASET_COLUMN
              if any(g['dataset'] == d for g in list(groups) + list(adversarial))]
  if not datasets:
    return []
  lines = ['## Against the paper: every cell of tables 1-3', '',
           'Measured (paper) per cell; — = not run yet. Commands: `python launch/sweep.py '
           '--table=N` (configs/table1/, configs/ablation/, configs/table3.py).', '']
  find = lambda d, row, m: next((g for g in groups if g['dataset'] == d and g['row'] == row
                                 and g['method'] == m), None)
  for dataset in datasets:
    strategies = [s for s in STRATEGY_ORDER if s != 'mixup'
                  or any(g['dataset'] == dataset and g['method'] == 'mixup' for g in groups)]
    lines += [f'### Table 1, {DATASET_TITLE[dataset]}', '',
              '| model | ' + ' | '.join(strategies) + ' |', '|---|' + '---|' * len(strategies)]
    for row in BACKBONE_ORDER:
      cells = []
      for strategy in strategies:
        method = strategy + ('+aug' if row.endswith('+aug') else '')
        g = find(dataset, row, method)
        cells.append(_cell(g) if g else _stat_cell(None, paper_value(
            dataset, row.replace('+aug', ''), method)))
      lines.append(f'| {BACKBONE_TITLE[row]} | ' + ' | '.join(cells) + ' |')
    lines.append('')
  lines += ['### Table 2 (ablation), EnvNet-v2 + strong aug, InterMix', '',
            '| variant | ' + ' | '.join(DATASET_TITLE[d] for d in DATASET_COLUMN) + ' |',
            '|---|' + '---|' * len(DATASET_COLUMN)]
  for method, (title, values) in PAPER_TABLE2.items():
    cells = []
    for d, col in DATASET_COLUMN.items():
      g = find(d, 'envnetv2+aug', method)
      cells.append(_cell(g) if g else _stat_cell(None, values[col]))
    lines.append(f'| {title} | ' + ' | '.join(cells) + ' |')
  lines.append('')
  for dataset in [d for d in datasets
                  if d == 'esc10' or any(a['dataset'] == d for a in adversarial)]:
    gs = [a for a in adversarial if a['dataset'] == dataset]
    eps_values = sorted(set(PAPER_TABLE3_EPS if dataset == 'esc10' else ())
                        | {e for a in gs for e in a['eps']}, reverse=True)
    lines += [f'### Table 3 (FGSM), {DATASET_TITLE[dataset]}', '',
              'One-step untargeted FGSM on the normalised waveform, x + eps sign(grad_x CE), every '
              'test crop attacked; error % of the 10-crop prediction (`python -m '
              'intermix_jax.adversarial`). The paper does not name its backbone.', '',
              '| model | method | clean | ' + ' | '.join(f'eps {eps_label(e)}' for e in eps_values)
              + ' |', '|---|---|---|' + '---|' * len(eps_values)]
    backbones = sorted({a['backbone'] for a in gs},
                       key=lambda b: BACKBONE_ORDER.index(b) if b in BACKBONE_ORDER else 99)
    rows = [(b, a['method'], a) for b in backbones for a in gs if a['backbone'] == b]
    if dataset == 'esc10':
      for b in backbones or ['(not run)']:
        for m in PAPER_TABLE3:
          if not any(r[0] == b and r[1] == m for r in rows):
            rows.append((b, m, None))
    order = lambda r: ((BACKBONE_ORDER.index(r[0]) if r[0] in BACKBONE_ORDER else 99),
                       STRATEGY_ORDER.index(base_method(r[1])) if base_method(r[1]) in
                       STRATEGY_ORDER else 99, r[1])
    for b, m, a in sorted(rows, key=order):
      dev = bool(a and a['deviations'])
      cells = [_stat_cell(a['clean'] if a else None, deviates=dev)]
      for e in eps_values:
        st = a['attacked'].get(e) if a else None
        cells.append(_stat_cell(st, paper_adversarial(dataset, m, e), deviates=dev))
      lines.append(f'| {BACKBONE_TITLE.get(b, b)} | {m} | ' + ' | '.join(cells) + ' |')
    lines.append('')
  return lines


# ------------------------------------------------------------------------------------------------
# Plots
# ------------------------------------------------------------------------------------------------
def _safe(name: str) -> str:
  return ''.join(ch if ch.isalnum() or ch in '-_.+' else '_' for ch in name)


def _plt():
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  return plt


def learning_curve(runs: list[dict], key: str) -> dict | None:
  """history[key] of `runs` at each epoch: mean, std (sample), min, max over the runs there.

  Args:
    runs: results.json dicts (e.g. the folds of one method).
    key: a per-epoch history field: 'test_error' (%, on evaluated epochs only), 'train_loss',
      'train_error' (%).

  Returns:
    None when no run has the field, else dict of equal-length lists: epoch (1-based, ascending),
    mean, std, min, max, n (runs with a value at that epoch).
  """
  per_epoch = collections.defaultdict(list)
  for r in runs:
    for h in r.get('history') or []:
      v = h.get(key)
      if _is_number(v):
        per_epoch[int(h['epoch'])].append(float(v))
  if not per_epoch:
    return None
  epochs = sorted(per_epoch)
  vals = [per_epoch[e] for e in epochs]
  return dict(epoch=epochs, mean=[float(np.mean(v)) for v in vals], std=[_std(v) for v in vals],
              min=[float(min(v)) for v in vals], max=[float(max(v)) for v in vals],
              n=[len(v) for v in vals])


def plot_learning_curves(groups: list[dict], out: str) -> list[str]:
  """One PNG per (dataset, backbone): test error and train loss per epoch, one curve per method.

  Each curve is the mean over the method's runs (its folds, of every seed in the table) at each
  epoch; the shaded band spans their min to max. The x axis is each run's own epoch: under the
  paper's protocol mixing methods train twice the epochs of standard training. Runs without a
  train_loss history show train error instead (the panel says so).
  """
  plt = _plt()
  from matplotlib.patches import Patch
  written = []
  for (dataset, backbone) in sorted({(g['dataset'], g['backbone']) for g in groups}):
    gs = [x for x in groups if (x['dataset'], x['backbone']) == (dataset, backbone)]
    gs.sort(key=lambda g: (STRATEGY_ORDER.index(base_method(g['method']))
                           if base_method(g['method']) in STRATEGY_ORDER else 99, g['method']))
    train_key = ('train_loss' if any(learning_curve(g['runs'], 'train_loss') for g in gs)
                 else 'train_error')
    fig, (ax_test, ax_train) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, g in enumerate(gs):
      color = f'C{i % 10}'
      runs = list(_first_by_seed_fold(g['runs']).values())
      epochs = max((int(r.get('num_epochs') or 0) for r in runs), default=0)
      label = f"{g['method']} ({len(runs)} runs" + (f', {epochs} epochs)' if epochs else ')')
      for ax, key in ((ax_test, 'test_error'), (ax_train, train_key)):
        c = learning_curve(runs, key)
        if c is None:
          continue
        few = len(c['epoch']) < 30
        ax.plot(c['epoch'], c['mean'], '-', color=color, marker='o' if few else None,
                markersize=3, label=label)
        ax.fill_between(c['epoch'], c['min'], c['max'], color=color, alpha=0.15, linewidth=0)
    seeds = sorted({s for g in gs for s in g['seeds']})
    over = 'folds' if len(seeds) == 1 else 'folds and seeds'
    for ax, ylabel in ((ax_test, 'test error % (10-crop, evaluated epochs)'),
                       (ax_train, 'train loss (mean over the epoch)' if train_key == 'train_loss'
                        else 'train error % (no train_loss recorded)')):
      ax.set_xlabel("epoch (each run's own schedule; mixing runs 2x the epochs of standard)")
      ax.set_ylabel(ylabel)
      ax.grid(alpha=0.3)
      handles, _ = ax.get_legend_handles_labels()
      if handles:
        ax.legend(handles=handles + [Patch(color='gray', alpha=0.3,
                                           label=f'shaded: min–max over {over}')], fontsize=7)
    fig.suptitle(f'{DATASET_TITLE.get(dataset, dataset)}, {BACKBONE_TITLE.get(backbone, backbone)}'
                 f': mean over {over} (seed{"s" if len(seeds) > 1 else ""} '
                 f'{",".join(str(s) for s in seeds)})', fontsize=10)
    path = os.path.join(out, f'curves_{_safe(dataset)}_{_safe(backbone)}.png')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
  return written


def confusion_matrix(runs: list[dict], num_classes: int) -> np.ndarray:
  """int64 (C, C) counts, rows = true class, columns = predicted, summed over `runs`."""
  cm = np.zeros((num_classes, num_classes), np.int64)
  for r in runs:
    p = r.get('predictions') or {}
    for t, q in zip(p.get('labels', []), p.get('preds', [])):
      cm[int(t), int(q)] += 1
  return cm


def plot_confusion(groups: list[dict], out: str) -> list[str]:
  plt = _plt()
  written = []
  for g in groups:
    num_classes = int(g['runs'][0].get('num_classes', 0))
    names = g['runs'][0].get('class_names') or [str(i) for i in range(num_classes)]
    cm = confusion_matrix(g['runs'], num_classes)
    if cm.sum() == 0:
      continue
    rates = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    size = max(4.0, 0.28 * num_classes + 2.5)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(rates, cmap='Blues', vmin=0, vmax=1)
    ax.set_xticks(range(num_classes))
    ax.set_yticks(range(num_classes))
    fs = 7 if num_classes <= 12 else 4
    ax.set_xticklabels(names, rotation=90, fontsize=fs)
    ax.set_yticklabels(names, fontsize=fs)
    if num_classes <= 12:
      for i in range(num_classes):
        for j in range(num_classes):
          if cm[i, j]:
            ax.text(j, i, str(cm[i, j]), ha='center', va='center', fontsize=7,
                    color='white' if rates[i, j] > 0.5 else 'black')
    ax.set_xlabel('predicted')
    ax.set_ylabel('true')
    ax.set_title(f"{g['dataset']} {g['backbone']} {g['method']}\n{int(cm.sum())} test "
                 f"predictions, error {100 * (1 - np.trace(cm) / cm.sum()):.1f}%", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    path = os.path.join(out, f"confusion_{_safe(g['dataset'])}_{_safe(g['backbone'])}_"
                             f"{_safe(g['method'])}.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
  return written


def plot_error_bars(groups: list[dict], out: str) -> list[str]:
  """One PNG per dataset: bars = mean error per (row, method), whiskers = std, x = paper value."""
  plt = _plt()
  written = []
  for dataset in sorted({g['dataset'] for g in groups}):
    gs = [g for g in groups if g['dataset'] == dataset]
    rows = sorted({g['row'] for g in gs},
                  key=lambda r: BACKBONE_ORDER.index(r) if r in BACKBONE_ORDER else 99)
    methods = sorted({g['method'] for g in gs},
                     key=lambda m: (STRATEGY_ORDER.index(base_method(m))
                                    if base_method(m) in STRATEGY_ORDER else 99, m))
    width = 0.8 / max(len(methods), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(rows) * max(1, len(methods) / 3)), 4.5))
    for j, m in enumerate(methods):
      xs, ys, es, px, py = [], [], [], [], []
      for i, row in enumerate(rows):
        match = [g for g in gs if g['row'] == row and g['method'] == m]
        if match:
          xs.append(i + (j - (len(methods) - 1) / 2) * width)
          ys.append(match[0]['mean'])
          es.append(match[0]['std'])
          if match[0]['paper'] is not None:
            px.append(xs[-1])
            py.append(match[0]['paper'])
      ax.bar(xs, ys, width, yerr=es, capsize=3, color=f'C{j % 10}', label=m)
      if px:
        ax.plot(px, py, 'kx', markersize=7)
    ax.plot([], [], 'kx', label='paper')
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([BACKBONE_TITLE.get(r, r) for r in rows])
    ax.set_ylabel('error % (mean ± std)')
    ax.set_title(DATASET_TITLE.get(dataset, dataset))
    ax.grid(axis='y', alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = os.path.join(out, f'errorbars_{_safe(dataset)}.png')
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
  return written


def plot_adversarial(adversarial: list[dict], out: str) -> list[str]:
  """One PNG per dataset: error (mean ± std) vs FGSM eps per (backbone, method); paper as x."""
  plt = _plt()
  written = []
  for dataset in sorted({a['dataset'] for a in adversarial}):
    gs = [a for a in adversarial if a['dataset'] == dataset]
    eps_values = sorted({e for a in gs for e in a['eps']})
    labels = ['clean'] + [eps_label(e) for e in eps_values]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, a in enumerate(gs):
      color = f'C{i % 10}'
      pts = [(0, a['clean'])] + [(j + 1, a['attacked'].get(e)) for j, e in enumerate(eps_values)]
      pts = [(x, st) for x, st in pts if st is not None]
      ax.errorbar([x for x, _ in pts], [st['mean'] for _, st in pts],
                  yerr=[st['std'] for _, st in pts], color=color, marker='o', capsize=3,
                  label=f"{BACKBONE_TITLE.get(a['backbone'], a['backbone'])} {a['method']}")
      paper = [(j + 1, paper_adversarial(dataset, a['method'], e))
               for j, e in enumerate(eps_values)]
      paper = [(x, v) for x, v in paper if v is not None]
      if paper:
        ax.plot([x for x, _ in paper], [v for _, v in paper], 'x--', color=color, alpha=0.7)
    ax.plot([], [], 'kx--', label='paper (table 3)')
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels)
    ax.set_xlabel('FGSM eps (normalised waveform)')
    ax.set_ylabel('10-crop test error % (mean ± std)')
    ax.set_title(f'{DATASET_TITLE.get(dataset, dataset)}: clean and attacked error')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = os.path.join(out, f'adversarial_{_safe(dataset)}.png')
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
  return written


def write_report(paths: list[str], out: str, plots: bool = True) -> dict:
  """Aggregates the runs (and adversarial.json) under `paths` into `out`.

  A results.json or adversarial.json that cannot be read or lacks the fields the report needs is
  left out; it is named in the notes and in 'bad_files'.

  Returns:
    {'markdown', 'groups', 'notes', 'adversarial', 'comparisons' (of `paired_comparisons`),
    'paired_notes', 'bad_files' (one line per file left out), 'files'}.
  """
  runs, bad = load_runs(paths)
  records, bad_adv = load_runs(paths, ADVERSARIAL_FILE)
  bad = bad + bad_adv
  if not runs and not records:
    where = ', '.join(paths)
    if bad:
      raise ValueError(f'report: no usable results.json under {where}; {len(bad)} left out, the '
                       f'first: {bad[0]}')
    raise FileNotFoundError(f'report: no results.json under {where}')
  groups, notes = aggregate(runs)
  add_protocol_deviations(groups)
  adversarial, adv_notes = aggregate_adversarial(records)
  comparisons, paired_notes = paired_comparisons(groups)
  notes = bad + notes + adv_notes
  os.makedirs(out, exist_ok=True)
  text = markdown(groups, notes, adversarial, comparisons, paired_notes)
  files = [os.path.join(out, 'report.md'), os.path.join(out, 'summary.json')]
  with open(files[0], 'w') as f:
    f.write(text)
  summary = []
  for g in groups:
    entry = {k: v for k, v in g.items() if k != 'runs'}
    entry['test_error_curve'] = learning_curve(list(_first_by_seed_fold(g['runs']).values()),
                                               'test_error')
    summary.append(entry)
  adv_summary = [dict(a, attacked={eps_label(e): st for e, st in a['attacked'].items()})
                 for a in adversarial]
  with open(files[1], 'w') as f:
    json.dump(dict(groups=summary, adversarial=adv_summary, paired=comparisons,
                   paired_notes=paired_notes, bad_files=bad, notes=notes), f, indent=1,
              sort_keys=True, default=lambda o: str(o))
  if plots and groups:
    files += plot_learning_curves(groups, out)
    files += plot_confusion(groups, out)
    files += plot_error_bars(groups, out)
  if plots and adversarial:
    files += plot_adversarial(adversarial, out)
  return dict(markdown=text, groups=groups, notes=notes, adversarial=adversarial,
              comparisons=comparisons, paired_notes=paired_notes, bad_files=bad, files=files)


def summary_text(result: dict) -> str:
  """What the command line prints: the legend, the main tables and the paired comparisons."""
  lines = ['# Results', '', LEGEND, '']
  lines += main_tables(result['groups'])
  lines += paired_tables(result['comparisons'], result['paired_notes'])
  if not result['groups']:
    lines += ['No finished training run found (the attacks of table 3 are in report.md).', '']
  return '\n'.join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog='python -m intermix_jax.report',
                              description=__doc__.splitlines()[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
  p.add_argument('dirs', nargs='+', help='workdirs (or parents of workdirs) holding results.json')
  p.add_argument('--out', default=None, help='output directory (default: DIR/report or ./report)')
  p.add_argument('--no-plots', action='store_true', help='markdown and JSON only')
  p.add_argument('--full', action='store_true',
                 help='print the whole report.md (default: the main tables and paired comparisons)')
  args = p.parse_args(argv)
  out = args.out or (os.path.join(args.dirs[0], 'report') if len(args.dirs) == 1
                     and os.path.isdir(args.dirs[0]) else 'report')
  try:
    result = write_report(args.dirs, out, plots=not args.no_plots)
  except (FileNotFoundError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  print(result['markdown'] if args.full else summary_text(result))
  for line in result['bad_files']:
    print(f'warning: {line}', file=sys.stderr)
  print(f'wrote {len(result["files"])} files to {out} (full report: '
        f'{os.path.join(out, "report.md")})', file=sys.stderr)
  return 0


if __name__ == '__main__':
  sys.exit(main())
