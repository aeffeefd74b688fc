"""search.novelty: same rule by fingerprint, closest rule by behaviour, re-parameterization by refitting."""
import dataclasses
import math

import numpy as np
import pytest

from metaopt import library
from metaopt.dsl import parse
from metaopt.fingerprint import fingerprint
from search.novelty import REPARAM_TOL, behaviour_distance, novelty

# A slice of the library, all in the interpreter's smallest bucket (the whole library costs a compile per
# bucket and the compiled path for every fallback program): Adam's family, the sign rules and a few others.
NAMES = ["adam", "adamw", "amsgrad", "adabelief", "adamax", "rmsprop", "momentum", "sgd", "signum", "lion"]


def test_behaviour_distance_is_one_minus_cosine_of_whole_trajectories():
    a = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert behaviour_distance(a, 3.0 * a) == pytest.approx(0.0)                     # one global scale: same
    assert behaviour_distance(a, np.array([[1.0, 0.0], [0.0, 2.0]])) == pytest.approx(1 - 3 / math.sqrt(10))
    assert behaviour_distance(a, -a) == pytest.approx(2.0)
    assert behaviour_distance(a, np.array([[0.0, 1.0], [0.0, 0.0]])) == pytest.approx(1.0)
    assert behaviour_distance(a, np.array([[np.nan, 0.0], [0.0, 1.0]])) == 2.0
    assert behaviour_distance(np.zeros(4), np.zeros(4)) == 0.0 and behaviour_distance(np.zeros(4), np.ones(4)) == 1.0


HEAD = "optimizer my_adam(beta1 = 0.9, beta2 = 0.999, epsilon = 1e-8)\nstate v = 0\nstate m = 0\n"


def test_adam_written_differently_is_the_library_adam():
    """Renamed, statements reordered, interp and square written out, locals, commuted sum: the same
    fingerprint as library adam, so the same rule."""
    other = parse(HEAD + "v = interp(v, g * g, beta2)\nm = beta1 * m + (1 - beta1) * g\n"
                  "mh = m / (1 - beta1 ^ t)\nvh = v / (1 - beta2 ^ t)\nreturn mh / (epsilon + sqrt(vh))\n")
    assert fingerprint(other) == fingerprint(library.get("adam"))
    res = novelty(other, names=NAMES)
    assert "adam" in res.same_as and "amsgrad" not in res.same_as and not res.novel
    assert res.closest in res.same_as and res.refits == []
    assert res.same_fingerprint and res.verdict().endswith("(equal fingerprints)")


def test_a_rewrite_whose_rounding_splits_the_fingerprint_is_still_the_same_rule():
    """``b2 * v + (1 - b2) * square(g)`` rounds differently from ``interp`` and lands across one of the
    fingerprint's 4-digit boundaries; the behavioural distance is at float round-off and decides."""
    other = parse(HEAD + "v = beta2 * v + (1 - beta2) * square(g)\nm = interp(m, g, beta1)\n"
                  "return m / (1 - beta1 ^ t) / (sqrt(v / (1 - beta2 ^ t)) + epsilon)\n")
    assert fingerprint(other) != fingerprint(library.get("adam"))
    res = novelty(other, names=NAMES)
    assert "adam" in res.same_as and res.distance <= 1e-12 and not res.same_fingerprint


def test_adam_with_another_beta1_is_a_reparameterization_of_adam():
    adam = library.get("adam")
    found = dataclasses.replace(adam, name="found", hyperparams=(("b1", 0.85), ("b2", 0.999), ("eps", 1e-8)))
    anonymous = parse("optimizer found()\nstate m = 0\nstate v = 0\nm = interp(m, g, 0.85)\n"
                      "v = interp(v, square(g), 0.999)\n"
                      "return m / (1 - 0.85 ^ t) / (sqrt(v / (1 - 0.999 ^ t)) + 1e-8)\n")
    for program in (found, anonymous):            # same-named hyperparameters start the refit; constants do not
        res = novelty(program, names=NAMES, k=2)          # the two nearest: AdamW and Adam
        assert res.same_as == [] and res.reparameterization_of == "adam" and not res.novel
        fit = next(r for r in res.refits if r.name == "adam")
        assert fit.distance > 100 * REPARAM_TOL >= 100 * fit.refit_distance     # apart at defaults, equal refitted
        assert fit.hyperparams["b1"] == pytest.approx(0.85, abs=2e-3)
        assert "re-parameterization of library adam" in res.verdict()


def test_sign_of_an_ema_difference_is_novel_and_closest_to_a_sign_rule():
    """sign(EMA_0.9(g) - EMA_0.99(g)) agrees with signum over 8 steps (its fingerprint cannot tell), but old
    gradients get negative weights after ~24 steps: no refit of a library rule matches it."""
    found = parse("optimizer d()\nstate m = 0\nstate v = 0\nm = interp(m, g, 0.9)\nv = interp(v, g, 0.99)\n"
                  "return sign(m - v)\n")
    res = novelty(found, names=NAMES, k=3)
    assert res.novel and res.same_as == [] and res.reparameterization_of is None
    assert res.closest in ("signum", "lion", "tiger")
    assert res.refits and all(r.refit_distance > 100 * REPARAM_TOL for r in res.refits)
    assert res.verdict().startswith(f"novel: closest library rule {res.closest}")
    assert res.to_json()["novel"] is True


def test_optional_scores_use_the_callable():
    found = parse("optimizer d()\nstate m = 0\nm = interp(m, g, 0.8)\nreturn sign(m)\n")
    seen = []
    res = novelty(found, names=["signum", "sgd"], score=lambda ps: seen.extend(ps) or [1.0, 2.0, 3.0])
    assert res.reparameterization_of == "signum"
    assert res.scores == {"found": 1.0, "signum (defaults)": 2.0, "signum (refitted)": 3.0}
    assert seen[0] is found and seen[1] == library.get("signum")
    refitted = next(r for r in res.refits if r.name == "signum").hyperparams["beta"]
    assert seen[2].defaults["beta"] == pytest.approx(refitted)


def test_refit_never_moves_the_seed_of_a_stochastic_rule():
    # sgld (Langevin noise, keyed by its `seed` hyperparameter) among the refitted rules: the seed stays as it is
    from metaopt import library
    from search import novelty
    target = novelty.probe([library.get("momentum")])[0]
    hp, dist, _ = novelty.refit(library.get("sgld"), target)
    assert hp["seed"] == library.get("sgld").defaults["seed"] and np.isfinite(dist)
