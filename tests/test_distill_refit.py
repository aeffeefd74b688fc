"""Constant refit recovers a teacher's constants: Adam's b1 = 0.8 from optax.adam(b1=0.8), starting at 0.9,
as a hyperparameter and as a literal."""
from __future__ import annotations

import math

import pytest

from metaopt import library
from metaopt.distill import record, refit
from metaopt.distill.fit import imitation
from metaopt.dsl import parse


@pytest.fixture(scope="module")
def b08_rec():
    return record.record("optax:adam(b1=0.8)", ["smoke_digits_mlp"], 30, 0, None, learning_rate=1e-2, every=3)


def test_refit_recovers_adams_b1(b08_rec):
    r = refit.refit("adam", b08_rec, iters=150)
    assert abs(r.values["b1"][1] - 0.8) < 0.01
    assert r.after < 1e-4 < r.before and r.skipped == 0
    assert r.program.name == "adam_refit" and parse(r.text) == r.program
    assert r.program.defaults["b1"] == r.values["b1"][1]
    (res,) = imitation([r.program], b08_rec)          # the printed program imitates as well as the fit claims
    assert res.cos_error == pytest.approx(r.after, rel=1e-3, abs=1e-6)


def test_refit_fits_literals_and_leaves_integers(b08_rec):
    src = ("optimizer lit()\nstate m = 0\nstate v = 0\nm = interp(m, g, 0.9)\nv = interp(v, square(g), 0.999)\n"
           "return m / (1 - 0.9 ^ t) / (sqrt(v / (1 - 0.999 ^ t)) + 1e-8)\n")
    r = refit.refit(src, b08_rec, iters=150)
    where = {s.name: s.where for s in r.slots}
    assert sorted(where.values()) == ["m = ...", "return", "return", "return", "v = ..."]
    m_decay = next(n for n, w in where.items() if w == "m = ...")
    assert abs(r.values[m_decay][1] - 0.8) < 0.01
    body = r.program.body[0].expr
    assert body.op == "interp" and abs(body.args[2].value - 0.8) < 0.01
    assert "(1 - " in r.text                    # the integer 1 of the bias corrections stayed a literal 1


def test_parametrise_slots():
    _, slots = refit.parametrise(library.get("adafactor"))
    names = {s.name for s in slots}
    assert "min_dim_size_to_factor" not in names     # decides the fallback's leaves: structural, not fitted
    assert {"decay_rate", "eps", "clipping_threshold", "min_scale"} <= names
    p, slots = refit.parametrise(parse("optimizer o(b = 0.9, wd = 0)\nstate m = 0\nm = interp(m, g, b)\n"
                                       "return 2 * m + 0.5 * g - 3e-4 * w + wd * w\n"))
    # b is a decay (interp's beta); 0.5 and 3e-4 are multipliers, free to grow past 1; 2 is an integer; wd is 0
    assert [(s.name, s.value, s.transform) for s in slots] == [("b", 0.9, "logit"), ("c1", 0.5, "log"),
                                                               ("c2", 3e-4, "log")]
    assert p.defaults == {"b": 0.9, "wd": 0.0, "c1": 0.5, "c2": 3e-4}
    _, with_ints = refit.parametrise(parse("optimizer o()\nreturn 2 * g\n"), include_integers=True)
    assert [(s.value, s.transform) for s in with_ints] == [(2.0, "log")]


@pytest.mark.parametrize("x, want", [(0.80012, 0.8001), (0.99955391, 0.9995539), (0.99999, 0.99999),
                                     (9.7963e-9, 9.796e-9), (-0.333333, -0.3333), (2.71828, 2.718), (0.0, 0.0)])
def test_round_constant(x, want):
    got = refit.round_constant(x)
    assert got == want and repr(got) == repr(want)
    assert math.copysign(1, got) == math.copysign(1, x)


def test_refit_rejects_unknown_objective(b08_rec):
    with pytest.raises(ValueError, match="objective"):
        refit.refit("adam", b08_rec, objective="l1")
