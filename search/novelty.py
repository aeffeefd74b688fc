"""Is a found program new? Compare it with every program of the library (``metaopt/library/*.opt``).

Three checks, all on the functional fingerprint's probe inputs (:func:`metaopt.fingerprint.probe_updates`:
three small leaves, a fixed sequence of gradients and losses, the parameters following ``w - lr * u``),
extended from the fingerprint's 8 steps to :data:`STEPS` (the first 8 unchanged):

1. **Same rule** — the fingerprints are equal (updates agree to 4 significant digits), or the distance
   below is at float32 rounding level (``<= SAME_TOL``): the fingerprint's rounding can split two float
   orderings of one formula that straddle a digit, and a constant rescaling is absorbed by the tuned rate.
2. **Closest rule** — the behavioural distance between two update trajectories ``a, b`` (each
   ``[steps, leaves]``, flattened) is the cosine distance ``d(a, b) = 1 - <a, b> / (|a| |b|)`` in [0, 2].
   It is invariant only to one positive scale of the *whole* trajectory — exactly what the tuned learning
   rate absorbs — so per-step magnitude schedules (bias correction, warm-up) still count; a per-step cosine
   would call Adam without bias correction Adam. A trajectory with a non-finite value is at distance 2.
3. **Re-parameterization** — for the ``k`` library rules closest at their defaults, their numeric
   hyperparameters are refitted to minimise ``d`` to the found program in transformed coordinates:
   ``log(1 - v)`` for a decay rate ``0.5 <= v < 1`` (so 0.99 and 0.999 are one step apart), ``log |v|`` for
   other non-zero values, ``v`` itself for zeros (a weight decay switched off); the fallback's structural
   hyperparameters (``metaopt.compile.static_hyperparams``) stay fixed. From the best of the defaults, the
   found program's same-named hyperparameters and a coarse per-coordinate scan, Levenberg–Marquardt
   (Marquardt 1963; the residual is the difference of the unit-normalised trajectories, Jacobian by central
   differences) alternates with compass search (Kolda, Lewis & Torczon, SIAM Review 45(3), 2003) and dense
   line scans, which cross the flat steps of sign rules where the Jacobian vanishes. Every iteration's points
   go through one batched probe evaluation. A refit reaching ``d <= REPARAM_TOL`` makes the found program a
   re-parameterization of that rule (the 8-step fingerprint of a refit is not used: a sign rule refitted to
   agree over 8 steps can still part over 32).

Library programs sharing a fingerprint (Adam, AdaBound and AdamP-conv at their defaults) are one rule here,
represented by the member with the fewest hyperparameters. Optionally a scoring callable (e.g.
:class:`search.polish.FunnelScorer`, the validation suite) also scores the found program beside its closest
rule, at the rule's defaults and refitted.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Callable, Optional, Sequence

import numpy as np

from metaopt.dsl.program import Program
from metaopt.fingerprint import STEPS as FINGERPRINT_STEPS, digest, probe_updates

ScoreFn = Callable[[Sequence[Program]], list]

# Why 1e-6: refitting the library's Adam to Adam with other constants (b1 = 0.85; b1, b2, eps = 0.7, 0.95,
# 1e-3) lands at 1e-15 .. 5e-12, float round-off; a distance of 1e-6 is an RMS mismatch of sqrt(2e-6) ~ 0.14 %
# of the update. What the 32 probe steps cannot separate falls below it too and counts as a
# re-parameterization: AdamW's wd = 1e-4 term (3.7e-8 from Adam), AMSBound's bounds, still wide open (5e-9).
REPARAM_TOL = 1e-6
# float32 round-off between two orderings of one formula gives ~1e-14 (tests/test_novelty.py: 5e-15); the
# nearest library rules that differ by more than a constant scale are >= 3.8e-9 apart at their defaults.
SAME_TOL = 1e-12
# Probe steps for distances: 4x the fingerprint's 8, so rules that agree over a short memory but not a longer
# one come apart (sign(EMA_0.9(g) - EMA_0.99(g)) equals signum on 8 steps, is 2.8e-2 from it on 32).
STEPS = 32
CLOSEST_K = 5
MIN_STEP = 1e-4         # stop when the step (in transformed coordinates) is below this
# Probe evaluations per refit: the interpreter runs a whole iteration's trial points in one batched call
# (milliseconds); programs it cannot encode (fallbacks, matrix ops) go one by one through to_optax (~0.4 s).
MAX_EVALS, MAX_EVALS_COMPILED = 600, 60


def behaviour_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine distance of two update trajectories (see the module docstring); 2 for non-finite ones."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.shape != b.shape or not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return 2.0
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return 0.0 if na == nb else 1.0      # "no update" is one rule; against a real update, orthogonal
    return float(max(0.0, 1.0 - float(a @ b) / (na * nb)))


@dataclasses.dataclass
class Refit:
    """One library rule refitted to the found program's behaviour."""

    name: str
    distance: float                   # at the library defaults
    refit_distance: float             # after refitting its hyperparameters
    hyperparams: dict[str, float]     # the refitted values (the defaults where nothing was free)
    evaluations: int                  # probe evaluations the refit took
    match: bool                       # refit_distance <= tolerance


@dataclasses.dataclass
class NoveltyResult:
    fingerprint: str
    same_as: list[str]                        # library programs computing the same updates (check 1)
    same_fingerprint: bool                    # ... by an equal fingerprint (else by distance <= SAME_TOL)
    closest: Optional[str]                    # nearest library rule at its defaults
    distance: float
    ranking: list[tuple[str, float]]          # the CLOSEST_K nearest (name, distance at defaults)
    refits: list[Refit]
    reparameterization_of: Optional[str]      # best-matching refitted rule, if any matched
    tolerance: float
    scores: Optional[dict[str, float]] = None  # optional: fitness of found / closest / refitted closest
    seconds: float = 0.0

    @property
    def novel(self) -> bool:
        return not self.same_as and self.reparameterization_of is None

    def verdict(self) -> str:
        """One line for the report."""
        if self.same_as:
            how = ("equal fingerprints" if self.same_fingerprint else
                   f"behavioural distance {self.distance:.1e}: float round-off, or a constant scale")
            return f"same rule as library {', '.join(self.same_as)} ({how})"
        if self.reparameterization_of:
            r = next(x for x in self.refits if x.name == self.reparameterization_of)
            hp = ", ".join(f"{k}={v:.4g}" for k, v in r.hyperparams.items())
            return (f"re-parameterization of library {r.name} ({hp}): behavioural distance {r.distance:.2e} at "
                    f"its defaults, {r.refit_distance:.2e} refitted (<= {self.tolerance:g})")
        if self.closest is None:
            return "not comparable: no library program"
        r = next((x for x in self.refits if x.name == self.closest), None)
        after = f", {r.refit_distance:.2e} after refitting its hyperparameters" if r else ""
        return (f"novel: closest library rule {self.closest} at behavioural distance {self.distance:.2e}{after} "
                f"(a re-parameterization would be <= {self.tolerance:g})")

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["ranking"] = [list(x) for x in self.ranking]
        d["novel"], d["verdict"] = self.novel, self.verdict()
        return d


# --- hyperparameter coordinates ---------------------------------------------------------------------
def _encode(v: float) -> tuple[str, float]:
    if v == 0.0:
        return "lin", 0.0
    if 0.5 <= v < 1.0:
        return "beta", math.log(1.0 - v)
    return ("log" if v > 0 else "neglog"), math.log(abs(v))


def _coord(kind: str, v: float) -> Optional[float]:
    """``v`` in the coordinate of ``kind`` (a default's), or None where it has none (a decay rate >= 1)."""
    if kind == "lin":
        return float(v)
    if kind == "beta":
        return math.log(1.0 - v) if v < 1.0 else None
    return math.log(abs(v)) if v != 0 and (v > 0) == (kind == "log") else None


def _decode(kind: str, x: float) -> float:
    if kind == "lin":
        return float(x)
    if kind == "beta":
        return float(1.0 - math.exp(x))
    return float(math.exp(x)) * (1.0 if kind == "log" else -1.0)


def _with(program: Program, values: dict[str, float]) -> Program:
    return dataclasses.replace(program, hyperparams=tuple((n, values.get(n, v)) for n, v in program.hyperparams))


def _free(program: Program) -> list[str]:
    """The hyperparameters a refit may move: not the static ones, and not the random seed of a stochastic rule
    (an integer key, not a continuous coordinate: a refit once moved sgld's seed 0 to -0.001 and crashed)."""
    from metaopt.compile import static_hyperparams
    from metaopt.dsl.inputs import SEED
    fixed = set(static_hyperparams(program)) | {SEED}
    return [n for n, _ in program.hyperparams if n not in fixed]


def probe(progs: Sequence[Program]) -> list[np.ndarray]:
    """The :data:`STEPS`-step probe updates distances are measured on. Interpreted batches are padded to at
    least 16: one compile per bucket serves the library, the found program and every refit."""
    return probe_updates(progs, STEPS, min_batch=16)


def _batched(program: Program) -> bool:
    """Whether the interpreter can run ``program`` (in the fingerprint's largest bucket)."""
    from metaopt.fingerprint import BUCKETS
    from metaopt.interpret import EncodingError, encode
    try:
        encode(program, *BUCKETS[-1])
        return True
    except EncodingError:
        return False


class _Objective:
    """The distance to ``target`` as a function of ``program``'s free hyperparameters in transformed
    coordinates; every call evaluates a batch of points (and counts them)."""

    def __init__(self, program: Program, target: np.ndarray):
        self.program, self.names, self.base = program, _free(program), program.defaults
        self.kinds = [_encode(self.base[n])[0] for n in self.names]
        self.x0 = np.array([_encode(self.base[n])[1] for n in self.names])
        self.target, self.batched, self.evals = target, _batched(program), 0
        t = np.asarray(target, np.float64).ravel()
        self.unit = t / np.linalg.norm(t) if np.all(np.isfinite(t)) and np.any(t) else None

    def values(self, x: np.ndarray) -> dict[str, float]:
        return {**self.base, **{n: _decode(k, float(v)) for n, k, v in zip(self.names, self.kinds, x)}}

    def __call__(self, xs: Sequence[np.ndarray]) -> tuple[list[float], list[Optional[np.ndarray]]]:
        """(distances, unit update vectors or None) at the points ``xs``."""
        ups = probe([_with(self.program, self.values(x)) for x in xs])
        self.evals += len(xs)
        units = []
        for u in ups:
            u = np.asarray(u, np.float64).ravel()
            ok = u.size == np.size(self.target) and np.all(np.isfinite(u)) and np.any(u)
            units.append(u / np.linalg.norm(u) if ok else None)
        return [behaviour_distance(u, self.target) for u in ups], units


def _scan(obj: _Objective, x: np.ndarray) -> list[np.ndarray]:
    """Start points from one batched call: each coordinate alone over a coarse grid, and all of them at
    their best values together (right when the coordinates act separately, a start close to it otherwise)."""
    grids = [np.linspace(math.log(1e-4), math.log(0.5), 8) if k == "beta" else
             (x[i] + np.array([-1.0, -0.1, -0.01, 0.01, 0.1, 1.0]) if k == "lin" else x[i] + np.linspace(-6, 6, 7))
             for i, k in enumerate(obj.kinds)]
    pts = [np.where(np.arange(len(x)) == i, v, x) for i, grid in enumerate(grids) for v in grid]
    fs, _ = obj(pts)
    combined, k = x.copy(), 0
    for i, grid in enumerate(grids):
        j = int(np.argmin(fs[k:k + len(grid)]))
        combined[i] = grid[j]
        k += len(grid)
    return [pts[int(np.argmin(fs))], combined]


def _levenberg_marquardt(obj: _Objective, x: np.ndarray, f: float, unit: np.ndarray, budget: int,
                         h: float = 1e-3) -> tuple[np.ndarray, float]:
    """Gauss-Newton steps on the residual ``unit(x) - unit(target)`` (its squared norm is ``2 d``), Jacobian
    by central differences, five dampings tried at once (Marquardt 1963); stops when none improves."""
    n = len(x)
    while obj.evals + 2 * n + 5 <= budget and f > 0.0:
        _, us = obj([x + s * h * e for e in np.eye(n) for s in (1.0, -1.0)])
        if any(u is None for u in us):
            break
        jac = np.stack([(us[2 * i] - us[2 * i + 1]) / (2 * h) for i in range(n)], axis=1)
        a, g = jac.T @ jac, jac.T @ (unit - obj.unit)
        steps = []
        for lam in (1e-6, 1e-4, 1e-2, 1.0, 1e2):
            step = -np.linalg.lstsq(a + lam * np.diag(np.diag(a) + 1e-12), g, rcond=None)[0]
            steps.append(x + step * min(1.0, 4.0 / max(np.linalg.norm(step), 1e-300)))   # at most 4 e-folds
        fs, trial_units = obj(steps)
        i = int(np.argmin(fs))
        if not fs[i] < f or trial_units[i] is None:
            break
        x, f, unit = steps[i], float(fs[i]), trial_units[i]
    return x, f


def _compass(obj: _Objective, x: np.ndarray, f: float, budget: int) -> tuple[np.ndarray, float]:
    """Compass search (±h along each coordinate at once): also crosses the flat steps of sign rules, where
    differences vanish. h expands after a success and halves after a failure, down to MIN_STEP."""
    n, h = len(x), 1.0
    scale = np.array([0.1 if k == "lin" else 1.0 for k in obj.kinds])     # an e-fold on log scales
    while h >= MIN_STEP and obj.evals + 2 * n <= budget and f > 0.0:
        trials = [x + s * h * scale[i] * e for i, e in enumerate(np.eye(n)) for s in (1.0, -1.0)]
        fs, _ = obj(trials)
        i = int(np.argmin(fs))
        if fs[i] < f:
            x, f, h = trials[i], float(fs[i]), min(1.0, 2.0 * h)
        else:
            h *= 0.5
    return x, f


def _line_scans(obj: _Objective, x: np.ndarray, f: float, budget: int, radius: float = 0.05,
                points: int = 48) -> tuple[np.ndarray, float]:
    """A dense scan of each coordinate around ``x``: a sign rule's distance is a staircase (multiples of
    2 / entries) whose zero step can be narrower than compass steps (signum's beta: 9e-4 wide at 0.8)."""
    if obj.evals + points * len(x) > budget or f == 0.0:
        return x, f
    offsets = np.linspace(-radius, radius, points)
    scale = np.array([0.1 if k == "lin" else 1.0 for k in obj.kinds])
    trials = [x + o * scale[i] * e for i, e in enumerate(np.eye(len(x))) for o in offsets]
    fs, _ = obj(trials)
    i = int(np.argmin(fs))
    return (trials[i], float(fs[i])) if fs[i] < f else (x, f)


def refit(program: Program, target: np.ndarray, start: Optional[dict[str, float]] = None,
          max_evals: Optional[int] = None) -> tuple[dict[str, float], float, int]:
    """Refit ``program``'s free hyperparameters to minimise :func:`behaviour_distance` to ``target`` (its
    :data:`STEPS`-step probe updates). Returns (hyperparameters, distance, probe evaluations).

    Starts: the defaults, ``start`` (e.g. the found program's same-named hyperparameters) and a coarse
    per-coordinate scan; then Levenberg-Marquardt, compass search and dense line scans take turns while they
    improve."""
    obj = _Objective(program, target)
    budget = max_evals if max_evals is not None else (MAX_EVALS if obj.batched else MAX_EVALS_COMPILED)
    starts = [obj.x0]
    if start:
        coords = [_coord(k, start[n]) if n in start else None for n, k in zip(obj.names, obj.kinds)]
        starts.append(np.array([x if c is None else c for c, x in zip(coords, obj.x0)]))
    if obj.names and obj.unit is not None and budget >= 8 * len(obj.names) + 2:
        starts += _scan(obj, obj.x0)
    fs, units = obj(starts)
    i = int(np.argmin(fs))
    x, f = starts[i], float(fs[i])
    while obj.names and obj.unit is not None and f > 0.0 and units[i] is not None:
        x1, f1 = _levenberg_marquardt(obj, x, f, units[i], budget)
        x2, f2 = _line_scans(obj, *_compass(obj, x1, f1, budget), budget)
        if not f2 < f:
            break
        x, f = x2, f2
        fs, units = obj([x])
        i = 0
    return obj.values(x), f, obj.evals


@dataclasses.dataclass(frozen=True)
class _Rule:
    """A class of library programs with one fingerprint, represented by its simplest member."""
    name: str
    aliases: tuple[str, ...]          # the other members (e.g. adamp_conv and adabound for adam)
    program: Program
    fingerprint: str
    updates: np.ndarray               # STEPS-step probe updates of the representative


@functools.lru_cache(maxsize=4)
def _library(names: tuple[str, ...]) -> tuple[_Rule, ...]:
    # The library does not change within a process: its probes are computed once. Programs sharing a
    # fingerprint are one rule on the probes (adam, adamp_conv and adabound at their defaults), refitted once
    # through the member with the fewest hyperparameters (then one the interpreter runs, then by name).
    import metaopt.library
    progs = [metaopt.library.get(n) for n in names]
    ups = probe(progs)
    groups: dict[str, list[int]] = {}
    for i, u in enumerate(ups):
        groups.setdefault(_fingerprint(u), []).append(i)
    rules = []
    for f, members in groups.items():
        members.sort(key=lambda i: (len(progs[i].hyperparams), not _batched(progs[i]), names[i]))
        i = members[0]
        rules.append(_Rule(names[i], tuple(names[j] for j in members[1:]), progs[i], f, ups[i]))
    return tuple(rules)


def _fingerprint(updates: np.ndarray) -> str:
    # The longer probes extend the fingerprint's (same first steps), so their head is the fingerprint.
    return digest(updates[:FINGERPRINT_STEPS])


def novelty(program: Program, names: Optional[Sequence[str]] = None, k: int = CLOSEST_K,
            tolerance: float = REPARAM_TOL, score: Optional[ScoreFn] = None,
            log: Callable[[str], None] = lambda s: None) -> NoveltyResult:
    """Compare ``program`` with the library (or its programs ``names``); see the module docstring."""
    import metaopt.library
    t0 = time.monotonic()
    rules = _library(tuple(sorted(names if names is not None else metaopt.library.names())))
    (mine,) = probe([program])
    fp = _fingerprint(mine)
    dist = [behaviour_distance(mine, r.updates) for r in rules]
    same = [n for r, d in zip(rules, dist) if r.fingerprint == fp or d <= SAME_TOL for n in (r.name, *r.aliases)]
    same_fp = any(r.fingerprint == fp for r in rules)
    order = sorted(range(len(rules)), key=lambda i: (dist[i], rules[i].name))
    ranking = [(rules[i].name, dist[i]) for i in order[:k]]
    refits: list[Refit] = []
    if not same:
        for i in order[:k]:
            lib = rules[i].program
            start = {n: v for n, v in program.hyperparams if n in lib.defaults}   # same-named hyperparameters
            hp, d, evals = refit(lib, mine, start or None)
            # The distance alone decides: the 8-step fingerprint of a refit can agree where 32 steps do not.
            match = d <= tolerance
            refits.append(Refit(rules[i].name, dist[i], d, hp, evals, bool(match)))
            log(f"novelty: {rules[i].name}: distance {dist[i]:.2e} at defaults, {d:.2e} refitted "
                f"({evals} probe evaluations){' - match' if match else ''}")
    # Of several matches, the rule with the fewest hyperparameters is the explanation (Adam, not AdamW at wd=0).
    matches = sorted((r for r in refits if r.match), key=lambda r: (len(r.hyperparams), r.refit_distance, r.name))
    closest = rules[order[0]] if rules else None
    result = NoveltyResult(fp, same, same_fp, closest.name if closest else None, dist[order[0]] if rules else math.inf,
                           ranking, refits, matches[0].name if matches else None, tolerance)
    if score is not None and closest is not None:
        fitted = next((r.hyperparams for r in refits if r.name == closest.name), closest.program.defaults)
        f = score([program, closest.program, _with(closest.program, fitted)])
        result.scores = {"found": float(f[0]), f"{closest.name} (defaults)": float(f[1]),
                         f"{closest.name} (refitted)": float(f[2])}
    result.seconds = time.monotonic() - t0
    return result
