"""Paper-format tables and plots from finished runs: `python -m intermix_jax.report DIR...`.

Finds every `results.json` (one run: one fold of one seed) and `adversarial.json` under the DIRs,
groups the finished runs by experiment (dataset, backbone, method, every config field but
`aggregation.NOT_DEFINING`, the recorded dataset identity) and writes to OUT (default: DIR/report
for a single DIR, else ./report):
  report.md      per dataset the paper's table 1 layout (rows backbones, columns strategies and
                 their option variants) and the table 2 ablation, at the last epoch (the headline)
                 and at the best epoch on the test fold (optimistic; the paper's value beside it);
                 the runs split or set aside; paired comparisons on the same test clips (each
                 mixing method against standard training, each option variant against its
                 strategy's default: McNemar, paired bootstrap; `intermix_jax.stats`); per-fold
                 tables; every cell of the paper's tables 1-3; protocol deviations (‡); all groups;
                 the runs and files left out
  summary.json   the same numbers, machine-readable
  curves_<dataset>_<backbone>.png, confusion_<dataset>_<backbone>_<method>[_<variant>].png,
  errorbars_<dataset>.png, adversarial_<dataset>.png (table 3, when adversarial.json was found)

The rule (docs/method.md §5): a run's error is its last epoch's test-fold error, a seed's the mean
over the folds; a cell is the mean ± sample std over seeds, or over the folds of a single seed (†);
a single run has no spread (n=1). A seed missing folds is left out when another seed has them all,
else the cell shows the folds that ran (*). Runs of different experiments are never averaged (a
row's setups are shown apart, {field=value}); of several runs of one experiment, seed and fold,
one counts when they agree, none when they differ; each such case is one line under "Runs split or
set aside". Prints the main tables, those lines, the unfinished runs and the paired comparisons
(--full: all of report.md); a file that cannot be used is named on stderr and left out. Exit
status 1 (one line on stderr) when no usable file was found.
"""
from __future__ import annotations

import argparse
import os
import sys

from intermix_jax.report.tables import summary_text
from intermix_jax.report.writer import write_report


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog='python -m intermix_jax.report', description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
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
