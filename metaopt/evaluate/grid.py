"""The learning-rate grid: a log grid around the spec's default, the best point, and widening at an edge.

The protocol (docs/baselines/README.md): 9 points 3x apart; while the best rate is at an edge, 2 more
rates 3x apart beyond it (at most ``max_widen`` times). Each point's value is its tuning loss
(``scoring.tuning_losses``: the median over >= 2 tuning seeds). Pure functions on floats so the tuning
rule is testable without training anything.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence


def log_grid(centre: float, points: int, factor: float) -> list[float]:
    """``points`` rates ``factor`` apart, geometrically centred on ``centre`` (ascending)."""
    if centre <= 0 or not math.isfinite(centre):
        raise ValueError(f"the grid centre must be a positive rate, got {centre}")
    mid = (points - 1) / 2
    return [_tidy(centre * factor ** (i - mid)) for i in range(points)]


def _tidy(lr: float) -> float:
    """Round to 10 significant digits: 0.3 rather than 0.30000000000000004 in tables and file names."""
    return float(f"{lr:.10g}")


def extend(lrs: Sequence[float], side: str, factor: float, count: int = 2) -> list[float]:
    """``count`` new rates beyond the lowest (``side='low'``) or highest (``'high'``) rate of ``lrs``."""
    if side == "low":
        lo = min(lrs)
        return [_tidy(lo / factor ** k) for k in range(count, 0, -1)]
    if side == "high":
        hi = max(lrs)
        return [_tidy(hi * factor ** k) for k in range(1, count + 1)]
    raise ValueError(f"side must be 'low' or 'high', got {side!r}")


def best_index(losses: Sequence[float]) -> Optional[int]:
    """Index of the lowest finite tuning loss; ``None`` when every point diverged.

    Non-finite losses (a diverged rate) are ignored rather than compared, so one blown-up point never
    decides the tuning. Ties go to the smaller rate (the safer choice), since ``losses`` is ascending in lr.
    """
    finite = [(s, i) for i, s in enumerate(losses) if s is not None and math.isfinite(s)]
    return min(finite)[1] if finite else None


def edge_to_widen(losses: Sequence[float]) -> Optional[str]:
    """Which side to extend: ``'low'``/``'high'`` if the best finite point is at that end of the grid.

    When nothing is finite, every rate was too large (loss blows up), so the grid moves down.
    """
    best = best_index(losses)
    if best is None:
        return "low"
    if best == 0:
        return "low"
    if best == len(losses) - 1:
        return "high"
    return None
