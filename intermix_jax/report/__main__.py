"""Paper-format tables and plots from finished runs.

    python -m intermix_jax.report DIR... [--out OUT] [--no-plots] [--full]

Finds every `results.json` under the DIRs (one per run: one fold of one seed), groups the finished
runs by experiment (dataset, backbone, method and every config field that defines the experiment,
`aggregation.NOT_DEFINING` naming those that do not, and the recorded dataset identity; a run that
recorded none takes the one its config's runs recorded) and writes to OUT (default: DIR/report for
a single DIR, else ./report):
  report.md          in this order: the paper's table 1 layout per dataset (error %, rows =
                     backbones, columns = strategies, then each one's option variants) and the table
                     2 ablation when present, twice: the last epoch (the headline) and the best
                     epoch on the test fold (each run's lowest test-fold error over its evaluated
                     epochs: the reference codes' selection, optimistic), the paper's value beside
                     the latter only; the runs split into experiments or set aside, one line each;
                     paired comparisons: each mixing method against standard training, and each
                     option variant (bc[shared-pairs]) against its strategy's default (bc), on the
                     same test clips (McNemar's exact test, paired bootstrap 95 % interval of the
                     error difference; `intermix_jax.stats`), per seed and over seeds; per-fold
                     tables: every fold's error, mean ± std over folds and over seeds, the
                     best-epoch mean; "Against the paper": every cell of tables 1, 2 (best epoch on
                     the test fold) and 3 with the paper's value beside it and — where nothing has
                     run; runs that deviate from the docs/method.md §5 protocol (‡, e.g. a shortened
                     schedule) listed with their deviations; a detailed table of all groups, and the
                     runs left out (unfinished, incomplete, unreadable or invalid files)
  summary.json       the same numbers, machine-readable (table 3 under "adversarial", the paired
                     comparisons under "paired", the test-error curve of each group, the runs
                     split or set aside under "grouping")
  adversarial_<dataset>.png           table 3: error vs FGSM eps per (backbone, method), when
                     any adversarial.json (python -m intermix_jax.adversarial) was found
  curves_<dataset>_<backbone>.png      learning curves per method: test error at each evaluation
                     and train loss per epoch, mean over folds, min-max over folds shaded
  confusion_<dataset>_<backbone>_<method>[_<variant>].png   per-class confusion matrix over its runs
  errorbars_<dataset>.png             last-epoch error mean +- std per backbone and method, the best
                     epoch on the test fold as o, paper values as x

Protocol (docs/method.md §5): a run's error is its LAST epoch's test-fold error (`final_error`), the
headline; beside it the best epoch on the test fold (the minimum `test_error` over the epochs it
evaluated, every eval_every_epochs and the last), aggregated the same way; the cross-validated error
of a seed is the mean over the dataset's folds; the table shows mean +- std over seeds (sample std,
ddof=1) when there are several seeds, else mean +- std over the folds of the single seed (marked
"folds"); a single run has no spread and says so ("n=1", never "± 0.0"). A seed missing folds is
left out when another seed has them all; when none has, the group is shown from the folds that ran,
marked * (partial cross-validation). Runs of different experiments are never averaged together: a
table row holding several setups shows each apart, named by the fields that differ ({num_epochs=4});
of several runs of the same experiment, seed and fold, one counts when their results agree, none
when they differ. Which runs were split or set aside, and why, is listed one line each ("Runs split
or set aside"). The command prints the main tables, the runs split, set aside or left out
unfinished, and the paired comparisons (--full: all of report.md); a results.json that cannot be
read or lacks needed fields is named on stderr and left out, the rest reported. Table 3 reads every
`adversarial.json` under the DIRs (they name their dataset, backbone, method, fold and seed, so they
may live outside the workdirs) and aggregates each eps the same way. Exit status 1 (one line on
stderr) when no usable file was found.
"""
from __future__ import annotations

import argparse
import os
import sys

from intermix_jax.report.tables import summary_text
from intermix_jax.report.writer import write_report


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
