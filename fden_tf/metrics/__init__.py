"""Disentanglement metrics (issue 9): numbers for what the paper shows by eye.

    from fden_tf import metrics
    results = metrics.evaluate_run("runs/glyphs")   # writes runs/glyphs/disentanglement.json
    print(metrics.format_report(results))

Modules: `alignment` (few-shot from f_ide vs z vs f_sty), `independence` (fresh DV statistician, distance
correlation), `fidelity` (z~ against z, in code and pixel space), `mixing` (what each factor changes when two
images' factors are mixed, any dataset), `ground_truth` (glyphs: style R^2, identity probe, translation
fidelity), `evaluate` (orchestration), `report` (plain text).
"""

from fden_tf.metrics.evaluate import RESULTS_FILE, evaluate_models, evaluate_run, write_results
from fden_tf.metrics.report import format_report

__all__ = ["RESULTS_FILE", "evaluate_models", "evaluate_run", "format_report", "write_results"]
