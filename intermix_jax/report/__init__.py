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
from intermix_jax.report.aggregation import add_protocol_deviations
from intermix_jax.report.aggregation import ADVERSARIAL_FILE
from intermix_jax.report.aggregation import aggregate
from intermix_jax.report.aggregation import aggregate_adversarial
from intermix_jax.report.aggregation import base_method
from intermix_jax.report.aggregation import best_epoch_error
from intermix_jax.report.aggregation import clip_outcomes
from intermix_jax.report.aggregation import count_text
from intermix_jax.report.aggregation import eps_label
from intermix_jax.report.aggregation import find_results
from intermix_jax.report.aggregation import first_by_seed_fold
from intermix_jax.report.aggregation import FOLD_IDENTITY_FIELDS
from intermix_jax.report.aggregation import group_name
from intermix_jax.report.aggregation import invalid_reason
from intermix_jax.report.aggregation import learning_curve
from intermix_jax.report.aggregation import load_runs
from intermix_jax.report.aggregation import METHOD_FIELDS
from intermix_jax.report.aggregation import method_title
from intermix_jax.report.aggregation import NOT_DEFINING
from intermix_jax.report.aggregation import paired_comparisons
from intermix_jax.report.aggregation import paper_adversarial
from intermix_jax.report.aggregation import paper_value
from intermix_jax.report.aggregation import protocol_deviations
from intermix_jax.report.aggregation import reference_method
from intermix_jax.report.aggregation import reference_methods
from intermix_jax.report.aggregation import RESULTS_FILE
from intermix_jax.report.aggregation import row_key
from intermix_jax.report.aggregation import row_rank
from intermix_jax.report.aggregation import setup_of
from intermix_jax.report.aggregation import setup_variants
from intermix_jax.report.aggregation import STRATEGY_ORDER
from intermix_jax.report.aggregation import strategy_rank
from intermix_jax.report.paper import BACKBONE_ORDER
from intermix_jax.report.paper import BACKBONE_TITLE
from intermix_jax.report.paper import DATASET_COLUMN
from intermix_jax.report.paper import DATASET_TITLE
from intermix_jax.report.paper import load_paper_values
from intermix_jax.report.paper import PAPER_TABLE1
from intermix_jax.report.paper import PAPER_TABLE2
from intermix_jax.report.paper import PAPER_TABLE3
from intermix_jax.report.paper import PAPER_TABLE3_EPS
from intermix_jax.report.paper import PAPER_VALUES_FILE
from intermix_jax.report.paper import TABLE2_BACKBONE
from intermix_jax.report.paper import TABLE2_ROW
from intermix_jax.report.paper import TABLE3_DATASET
from intermix_jax.report.plots import confusion_matrix
from intermix_jax.report.plots import curve_label
from intermix_jax.report.plots import plot_adversarial
from intermix_jax.report.plots import plot_confusion
from intermix_jax.report.plots import plot_error_bars
from intermix_jax.report.plots import plot_learning_curves
from intermix_jax.report.tables import BEST_TITLE
from intermix_jax.report.tables import grouping_lines
from intermix_jax.report.tables import LEGEND
from intermix_jax.report.tables import main_tables
from intermix_jax.report.tables import markdown
from intermix_jax.report.tables import NOT_RUN
from intermix_jax.report.tables import paired_tables
from intermix_jax.report.tables import paper_tables
from intermix_jax.report.tables import per_fold_tables
from intermix_jax.report.tables import summary_text
from intermix_jax.report.tables import TABLE1_STRATEGIES
from intermix_jax.report.writer import write_report


def main(argv=None) -> int:
  """The command line, `python -m intermix_jax.report` (see `intermix_jax.report.__main__`).

  Imported on call: importing `__main__` here at package import would make `python -m` run a
  module that is already imported (runpy warns).
  """
  from intermix_jax.report.__main__ import main as _main  # pylint: disable=import-outside-toplevel
  return _main(argv)
