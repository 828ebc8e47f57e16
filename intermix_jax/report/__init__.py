"""Paper-format tables and plots from finished runs (`python -m intermix_jax.report DIR...`).

What it writes and the rule: the command's help (`report/__main__.py`); the modules:
docs/architecture.md. Errors in %. Every public name of the modules is re-exported here.
"""
from intermix_jax.report.aggregation import (  # pylint: disable=g-multiple-import
    ADVERSARIAL_FILE, aggregate, aggregate_adversarial, base_method, best_epoch_error,
    clip_outcomes, count_text, eps_label, find_results, FOLD_IDENTITY_FIELDS, group_name,
    invalid_reason, learning_curve, load_runs, METHOD_FIELDS, method_order, method_title,
    NOT_DEFINING, paired_comparisons, paper_adversarial, paper_value, protocol_deviations,
    reference_method, reference_methods, RESULTS_FILE, row_rank, setup_of, setup_variants,
    STRATEGY_ORDER, strategy_rank,
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
  """The command line, `python -m intermix_jax.report` (imported on call: runpy warns otherwise)."""
  from intermix_jax.report.__main__ import main as _main  # pylint: disable=import-outside-toplevel
  return _main(argv)
