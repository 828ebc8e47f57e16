"""Finding, checking and aggregating finished runs: the numbers behind every table and plot.

Errors are in %. The table's rule (docs/method.md §5) is spelled out in the command's help
(`report/__main__.py`); names and orders come from `mixing.STRATEGY_NAMES` and `paper`.
"""
from __future__ import annotations

import collections
import hashlib
import json
import math
import os
from typing import Iterable

import numpy as np

from intermix_jax import mixing
from intermix_jax import protocol
from intermix_jax import stats
from intermix_jax import workdir
from intermix_jax.report.paper import (  # pylint: disable=g-multiple-import
    BACKBONE_ORDER, DATASET_COLUMN, PAPER_TABLE1, PAPER_TABLE2, PAPER_TABLE3, PAPER_TABLE3_EPS,
    TABLE2_BACKBONE, TABLE3_DATASET,
)

STRATEGY_ORDER = mixing.STRATEGY_NAMES
# Standard training: the reference of the paired comparisons, the one strategy not doubling epochs.
STANDARD = mixing.Standard.name

RESULTS_FILE = 'results.json'
ADVERSARIAL_FILE = 'adversarial.json'  # written by python -m intermix_jax.adversarial

# Config fields that do not define an experiment (`setup_of`): the replicates (fold, seed, seeds),
# where the data lives (the data is compared by `dataset_identity`), what may change within a
# workdir (`workdir.MUTABLE_FIELDS`), the checkpoint cadence (a resume is bitwise equal), the eval
# batch size (a padded batch is masked) and opt_defaults_from (the opt fields themselves count).
NOT_DEFINING = (('fold', 'seed', 'seeds') + workdir.MUTABLE_FIELDS + workdir.DATA_FIELDS
                + ('checkpoint_every_epochs', 'keep_checkpoints', 'eval_batch_size',
                   'opt_defaults_from'))
# Config fields compared through the method label (`Strategy.label`, '+aug'): an option the
# strategy does not read (mixing.alpha of a standard run) never splits a group.
METHOD_FIELDS = ('strategy', 'mixing', 'strong_augment')
# The parts of `dataset_identity` that differ between the folds of one cross-validation.
FOLD_IDENTITY_FIELDS = ('test_fold', 'train_clips', 'test_clips', 'train_digest', 'test_digest')


def find_results(paths: Iterable[str], name: str = RESULTS_FILE) -> list[str]:
  """Every file called `name` under `paths`, sorted; a path that is a file counts as an
  adversarial.json when it is named so, else as a results.json."""
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

  A results.json needs a 'status'; a finished one also dataset, backbone, method (strings), fold,
  seed (integers), final_error (finite or null), an optional history (dicts with an 'epoch'). An
  adversarial.json needs dataset to seed, a finite clean_error and an attacked_error dict.
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
  """The records in every file called `name` under `paths` (each with '_path', absolute), and one
  line per file left out (unreadable, not JSON or `invalid_reason`), naming it and why."""
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
    r['method'] = method_of(r)
    runs.append(r)
  return runs, bad


def method_of(record: dict) -> str:
  """A run's method label by today's rule (`Strategy.label` of its recorded config as read by
  `workdir.with_added_fields`: without mixing.pairing, shared pairs), else its `method`."""
  config = record.get('config')
  if not isinstance(config, dict) or not isinstance(config.get('mixing'), dict):
    return record['method']
  strategy = workdir.strategy_of(workdir.with_added_fields(config))
  if strategy is None:
    return record['method']
  return strategy.label() + ('+aug' if config.get('strong_augment') else '')


def setup_of(record: dict) -> dict:
  """What defines a run's experiment besides its dataset, backbone and method label: {dotted
  config key: value} without NOT_DEFINING, METHOD_FIELDS and `workdir.REMOVED_FIELDS` (older
  configs filled with `workdir.ADDED_FIELDS`), and 'dataset_identity' without FOLD_IDENTITY_FIELDS
  (None when unrecorded)."""
  config = record.get('config')
  flat = dict(workdir.ADDED_FIELDS)
  flat.update(workdir.flat_config(config) if isinstance(config, dict) else {})
  setup = {k: v for k, v in flat.items() if k not in NOT_DEFINING and
           k not in workdir.REMOVED_FIELDS and k.split('.')[0] not in METHOD_FIELDS}
  identity = record.get('dataset_identity')
  setup['dataset_identity'] = ({k: v for k, v in identity.items() if k not in FOLD_IDENTITY_FIELDS}
                               if isinstance(identity, dict) else None)
  return setup


def _setup_key(setup: dict) -> str:
  return json.dumps(setup, sort_keys=True, default=str)


_ABSENT = object()


def _value_text(key: str, value, quote: bool = False) -> str:
  """A setup value as a variant names it ('0.05', dataset_identity: '3f2a9c1e'); strings quoted
  with `quote`."""
  if value is _ABSENT:
    return '<absent>'
  if key == 'dataset_identity':
    return 'unrecorded' if value is None else hashlib.sha256(
        _setup_key(value).encode('utf-8')).hexdigest()[:8]
  if isinstance(value, str) and not quote:
    return value
  return json.dumps(value, separators=(',', ':'))


def setup_variants(setups: list[dict]) -> tuple[list[str], list[str]]:
  """(the fields in which setups differ, each one's distinct variant text), e.g. (['num_epochs'],
  ['num_epochs=2', 'num_epochs=4']); ([], ['']) for a single setup."""
  keys = sorted(set().union(*setups)) if len(setups) > 1 else []
  for quote in (False, True):
    differing = [k for k in keys
                 if len({_value_text(k, s.get(k, _ABSENT), quote) for s in setups}) > 1]
    texts = [', '.join(f'{k}={_value_text(k, s.get(k, _ABSENT), quote)}' for k in differing)
             for s in setups]
    if len(set(texts)) == len(texts):
      break
  return differing, texts


def count_text(n: int, word: str) -> str:
  """'1 run', '2 runs'."""
  return f'{n} {word}{"" if n == 1 else "s"}'


def with_variant(title: str, variant: str | None) -> str:
  """'PiczakCNN', or 'PiczakCNN {num_epochs=4}' for one of several setups in a table row."""
  return title + (f' {{{variant}}}' if variant else '')


def method_title(g: dict) -> str:
  """A group's method as the tables name it: 'intermix' or 'intermix {opt.lr=0.05}'."""
  return with_variant(g['method'], g.get('variant'))


def group_name(g: dict) -> str:
  """'esc10/piczakcnn/intermix {opt.lr=0.05}': a group in the notes."""
  return f"{g['dataset']}/{g['backbone']}/{method_title(g)}"


def _row(backbone: str, method: str) -> str:
  return backbone + ('+aug' if method.endswith('+aug') else '')


def _split_by_setup(records: list[dict], notes: list[str]) -> list[tuple[dict, list]]:
  """[({dataset, backbone, method, row, setup, variant}: a group's first fields, its records)]
  sorted, one per setup; one note line per table row holding several setups, and per row whose
  runs lack a recorded dataset identity (what is done then: the notes' texts below)."""
  pairs = [(r, setup_of(r)) for r in records]
  recorded = collections.defaultdict(dict)  # (dataset, row, config) -> {identity key: identity}
  row_config = lambda r, s: (r['dataset'], _row(r['backbone'], r['method']),
                             _setup_key(dict(s, dataset_identity=None)))
  for r, s in pairs:
    if s['dataset_identity'] is not None:
      recorded[row_config(r, s)][_setup_key(s['dataset_identity'])] = s['dataset_identity']
  taken, apart = collections.Counter(), collections.Counter()
  setups = {}
  # (dataset, table row) -> {(method, setup key): records}
  rows = collections.defaultdict(lambda: collections.defaultdict(list))
  for r, s in pairs:
    known = ([] if s['dataset_identity'] is not None
             else list(recorded.get(row_config(r, s), {}).values()))
    if known:
      (taken if len(known) == 1 else apart)[row_config(r, s)[:2]] += 1
    setup = dict(s, dataset_identity=known[0]) if len(known) == 1 else s
    setups[_setup_key(setup)] = setup
    rows[row_config(r, s)[:2]][(r['method'], _setup_key(setup))].append(r)
  for counts, what in ((taken, '(older code) counted with the runs of the same config that '
                               'recorded one: same dataset name and config; paired comparisons '
                               'also check the clips'),
                       (apart, 'kept apart (dataset_identity=unrecorded): runs of the same config '
                               'recorded several identities')):
    notes += [f'{dataset}/{row}: {count_text(n, "run")} without a recorded dataset identity {what}'
              for (dataset, row), n in sorted(counts.items())]
  out = []
  for (dataset, row), groups in sorted(rows.items()):
    skeys = sorted({k for _, k in groups})
    differing, texts = setup_variants([setups[k] for k in skeys])
    if len(skeys) > 1:
      parts = [f'{{{text}}}: ' + ', '.join(f'{m} {count_text(len(rs), "run")}'
                                          for (m, k), rs in sorted(groups.items()) if k == skey)
               for skey, text in zip(skeys, texts)]
      notes.append(f'{dataset}/{row}: {len(skeys)} experiment setups, never averaged together, '
                   f'shown apart (their configs differ in {", ".join(differing)}): '
                   + '; '.join(parts))
    variant = dict(zip(skeys, texts))
    out += [(dict(dataset=dataset, backbone=rs[0]['backbone'], method=m, row=row, setup=setups[k],
                  variant=variant[k]), rs) for (m, k), rs in groups.items()]
  return sorted(out, key=lambda x: [x[0][k] for k in ('dataset', 'backbone', 'method', 'variant')])


def _one_per_seed_fold(records: list[dict], name: str, result, notes: list[str],
                       what: str = 'runs') -> dict:
  """{(seed, fold): record}: of several records of one (seed, fold), the first by path when their
  `result(record)` are equal, else none; one note line names them either way."""
  by_key = collections.defaultdict(list)
  for r in sorted(records, key=lambda r: r['_path']):
    by_key[(int(r['seed']), int(r['fold']))].append(r)
  out = {}
  for (seed, fold), rs in sorted(by_key.items()):
    if all(result(r) == result(rs[0]) for r in rs[1:]):
      out[(seed, fold)] = rs[0]
    where = f'{name} seed {seed} fold {fold}: {len(rs)} {what} of this experiment'
    if len(rs) > 1 and (seed, fold) in out:
      notes.append(f'{where} with the same result; counted once ({rs[0]["_path"]}; not: '
                   f'{", ".join(r["_path"] for r in rs[1:])})')
    elif len(rs) > 1:
      notes.append(f'{where} disagree; none counted (move all but one out of the report\'s '
                   f'folders): {", ".join(r["_path"] for r in rs)}')
  return out


def _history(run: dict, key: str = 'test_error') -> list[tuple[int, float]]:
  """[(epoch, value)] of a run's history entries with a number under `key` (for test_error %: the
  evaluated epochs)."""
  return [(int(h['epoch']), float(h[key])) for h in run.get('history') or []
          if _is_number(h.get(key))]


def best_epoch_error(run: dict) -> float | None:
  """The lowest test-fold error % over a run's evaluated epochs, None when it records none (the
  reference codes' selection, optimistic; never the headline, docs/method.md §5)."""
  return min((e for _, e in _history(run)), default=None)


def base_method(method: str) -> str:
  """'intermix[r-weighting]+aug' -> 'intermix'."""
  return method.split('[')[0].split('+')[0]


def paper_value(dataset: str, backbone: str, method: str) -> float | None:
  """The paper's table 1 / table 2 value for a cell (docs/method.md §6 / §3), or None."""
  col = DATASET_COLUMN.get(dataset)
  if col is None:
    return None
  if method in PAPER_TABLE2 and backbone == TABLE2_BACKBONE:
    return PAPER_TABLE2[method][1][col]
  if '[' in method:  # other option variants: no paper number
    return None
  values = PAPER_TABLE1.get(_row(backbone, method), {}).get(base_method(method))
  return None if values is None else values[col]


def strategy_rank(method: str) -> int:
  """Position of a method's strategy in STRATEGY_ORDER (99 when not a registered strategy)."""
  strategy = base_method(method)
  return STRATEGY_ORDER.index(strategy) if strategy in STRATEGY_ORDER else 99


def method_order(g: dict) -> tuple:
  """The sort key of a group (or comparison) among its row's: strategy, method, variant."""
  return strategy_rank(g['method']), g['method'], g['variant']


def row_rank(row: str) -> int:
  """Position of a table row (backbone, '+aug') in the paper's table 1 (99 when not there)."""
  return BACKBONE_ORDER.index(row) if row in BACKBONE_ORDER else 99


def _std(values: list[float]) -> float | None:
  """Sample std (ddof=1) of `values`; None for a single value (no spread, never a '± 0.0')."""
  return float(np.std(values, ddof=1)) if len(values) > 1 else None


def _complete_seeds(records: list[dict], value_of, expected: int | None) -> tuple[dict, bool]:
  """({seed: {fold: value}} of the records' `value_of` (None: no value) for the seeds with every
  fold 1..expected, partial): when no seed has them all, every seed with a value, partial=True."""
  seeds = collections.defaultdict(dict)
  for r, v in zip(records, map(value_of, records)):
    if v is not None:
      seeds[int(r['seed'])][int(r['fold'])] = float(v)
  complete = {s: f for s, f in seeds.items()
              if expected is None or sorted(f) == list(range(1, expected + 1))}
  return (complete, False) if complete else (dict(seeds), True)


def _spread(complete: dict, partial: bool) -> dict:
  """{seed: {fold: error}} -> cv_errors {seed: mean over its folds}, mean and sample std over the
  seeds' cv_errors, or over the folds of a single seed (std_over 'seeds' | 'folds'), n (values the
  std is over; std None when 1) and partial."""
  cv = {s: float(np.mean(list(f.values()))) for s, f in complete.items()}
  values = list(cv.values()) if len(cv) > 1 else list(next(iter(complete.values())).values())
  return dict(cv_errors=cv, mean=float(np.mean(values)), std=_std(values),
              std_over='seeds' if len(cv) > 1 else 'folds', n=len(values), partial=partial)


def aggregate(runs: list[dict]) -> tuple[list[dict], list[str], list[str]]:
  """Groups finished runs by experiment (`setup_of`), one run per (seed, fold); a fold whose runs
  tested other clips is left out.

  Returns:
    (groups, left_out: one line per unfinished run, grouping: one line per row split into setups,
    duplicate (seed, fold), fold or seed set aside). A group: dataset, backbone, method, row,
    setup, variant ('' when alone in its row), seeds {seed: {fold: error}}, the fields of
    `_spread`, num_folds, paper, fold_std {seed: std over its folds}, seed_mean, seed_std (over the
    seeds' cv_errors), best (the same for `best_epoch_error`, with its seeds; None when a run has
    no evaluated epoch), eval_every_epochs, runs (the results dicts counted, one per (seed, fold)),
    deviations (`_deviations` of the runs).
  """
  usable = lambda r: r.get('status') == 'finished' and r.get('final_error') is not None
  finished = [r for r in runs if usable(r)]
  left_out = [f"{r['_path']}: status {r.get('status')!r}, left out" for r in runs if not usable(r)]
  groups, grouping = [], []
  for head, members in _split_by_setup(finished, grouping):
    name = group_name(head)
    chosen = _one_per_seed_fold(members, name, lambda r: (
        r['final_error'], _history(r), r.get('predictions')), grouping)
    for fold in sorted({f for _, f in chosen}):
      digests = collections.defaultdict(list)
      for (seed, f), r in chosen.items():
        identity = r.get('dataset_identity')
        if f == fold and isinstance(identity, dict):
          digests[(identity.get('train_digest'), identity.get('test_digest'))].append(seed)
      if len(digests) > 1:
        grouping.append(f'{name} fold {fold}: its runs trained or tested on other clips (seeds '
                        + '; '.join(f'{",".join(map(str, v))}: train/test digests {t}/{u}'
                                    for (t, u), v in sorted(digests.items()))
                        + '); fold left out')
        chosen = {k: r for k, r in chosen.items() if k[1] != fold}
    if not chosen:
      continue
    expected = max(int(r.get('num_folds') or 0) for r in members) or None
    complete, partial = _complete_seeds(list(chosen.values()), lambda r: r['final_error'], expected)
    if not partial:
      for seed in sorted({s for s, _ in chosen} - set(complete)):
        missing = sorted(set(range(1, expected + 1)) - {f for s, f in chosen if s == seed})
        grouping.append(f'{name} seed {seed}: folds {missing} missing; seed left out of the '
                        'table (another seed has every fold)')
    spread = _spread(complete, partial)
    best_seeds = {s: {f: best_epoch_error(chosen[(s, f)]) for f in folds}
                  for s, folds in sorted(complete.items())}
    best = None if any(v is None for folds in best_seeds.values() for v in folds.values()) else (
        dict(_spread(best_seeds, partial), seeds=best_seeds))
    counted = [chosen[k] for k in sorted(chosen) if k[0] in complete]
    groups.append(dict(head, **spread,
                       seeds={s: dict(sorted(f.items())) for s, f in sorted(complete.items())},
                       num_folds=expected,
                       paper=paper_value(head['dataset'], head['backbone'], head['method']),
                       fold_std={s: _std(list(f.values())) for s, f in sorted(complete.items())},
                       seed_mean=spread['mean'],
                       seed_std=spread['std'] if spread['std_over'] == 'seeds' else None,
                       best=best, eval_every_epochs=head['setup'].get('eval_every_epochs'),
                       runs=counted, deviations=_deviations(counted)))
  return groups, left_out, grouping


def protocol_deviations(run: dict) -> list[str] | None:
  """How a run's config departs from the paper's protocol (docs/method.md §5), e.g.
  ['num_epochs 30 (protocol 600)']; [] when it follows it, None when it cannot be told."""
  cfg = run.get('config') or {}
  dataset, backbone = run.get('dataset'), run.get('backbone')
  needed = ('num_epochs', 'opt', 'double_epochs_for_mixing', 'batch_size', 'model')
  row = protocol.optimisation_row(backbone, dataset) if dataset in DATASET_COLUMN else None
  if row is None or any(k not in cfg for k in needed):
    return None
  opt = cfg['opt']
  checks = [('num_epochs', cfg['num_epochs'], row['num_epochs']),
            ('opt.lr', opt.get('lr'), row['lr']),
            ('opt.schedule', tuple(opt.get('schedule') or ()), tuple(row['schedule'])),
            ('opt.warmup_epochs', opt.get('warmup_epochs'), row['warmup_epochs'])]
  for name, want in protocol.FIXED.items():  # lacked: a top-level field reads as FIXED's, else None
    parent, _, field = name.rpartition('.')
    checks.append((name, cfg[parent].get(field) if parent else cfg.get(name, want), want))
  strategy = run.get('strategy', cfg.get('strategy'))
  if strategy not in STRATEGY_ORDER or mixing.get_strategy(strategy).mixes:
    checks.append(('double_epochs_for_mixing', cfg['double_epochs_for_mixing'], True))
  deviations = [f'{name} {value} (protocol {want})' for name, value, want in checks
                if value != want]
  identity = run.get('dataset_identity') or {}
  rate = identity.get('sample_rate')
  low = protocol.upsampled_rates(dataset, identity.get('source_sample_rates'), rate)
  if low:
    deviations.append(f'source audio {", ".join(map(str, low))} Hz upsampled to {rate} Hz '
                      f'(protocol {protocol.OFFICIAL_SAMPLE_RATES[dataset]} Hz, downsampled where '
                      'needed)')
  return deviations


def _deviations(runs: list[dict]) -> list[str]:
  """The sorted union of the runs' `protocol_deviations`."""
  return sorted({d for r in runs for d in protocol_deviations(r) or []})


def _cv_stats(records: list[dict], value_of, expected: int | None) -> dict | None:
  """`_spread` of `_complete_seeds`, with the seeds and folds listed instead of cv_errors; None
  when no record has a value."""
  complete, partial = _complete_seeds(records, value_of, expected)
  if not complete:
    return None
  st = {k: v for k, v in _spread(complete, partial).items() if k != 'cv_errors'}
  return dict(st, seeds=sorted(complete), folds=sorted({f for v in complete.values() for f in v}))


def eps_label(eps: float) -> str:
  """An FGSM eps as the tables and summary.json name it: 0.01 -> '1e-02'."""
  return f'{eps:.0e}'


def paper_adversarial(dataset: str, method: str, eps: float) -> float | None:
  """docs/method.md §7 value of (method, eps) on the attacked dataset (ESC-10), or None."""
  if dataset != TABLE3_DATASET or method not in PAPER_TABLE3:
    return None
  return next((v for e, v in zip(PAPER_TABLE3_EPS, PAPER_TABLE3[method])
               if math.isclose(e, eps, rel_tol=1e-6)), None)


def aggregate_adversarial(records: list[dict], runs: list[dict] = ()
                          ) -> tuple[list[dict], list[str], list[str]]:
  """Groups adversarial.json records by experiment as `aggregate` groups runs.

  A full cross-validation has the records' `num_folds`, else that of the `runs` of their dataset.

  Returns:
    (groups, notes: attacks of unfinished runs or not of the last checkpoint, grouping). A group:
    dataset, backbone, method, row, setup, variant, eps (strongest first), clean and attacked
    ({eps: `_cv_stats` with paper}), deviations, num_records.
  """
  notes, grouping = [], []
  usable = []
  for r in records:
    if r.get('run_status') not in (None, 'finished'):
      notes.append(f"{r['_path']}: attack of a run with status {r.get('run_status')!r}, left out")
      continue
    final = r.get('results_final_error')
    if final is not None and abs(float(final) - float(r['clean_error'])) > 1e-6:
      notes.append(f"{r['_path']}: clean error {r['clean_error']:.2f} differs from the run's final "
                   f"error {float(final):.2f} (not its last checkpoint?)")
    usable.append(r)
  groups = []
  for head, members in _split_by_setup(usable, grouping):
    chosen = list(_one_per_seed_fold(members, group_name(head), lambda r: (
        r['clean_error'], r['attacked_error']), grouping, 'attacks').values())
    if not chosen:
      continue
    expected = (max(int(r.get('num_folds') or 0) for r in members) or max(
        (int(r['num_folds']) for r in runs if r['dataset'] == head['dataset']
         and _is_int(r.get('num_folds'))), default=0) or None)
    eps_values = sorted({float(k) for r in chosen for k in r['attacked_error']}, reverse=True)
    attacked = {}
    for eps in eps_values:
      at_eps = lambda r, eps=eps: next((v for k, v in r['attacked_error'].items()
                                        if math.isclose(float(k), eps, rel_tol=1e-9)), None)
      st = _cv_stats(chosen, at_eps, expected)
      if st is not None:
        st['paper'] = paper_adversarial(head['dataset'], head['method'], eps)
        attacked[eps] = st
    clean = _cv_stats(chosen, lambda r: r['clean_error'], expected)
    clean['paper'] = None
    groups.append(dict(head, eps=eps_values, clean=clean, attacked=attacked,
                       deviations=_deviations(chosen), num_records=len(chosen)))
  return groups, notes, grouping


def clip_outcomes(run: dict) -> tuple[dict | None, str | None]:
  """A run's test clips as {filename: (label, correct)} from its 'predictions', or (None, why)."""
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


def reference_method(method: str) -> str:
  """The standard-training method a method is compared against: 'standard' or 'standard+aug'."""
  return STANDARD + ('+aug' if method.endswith('+aug') else '')


def reference_methods(method: str) -> list[str]:
  """The methods `method` is compared against: 'bc[shared-pairs]' -> ['standard', 'bc'],
  'intermix[stopgrad]+aug' -> ['standard+aug', 'intermix+aug'], 'standard' -> []."""
  aug = '+aug' if method.endswith('+aug') else ''
  refs = [] if base_method(method) == STANDARD else [reference_method(method)]
  return refs + ([base_method(method) + aug] if '[' in method else [])


def paired_comparisons(groups: list[dict]) -> tuple[list[dict], list[str]]:
  """Each group against its `reference_methods` of the same dataset, backbone and setup.

  Per seed, the clips of the folds both ran are paired by filename and pooled (a fold that cannot
  be paired is left out with a note); with several seeds on the same clips, also seed 'all'.

  Returns:
    (comparisons, notes). A comparison: dataset, backbone, row, method, variant, reference, seed
    (int or 'all'), seeds, folds, unpaired_folds, n (clips), ref_error, error (%), diff, low, high
    (error(method) - error(reference) and its `stats.paired_bootstrap` interval, pp), confidence,
    num_resamples, bootstrap_seed, b, c (`stats.mcnemar_counts`), p (McNemar exact; None for 'all').
  """
  comparisons, notes = [], []
  for g in groups:
    for reference in reference_methods(g['method']):
      ref = next((x for x in groups if (x['dataset'], x['backbone'], x['method']) == (
          g['dataset'], g['backbone'], reference) and x['setup'] == g['setup']), None)
      if ref is not None:
        _compare(g, ref, comparisons, notes)
  return comparisons, notes


def _comparison(common: dict, ref_ok: np.ndarray, new_ok: np.ndarray, **fields) -> dict:
  """A comparison's dict (`paired_comparisons`) of per-clip correctness (clips on the last axis)."""
  boot = stats.paired_bootstrap(ref_ok, new_ok)
  return dict(common, **fields, ref_error=stats.error_percent(ref_ok),
              error=stats.error_percent(new_ok), num_resamples=boot['num_resamples'],
              bootstrap_seed=boot['seed'], **{k: boot[k] for k in ('diff', 'low', 'high',
                                                                   'confidence')})


def _compare(g: dict, ref: dict, comparisons: list[dict], notes: list[str]) -> None:
  """The comparisons of group `g` against group `ref` (`paired_comparisons`), appended."""
  name = f"{group_name(g)} against {ref['method']}"
  runs_new, runs_ref = ({(int(r['seed']), int(r['fold'])): r for r in x['runs']} for x in (g, ref))
  common = dict(dataset=g['dataset'], backbone=g['backbone'], row=g['row'], method=g['method'],
                variant=g['variant'], reference=ref['method'])
  mine, per_seed = [], []
  for s in sorted(set(g['seeds']) | set(ref['seeds'])):
    if s not in g['seeds'] or s not in ref['seeds']:
      notes.append(f"{name} seed {s}: {ref['method'] if s in g['seeds'] else g['method']} has "
                   'no runs of this seed in the table; not paired')
      continue
    pooled, paired, unpaired = {}, [], []
    for fold in sorted(set(g['seeds'][s]) | set(ref['seeds'][s])):
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
      pooled.update({k: (o_ref[k][1], o_new[k][1]) for k in o_new})
      paired.append(fold)
    if not pooled:
      notes.append(f'{name} seed {s}: no fold could be paired')
      continue
    names = sorted(pooled)
    ref_ok, new_ok = (np.array([pooled[k][i] for k in names]) for i in (0, 1))
    b, c = stats.mcnemar_counts(ref_ok, new_ok)
    per_seed.append((names, ref_ok, new_ok))
    mine.append(_comparison(common, ref_ok, new_ok, seed=s, seeds=[s], folds=paired,
                            unpaired_folds=unpaired, n=len(names), b=b, c=c,
                            p=stats.mcnemar_exact(b, c)))
  comparisons += mine
  if len(per_seed) < 2:
    return
  if any(names != per_seed[0][0] for names, _, _ in per_seed):
    notes.append(f'{name}: the seeds tested different clips; no comparison over all seeds')
    return
  comparisons.append(_comparison(
      common, np.stack([x[1] for x in per_seed]), np.stack([x[2] for x in per_seed]), seed='all',
      seeds=[x['seed'] for x in mine],
      folds=sorted(set.intersection(*(set(x['folds']) for x in mine))),
      unpaired_folds=sorted(set().union(*(set(x['unpaired_folds']) for x in mine))),
      n=len(per_seed[0][0]), b=None, c=None, p=None))


def learning_curve(runs: list[dict], key: str) -> dict | None:
  """history[key] ('test_error' %, 'train_loss', 'train_error' %) of results.json dicts: None when
  no run has it, else lists over the epochs (1-based, ascending): epoch, mean, std (sample; None
  where n == 1), min, max, n (runs with a value there)."""
  per_epoch = collections.defaultdict(list)
  for r in runs:
    for epoch, v in _history(r, key):
      per_epoch[epoch].append(v)
  if not per_epoch:
    return None
  epochs = sorted(per_epoch)
  vals = [per_epoch[e] for e in epochs]
  return dict(epoch=epochs, mean=[float(np.mean(v)) for v in vals], std=[_std(v) for v in vals],
              min=[float(min(v)) for v in vals], max=[float(max(v)) for v in vals],
              n=[len(v) for v in vals])


def cv_summary(results: list[dict], num_folds: int) -> dict:
  """The trainer's cv_results.json: one seed's folds (their results dicts) -> dict(folds, status,
  mean_error): the mean of the last-epoch errors once all `num_folds` finished (None before);
  status 'finished', or the first unfinished fold's ('not_started' with no fold)."""
  folds = [dict(fold=r['fold'], status=r['status'], final_error=r['final_error']) for r in results]
  errors = [f['final_error'] for f in folds if f['final_error'] is not None]
  done = len(errors) == num_folds
  unfinished = next((f['status'] for f in folds if f['status'] != 'finished'), 'not_started')
  return dict(folds=folds, status='finished' if done else unfinished,
              mean_error=float(np.mean(errors)) if done else None)


def seeds_summary(per_seed: list[dict], key: str) -> dict:
  """The trainer's seeds_results.json: per seed a summary holding `key` (its error) -> dict(seeds,
  status, mean_error, std_error): mean and sample std once every seed finished."""
  seeds = [dict(seed=s['seed'], status=s['status'], error=s[key]) for s in per_seed]
  errors = [s['error'] for s in seeds if s['status'] == 'finished']
  done = len(errors) == len(seeds)
  unfinished = [s for s in seeds if s['status'] != 'finished']
  return dict(seeds=seeds, status='finished' if done else unfinished[0]['status'],
              mean_error=float(np.mean(errors)) if done else None,
              std_error=_std(errors) if done else None)
