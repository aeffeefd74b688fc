"""Functional fingerprints: equal for equivalent programs, different for different optimizers."""
from __future__ import annotations

import time

import pytest

from metaopt import library
from metaopt.dsl import parse
from metaopt.fingerprint import fingerprint, fingerprints

HEAD = "optimizer o(b = 0.9)\nstate m = 0\n"


def fp(body: str) -> str:
    return fingerprint(parse(HEAD + body))


@pytest.mark.parametrize("a, b", [
    ("m = interp(m, g, b)\nreturn m * g", "m = interp(m, g, b)\nreturn g * m"),                      # commutation
    ("m = interp(m, g, b)\nreturn m", "state z = 0\nm = interp(m, g, b)\nz = z + exp(g)\nreturn m"),  # dead state
    ("m = interp(m, g, b)\nreturn m", "m = interp(m, g, b)\nx = m\nreturn x"),                        # renaming/alias
    ("m = interp(m, g, b)\nreturn m * 2", "m = interp(m, g, b)\nreturn m + m"),                       # x*2 == x+x
    ("m = interp(m, g, b)\nreturn sign(m)", "m = b * m + (1 - b) * g\nreturn sign(m)"),               # interp
    ("m = interp(m, g, b)\nreturn m / (1 - b ^ t)", "m = interp(m, g, b)\nreturn m / (1 - 0.9 ^ t)"),  # hparam
])
def test_equivalent_programs_share_a_fingerprint(a, b):
    assert fp(a) == fp(b)


def test_different_optimizers_differ():
    names = ["adam", "adabelief", "lion", "signum", "sgd", "momentum", "rmsprop", "adamw"]
    prints = dict(zip(names, fingerprints([library.get(n) for n in names])))
    assert len(set(prints.values())) == len(names), prints
    assert prints["adam"] == fingerprint(library.get("adam"))       # batched == single


def test_nonfinite_and_unencodable_programs_hash_without_error():
    bad = "m = interp(m, g, b)\nreturn log(-abs(m) - 1)"
    assert fp(bad) == fp(bad) != fp("m = interp(m, g, b)\nreturn m")
    muon = library.get("muon")          # fallback + non-searchable op: compiled path
    assert fingerprint(muon) != fingerprint(library.get("adam"))


def test_fingerprint_is_fast_once_warm():
    progs = [library.get(n) for n in ("adam", "lion", "sgd")]
    fingerprints(progs)
    start = time.perf_counter()
    for p in progs:
        fingerprint(p)
    assert (time.perf_counter() - start) / len(progs) < 0.05
