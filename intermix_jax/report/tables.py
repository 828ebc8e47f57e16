"""Markdown of the report: report.md (`markdown`) and what the command prints (`summary_text`),
from the groups and comparisons of `report.aggregation` (what each table shows: `__main__` help).
"""
from __future__ import annotations

import numpy as np

from intermix_jax import stats
from intermix_jax.report.aggregation import (  # pylint: disable=g-multiple-import
    eps_label, group_name, method_order, method_title, paper_adversarial, paper_value,
    reference_method, row_rank, STRATEGY_ORDER, strategy_rank, with_variant,
)
from intermix_jax.report.paper import (  # pylint: disable=g-multiple-import
    BACKBONE_ORDER, BACKBONE_TITLE, DATASET_COLUMN, DATASET_TITLE, PAPER_TABLE1, PAPER_TABLE2,
    PAPER_TABLE3, PAPER_TABLE3_EPS, TABLE2_BACKBONE, TABLE2_ROW, TABLE3_DATASET,
)

NOT_RUN = '—'
NOT_AVAILABLE = 'n/a'  # a best-epoch error of runs that recorded no evaluated epoch
# Strategies of the paper's table 1: always columns of "Against the paper" (others when they ran).
TABLE1_STRATEGIES = frozenset(s for errors in PAPER_TABLE1.values() for s in errors)

LEGEND = ('Error % (lower is better). Last epoch (the headline, docs/method.md §5): each run\'s '
          'LAST-epoch test-fold error, averaged over the folds (the cross-validated error), mean '
          '± std over seeds. Best epoch on the test fold: each run\'s lowest test-fold error over '
          'its evaluated epochs, aggregated the same way: the reference codes\' selection (they '
          'print the best test accuracy seen), chosen on the test fold itself and so optimistic; '
          'the paper\'s values (x) come from those codes and stand beside it only. † = a single '
          'seed: ± std over its folds. n=1 = a single run: no spread. * = partial '
          'cross-validation (not every fold has run). ‡ = not the paper\'s protocol (see '
          '"Protocol deviations"). {…} = one of several experiment setups in a table row, named '
          'by the config fields that differ (see "Runs split or set aside"). — = not run. n/a = '
          'no evaluated epoch recorded.')
BEST_TITLE = 'Best epoch on the test fold (the reference codes\' selection; optimistic)'


def _best_text(groups: list[dict]) -> str:
  """The line under a best-epoch table."""
  every = sorted({g['eval_every_epochs'] for g in groups if g.get('eval_every_epochs')})
  when = (f"every {' or '.join(str(e) for e in every)} epochs and the last"
          if every else 'every eval_every_epochs and the last')
  return ('Per run the lowest test-fold error over its evaluated epochs only (' + when + '), then '
          'the same mean over folds and ± over seeds. The reference codes print this number (the '
          'best test accuracy seen) and the paper\'s values (x) come from them, so they stand '
          'here; it is chosen on the test fold itself, so it is optimistic: the headline is the '
          'last epoch.')


def _p_text(p: float | None) -> str:
  if p is None:
    return '—'
  return f'{p:.4f}' if p >= 1e-4 else f'{p:.1e}'


def paired_tables(comparisons: list[dict], notes: list[str] = ()) -> list[str]:
  """Markdown lines: the paired comparisons, per kind (below) and (dataset, backbone row)."""
  if not comparisons and not notes:
    return []
  lines = ['## Paired comparisons on the same test clips', '',
           'Each mixing method against standard training, and each option variant of a strategy '
           '(e.g. bc[shared-pairs]) against that strategy\'s default (bc), in the same setup, '
           'when both ran. Both methods on the same test clips, each run\'s last-epoch '
           'predictions: a seed\'s clips pooled over the folds both ran (cross-validation tests '
           'every clip once per seed). Δ = error(method) − error(reference) in percentage points '
           '(negative: the method makes fewer errors). 95 % CI: paired bootstrap over clips '
           f'({stats.BOOTSTRAP_RESAMPLES:,} resamples, numpy seed {stats.BOOTSTRAP_SEED}, '
           'percentile interval). b = clips the reference got right and the method wrong, c = the '
           'reverse; p = McNemar\'s exact two-sided test of b against c. Seed "all": Δ averaged '
           'over the seeds, a clip resampled with all its seeds; no McNemar test there (a clip '
           'counts once per seed, so the clips are not independent).', '']
  order = lambda x: method_order(x) + (x['reference'], x['seed'] == 'all', str(x['seed']))
  for kind, vs_standard in (('Against standard training', True),
                            ('Option variants against their strategy\'s default', False)):
    mine = [x for x in comparisons
            if (x['reference'] == reference_method(x['method'])) == vs_standard]
    for dataset, row in dict.fromkeys((x['dataset'], x['row']) for x in mine):
      lines += [f'### {kind}: {_title(dataset, row)}', '',
                '| method | reference | seed | folds | clips | reference error % | '
                'method error % | Δ (pp) | 95 % CI (pp) | b | c | p (McNemar) |',
                '|---|' + '---|' * 11]
      for x in sorted((x for x in mine if (x['dataset'], x['row']) == (dataset, row)),
                      key=order):
        folds = ','.join(str(f) for f in x['folds']) + ('*' if x['unpaired_folds'] else '')
        lines.append(
            f"| {method_title(x)} | {x['reference']} | {x['seed']} | {folds} | {x['n']} | "
            f"{x['ref_error']:.2f} | {x['error']:.2f} | {x['diff']:+.2f} | "
            f"[{x['low']:+.2f}, {x['high']:+.2f}] | {'—' if x['b'] is None else x['b']} | "
            f"{'—' if x['c'] is None else x['c']} | {_p_text(x['p'])} |")
      lines.append('')
  if any(x['unpaired_folds'] for x in comparisons):
    lines += ['\\* some folds ran for only one of the two methods (or could not be paired): '
              'compared on the folds listed.', '']
  if notes:
    lines += ['Not paired:', ''] + [f'- {n}' for n in notes] + ['']
  return lines


def per_fold_tables(groups: list[dict]) -> list[str]:
  """Markdown lines: per (dataset, row), each method's errors per fold and seed (the columns: the
  section's text below; the rows: the comment in the loop)."""
  keys = sorted({(g['dataset'], g['row']) for g in groups},
                key=lambda k: (_dataset_order(k[0]), row_rank(k[1]), k[1]))
  if not keys:
    return []
  lines = ['## Per fold', '',
           'Error % of the last epoch on each test fold. ± std: sample std over the folds of the '
           'seed ("folds"), or over the seeds\' cross-validated errors ("seeds"). best epoch: the '
           'same mean of each run\'s best epoch on the test fold (the reference codes\' '
           'selection; optimistic), the paper\'s value beside it. — = fold not run.', '']
  for dataset, row in keys:
    gs = sorted([g for g in groups if (g['dataset'], g['row']) == (dataset, row)],
                key=method_order)
    k = max(max([g['num_folds'] or 0 for g in gs]),
            max(f for g in gs for fs in g['seeds'].values() for f in fs))
    lines += [f'### {_title(dataset, row)}', '',
              '| method | seed | ' + ' | '.join(f'fold {f}' for f in range(1, k + 1))
              + ' | mean | ± std | over | best epoch | paper |', '|---|---|' + '---|' * (k + 5)]
    for g in gs:
      seeds, best = g['seeds'], g['best']
      # (seed, {fold: error}, mean, ± std, over, best epoch) per seed, then the mean over seeds.
      rows = [(s, errs, g['cv_errors'][s], _std_text(g['fold_std'][s]), 'folds',
               best and best['cv_errors'][s]) for s, errs in seeds.items()]
      if len(seeds) > 1:
        by_fold = {f: [errs[f] for errs in seeds.values() if f in errs] for f in range(1, k + 1)}
        rows.append((f'mean of {len(seeds)}', {f: np.mean(v) for f, v in by_fold.items() if v},
                     g['seed_mean'], f"{g['seed_std']:.2f}", 'seeds', best and best['mean']))
      for label, errs, mean, std, over, best_mean in rows:
        cells = [f'{errs[f]:.2f}' if f in errs else NOT_RUN for f in range(1, k + 1)] + [
            f'{mean:.2f}', std, over, NOT_AVAILABLE if best_mean is None else f'{best_mean:.2f}',
            _paper_text(g['paper'])]
        lines.append(f'| {method_title(g)} | {label} | ' + ' | '.join(cells) + ' |')
    lines.append('')
  return lines


def _title(dataset: str, row: str) -> str:
  """'ESC-10, PiczakCNN'."""
  return f'{DATASET_TITLE.get(dataset, dataset)}, {BACKBONE_TITLE.get(row, row)}'


def _dataset_order(dataset: str) -> tuple:
  """The paper's datasets first, then by name."""
  return dataset not in DATASET_COLUMN, dataset


def _paper_text(value: float | None) -> str:
  """A paper value as a column shows it: '8.3', '' for None."""
  return '' if value is None else f'{value:.1f}'


def _std_text(std: float | None) -> str:
  """A '± std' column entry: '1.23', or 'n=1' for a single value (no spread)."""
  return 'n=1' if std is None else f'{std:.2f}'


def _stat_cell(st: dict | None, paper: float | None = None, deviates: bool = False,
               missing: str = NOT_RUN) -> str:
  """'12.3 ± 1.0†*‡ (paper)' ('12.3 (n=1)' for a single run: no spread to state), or `missing`
  (— : nothing has run) and ' (paper)'."""
  s = missing if st is None else (
      f"{st['mean']:.1f} " + ('(n=1)' if st['std'] is None else f"± {st['std']:.1f}")
      + ('†' if st['std_over'] == 'folds' else '') + ('*' if st['partial'] else '')
      + ('‡' if deviates else ''))
  return s + ('' if paper is None else f' ({paper:.1f})')


def _cell(g: dict, best: bool = False) -> str:
  """A group's last-epoch cell '12.3 ± 1.0†*‡'; with `best`, its best epoch and the paper's value
  '11.0 ± 1.2†*‡ (8.3)' ('n/a (8.3)' without a test-error history)."""
  return _stat_cell(g['best'] if best else g, g['paper'] if best else None,
                    bool(g.get('deviations')), NOT_AVAILABLE)


def _row_title(row: str, variant: str = '') -> str:
  return with_variant(BACKBONE_TITLE.get(row, row), variant)


def _variants(groups: list[dict], dataset: str, row: str) -> list[str]:
  """The variants (setups) of a table row, sorted; [''] when nothing ran there."""
  return sorted({g['variant'] for g in groups if (g['dataset'], g['row']) == (dataset, row)}
                ) or ['']


def main_tables(groups: list[dict]) -> list[str]:
  """Markdown lines: the main tables of report.md (what they show: `__main__` help)."""
  lines = []
  for dataset in sorted({g['dataset'] for g in groups}, key=_dataset_order):
    ablation = [g for g in groups if g['dataset'] == dataset and g['method'] in PAPER_TABLE2
                and g['backbone'] == TABLE2_BACKBONE]
    gs = [g for g in groups if g['dataset'] == dataset and g not in ablation]
    lines += [f'## {DATASET_TITLE.get(dataset, dataset)}', '']
    # Columns: each strategy, then its option variants ('bc[shared-pairs]'); '+aug' is the row's.
    column = lambda g: g['method'].removesuffix('+aug')
    columns = sorted({column(g) for g in gs}, key=lambda m: (strategy_rank(m), '[' in m, m))
    for best in (False, True):
      lines += ([f'### {BEST_TITLE}', '', _best_text(gs + ablation), ''] if best
                else ['### Last epoch (the headline)', ''])
      if gs:
        lines += ['| model | ' + ' | '.join(columns) + ' |', '|---|' + '---|' * len(columns)]
        for row in sorted({g['row'] for g in gs}, key=row_rank):
          for variant in _variants(gs, dataset, row):
            cells = [' ; '.join(_cell(g, best) for g in gs
                                if (g['row'], g['variant'], column(g)) == (row, variant, col))
                     for col in columns]
            lines.append(f'| {_row_title(row, variant)} | ' + ' | '.join(cells) + ' |')
        lines.append('')
      if ablation:
        lines += [f'Ablation (table 2), {BACKBONE_TITLE[TABLE2_ROW]}:', '',
                  '| variant | error % |', '|---|---|']
        lines += [f"| {with_variant(name, g['variant'])} | {_cell(g, best)} |"
                  for method, (name, _) in PAPER_TABLE2.items()
                  for g in sorted(ablation, key=lambda g: g['variant']) if g['method'] == method]
        lines.append('')
  return lines


def grouping_lines(grouping: list[str]) -> list[str]:
  """Markdown lines: the runs split into experiments or set aside (`aggregate`), one each."""
  return (['## Runs split or set aside', '',
           'A cell averages the runs of one experiment only: runs whose configs differ in a '
           'field that defines the experiment, or that read other data (dataset identity), are '
           'shown apart ({…}); of several runs of the same experiment, seed and fold, one counts '
           'when their results agree, none when they differ.',
           ''] + [f'- {n}' for n in grouping] + ['']) if grouping else []


def markdown(result: dict) -> str:
  """report.md from `write_report`'s result (its keys: `write_report`)."""
  groups, adversarial = result['groups'], result['adversarial']
  lines = ['# Results', '', LEGEND, '']
  lines += main_tables(groups)
  lines += grouping_lines(result['grouping'])
  lines += paired_tables(result['comparisons'], result['paired_notes'])
  lines += per_fold_tables(groups)
  lines += paper_tables(groups, adversarial)
  deviating = [g for g in groups + adversarial if g.get('deviations')]
  if deviating:
    lines += ['## Protocol deviations (‡)', '',
              'These cells did not use the paper\'s protocol (docs/method.md §5): their numbers '
              'are NOT comparable to the paper\'s value beside them.', '']
    first = {}
    for g in deviating:
      first.setdefault(group_name(g), g['deviations'])
    lines += [f"- {name}: {'; '.join(d)}" for name, d in first.items()] + ['']
  lines += ['## All groups', '',
            'last epoch: the headline error %; best epoch: the best epoch on the test fold (the '
            'reference codes\' selection; optimistic), the one the paper\'s value and Δ = best '
            'epoch − paper compare with.', '',
            '| dataset | backbone | method | seeds | folds | last epoch % | ± std | over | '
            'best epoch % | ± std | paper | Δ |', '|' + '---|' * 12]
  for g in groups:
    b = g['best']
    paper = _paper_text(g['paper'])
    delta = '' if g['paper'] is None or b is None else f"{b['mean'] - g['paper']:+.1f}"
    folds = sorted({f for s in g['seeds'].values() for f in s})
    lines.append(f"| {g['dataset']} | {g['backbone']} | {method_title(g)} | "
                 f"{','.join(str(s) for s in sorted(g['seeds']))} | "
                 f"{','.join(str(f) for f in folds)}{'*' if g['partial'] else ''} | "
                 f"{g['mean']:.2f} | {_std_text(g['std'])} | {g['std_over']} | "
                 + (f"{NOT_AVAILABLE} | |" if b is None else
                    f"{b['mean']:.2f} | {_std_text(b['std'])} |") + f" {paper} | {delta} |")
  lines.append('')
  lines += left_out_lines(result['notes'])
  return '\n'.join(lines)


def left_out_lines(notes: list[str]) -> list[str]:
  """Markdown lines: the runs and files left out (unfinished, unreadable, invalid), one each."""
  return ['## Left out', ''] + [f'- {n}' for n in notes] + [''] if notes else []


def paper_tables(groups: list[dict], adversarial: list[dict] = ()) -> list[str]:
  """Markdown lines: the paper's tables 1-3 (below), for the paper datasets that have runs."""
  datasets = [d for d in DATASET_COLUMN
              if any(g['dataset'] == d for g in list(groups) + list(adversarial))]
  if not datasets:
    return []
  lines = ['## Against the paper: every cell of tables 1-3', '',
           'Tables 1 and 2: the best epoch on the test fold (the reference codes\' selection, '
           'optimistic: the paper\'s numbers come from those codes) (paper) per cell; the '
           'headline last-epoch errors are in the tables above. — = not run yet. Commands: '
           '`python launch/sweep.py --table=N` (configs/table1/, configs/ablation/, '
           'configs/table3.py).', '']
  find = lambda d, row, m: [g for g in groups
                            if (g['dataset'], g['row'], g['method']) == (d, row, m)]
  for dataset in datasets:
    strategies = [s for s in STRATEGY_ORDER if s in TABLE1_STRATEGIES
                  or any(g['dataset'] == dataset and g['method'] == s for g in groups)]
    lines += [f'### Table 1, {DATASET_TITLE[dataset]}', '',
              '| model | ' + ' | '.join(strategies) + ' |', '|---|' + '---|' * len(strategies)]
    for row in BACKBONE_ORDER:
      for variant in _variants(groups, dataset, row):
        cells = []
        for strategy in strategies:
          method = strategy + ('+aug' if row.endswith('+aug') else '')
          g = [g for g in find(dataset, row, method) if g['variant'] == variant]
          cells.append(_cell(g[0], best=True) if g else _stat_cell(None, paper_value(
              dataset, row.replace('+aug', ''), method)))
        lines.append(f'| {_row_title(row, variant)} | ' + ' | '.join(cells) + ' |')
    lines.append('')
  lines += [f'### Table 2 (ablation), {BACKBONE_TITLE[TABLE2_ROW]}, InterMix', '',
            '| variant | ' + ' | '.join(DATASET_TITLE[d] for d in DATASET_COLUMN) + ' |',
            '|---|' + '---|' * len(DATASET_COLUMN)]
  for method, (title, values) in PAPER_TABLE2.items():
    cells = []
    for d, col in DATASET_COLUMN.items():
      gs = sorted(find(d, TABLE2_ROW, method), key=lambda g: g['variant'])
      cells.append('; '.join(with_variant(_cell(g, best=True), g['variant']) for g in gs)
                   if gs else _stat_cell(None, values[col]))
    lines.append(f'| {title} | ' + ' | '.join(cells) + ' |')
  lines.append('')
  for dataset in [d for d in datasets
                  if d == TABLE3_DATASET or any(a['dataset'] == d for a in adversarial)]:
    gs = [a for a in adversarial if a['dataset'] == dataset]
    eps_values = sorted(set(PAPER_TABLE3_EPS if dataset == TABLE3_DATASET else ())
                        | {e for a in gs for e in a['eps']}, reverse=True)
    lines += [f'### Table 3 (FGSM), {DATASET_TITLE[dataset]}', '',
              'One-step untargeted FGSM on the normalised waveform, x + eps sign(grad_x CE), every '
              'test crop attacked; error % of the 10-crop prediction of each run\'s last '
              'checkpoint (`python -m intermix_jax.adversarial`). The paper does not name its '
              'backbone.', '',
              '| model | method | clean | ' + ' | '.join(f'eps {eps_label(e)}' for e in eps_values)
              + ' |', '|---|---|---|' + '---|' * len(eps_values)]
    rows = [(a['backbone'], a['method'], a) for a in gs]
    if dataset == TABLE3_DATASET:  # the paper's rows, — where not run
      rows += [(b, m, None) for b in sorted({a['backbone'] for a in gs}) or ['(not run)']
               for m in PAPER_TABLE3 if not any(r[:2] == (b, m) for r in rows)]
    order = lambda r: (row_rank(r[0]), r[0], strategy_rank(r[1]), r[1], r[2] and r[2]['variant'])
    for b, m, a in sorted(rows, key=order):
      dev = bool(a and a['deviations'])
      cells = [_stat_cell(a and a['clean'], deviates=dev)] + [
          _stat_cell(a and a['attacked'].get(e), paper_adversarial(dataset, m, e), dev)
          for e in eps_values]
      lines.append(f'| {BACKBONE_TITLE.get(b, b)} | {method_title(a) if a else m} | '
                   + ' | '.join(cells) + ' |')
    lines.append('')
  return lines


def summary_text(result: dict) -> str:
  """What the command line prints (`__main__` help; the files left out: on stderr there)."""
  lines = ['# Results', '', LEGEND, '']
  lines += main_tables(result['groups'])
  lines += grouping_lines(result['grouping'])
  lines += left_out_lines([n for n in result['notes'] if n not in result['bad_files']])
  lines += paired_tables(result['comparisons'], result['paired_notes'])
  if not result['groups']:
    lines += ['No finished training run found (the attacks of table 3 are in report.md).', '']
  return '\n'.join(lines)


