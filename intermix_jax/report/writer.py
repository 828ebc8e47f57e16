"""The whole report of a set of runs written into a folder (`write_report`)."""
from __future__ import annotations

import os

from intermix_jax import workdir
from intermix_jax.report import plots as plots_lib
from intermix_jax.report.aggregation import (  # pylint: disable=g-multiple-import
    ADVERSARIAL_FILE, aggregate, aggregate_adversarial, eps_label, learning_curve, load_runs,
    paired_comparisons,
)
from intermix_jax.report.tables import markdown


def write_report(paths: list[str], out: str, plots: bool = True) -> dict:
  """Aggregates the results.json and adversarial.json under `paths` into report.md, summary.json
  and the plots in `out`; a file that cannot be used is left out, named in 'bad_files' and notes.

  Returns:
    {'markdown', 'groups', 'notes' (runs and files left out), 'grouping' (runs split into
    experiments or set aside, and why: `aggregate`), 'adversarial', 'comparisons' (of
    `paired_comparisons`), 'paired_notes', 'bad_files' (one line per file left out), 'files'}.
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
  groups, notes, grouping = aggregate(runs)
  adversarial, adv_notes, adv_grouping = aggregate_adversarial(records, runs)
  comparisons, paired_notes = paired_comparisons(groups)
  result = dict(groups=groups, notes=bad + notes + adv_notes, grouping=grouping + adv_grouping,
                adversarial=adversarial, comparisons=comparisons, paired_notes=paired_notes,
                bad_files=bad)
  os.makedirs(out, exist_ok=True)
  result['markdown'] = markdown(result)
  files = [os.path.join(out, 'report.md'), os.path.join(out, 'summary.json')]
  with open(files[0], 'w') as f:
    f.write(result['markdown'])
  summary = [dict({k: v for k, v in g.items() if k != 'runs'},
                  test_error_curve=learning_curve(g['runs'], 'test_error')) for g in groups]
  adv_summary = [dict(a, attacked={eps_label(e): st for e, st in a['attacked'].items()})
                 for a in adversarial]
  workdir.write_json_atomic(files[1], dict(
      groups=summary, adversarial=adv_summary, paired=comparisons, paired_notes=paired_notes,
      bad_files=bad, notes=result['notes'], grouping=result['grouping']))
  if plots:  # each plot_* writes nothing for no groups
    files += plots_lib.plot_learning_curves(groups, out)
    files += plots_lib.plot_confusion(groups, out)
    files += plots_lib.plot_error_bars(groups, out)
    files += plots_lib.plot_adversarial(adversarial, out)
  return dict(result, files=files)
