"""The fair-comparison protocol (DESIGN.md, "Fair evaluation") and its reports.

    from metaopt.evaluate import EvalConfig, evaluate
    result = evaluate(EvalConfig(optimizers=["adamw", "lion"], suite="heldout", out="runs/x"))

Modules: ``config`` (settings), ``grid`` (log grid, widening), ``cell`` (tune + seeds for one optimizer on
one task), ``metrics`` (per-run numbers), ``aggregate`` (speedups, loss ratios, intervals, win/tie/loss and the
performance profile, all from ``metaopt.scoring``), ``store`` (per-cell JSON, resume), ``dispatch`` (local or Ray, retries), ``report``
(JSON, CSV, Markdown), ``plots`` (PNG), ``tboard`` (TensorBoard), ``run`` (the driver).
"""
from metaopt.evaluate.config import EvalConfig
from metaopt.evaluate.run import EvalResult, evaluate

__all__ = ["EvalConfig", "EvalResult", "evaluate"]
