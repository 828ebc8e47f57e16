"""Paper-format tables and plots from finished runs (`python -m intermix_jax.report DIR...`).

Reads the results.json of every run (one fold of one seed) and the adversarial.json of every FGSM
attack under some folders, and writes the paper's tables 1-3: the last epoch's error (the headline),
and the best epoch on the test fold (the reference codes' selection, optimistic) with the paper's
values beside it; paired comparisons against standard training (and of option variants against their
strategy's default), per-fold tables, summary.json and plots. Errors are in % throughout; the
aggregation rule is docs/method.md §5 (the command's help, `intermix_jax/report/__main__.py`, spells
it out).

Modules:
  aggregation      finding, loading and checking results; grouping and cross-validated mean ± std;
                   protocol deviations (`intermix_jax.protocol`); table 3 aggregation; paired
                   comparisons (`intermix_jax.stats`); learning curves
  tables           the markdown: main tables, paired tables, per-fold tables, "Against the paper"
                   (tables 1-3 cell by cell), the whole report.md, the printed summary
  plots            matplotlib figures (learning curves, confusion matrices, error bars, table 3)
  writer           write_report: all of the above into a folder
  paper            the papers' reference values, read from the package data file
                   paper_values.json (table 1 rows and titles, table 2 ablation, table 3 FGSM,
                   the dataset column titles)
  __main__         the command line (`main`)

Every public name of these modules is re-exported here (`report.load_runs`, `report.aggregate`,
`report.paired_comparisons`, `report.write_report`, `report.PAPER_TABLE1`, ...).
"""
from intermix_jax.report.aggregation import (  # pylint: disable=g-multiple-import
    add_protocol_deviations, ADVERSARIAL_FILE, aggregate, aggregate_adversarial, base_method,
    best_epoch_error, clip_outcomes, count_text, eps_label, find_results, first_by_seed_fold,
    FOLD_IDENTITY_FIELDS, group_name, invalid_reason, learning_curve, load_runs, METHOD_FIELDS,
    method_title, NOT_DEFINING, paired_comparisons, paper_adversarial, paper_value,
    protocol_deviations, reference_method, reference_methods, RESULTS_FILE, row_rank,
    setup_of, setup_variants, STRATEGY_ORDER, strategy_rank,
)
from intermix_jax.report.paper import (  # pylint: disable=g-multiple-import
    BACKBONE_ORDER, BACKBONE_TITLE, DATASET_COLUMN, DATASET_TITLE, load_paper_values, PAPER_TABLE1,
    PAPER_TABLE2, PAPER_TABLE3, PAPER_TABLE3_EPS, PAPER_VALUES_FILE, TABLE2_BACKBONE, TABLE2_ROW,
    TABLE3_DATASET,
)
from intermix_jax.report.plots import (  # pylint: disable=g-multiple-import
    confusion_matrix, curve_label, plot_adversarial, plot_confusion, plot_error_bars,
    plot_learning_curves,
)
from intermix_jax.report.tables import (  # pylint: disable=g-multiple-import
    BEST_TITLE, grouping_lines, LEGEND, main_tables, markdown, NOT_RUN, paired_tables, paper_tables,
    per_fold_tables, summary_text, TABLE1_STRATEGIES,
)
from intermix_jax.report.writer import write_report


def main(argv=None) -> int:
  """The command line, `python -m intermix_jax.report` (see `intermix_jax.report.__main__`).

  Imported on call: importing `__main__` here at package import would make `python -m` run a
  module that is already imported (runpy warns).
  """
  from intermix_jax.report.__main__ import main as _main  # pylint: disable=import-outside-toplevel
  return _main(argv)
