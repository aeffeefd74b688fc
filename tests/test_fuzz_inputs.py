"""Fuzzed inputs fail with a position, never a bare exception (seeded, a few seconds).

(a) Library programs mutated at the character level (delete / insert / replace) and the token level
    (near-miss names, swapped ops and state kinds, one argument more or fewer, unknown fallbacks, extreme
    numbers) either parse, validate, compile and take a step, or raise ``DSLError`` with file:line:col.
(b) Every shipped config in configs/ with keys and values perturbed (misspelled names, wrong types,
    out-of-range numbers, broken YAML, lines dropped or repeated) either loads or raises ``ConfigError``
    naming the file and a line.
"""
from __future__ import annotations

import collections
import os
import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metaopt
from metaopt.compile import to_optax
from metaopt.config import ConfigError, load_config
from metaopt.dsl import DSLError, ops, parse
from metaopt.dsl.program import LEAF_QUANTITIES, STATE_KINDS
from metaopt.evaluate.config import EvalConfig
from metaopt.meta.config import MetaConfig
from search.config import SearchConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_PROGRAMS = 250
N_CONFIGS = 400
NAME = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")


def near_miss(rng: np.random.Generator, word: str) -> str:
    """``word`` with one letter dropped, doubled or swapped with its neighbour."""
    if len(word) < 2:
        return word + "x"
    i = int(rng.integers(len(word)))
    kind = int(rng.integers(3))
    if kind == 0:
        return word[:i] + word[i + 1:]
    if kind == 1:
        return word[:i] + word[i] + word[i:]
    j = min(i + 1, len(word) - 1)
    chars = list(word)
    chars[i], chars[j] = chars[j], chars[i]
    return "".join(chars)


def _pick(rng: np.random.Generator, items: list):
    return items[int(rng.integers(len(items)))]


def _char_mutation(rng: np.random.Generator, text: str, alphabet: str) -> str:
    i = int(rng.integers(len(text)))
    c = _pick(rng, list(alphabet))
    return [text[:i] + text[i + 1:], text[:i] + c + text[i:], text[:i] + c + text[i + 1:]][int(rng.integers(3))]


# --- (a) programs ------------------------------------------------------------------------------------------

PROGRAM_CHARS = "abcdefghijklmnopqrstuvwxyz_0123456789 +-*/^(),=:<>.#\n\t\r$é[]"
OP_NAMES = [op.name for op in ops.all_ops()]
SWAPPABLE = OP_NAMES + list(STATE_KINDS) + list(LEAF_QUANTITIES)
NUMBERS = ["1e999", "0", "1e-999", "00", "9" * 40, "1.", "-0"]


def mutate_program(rng: np.random.Generator, text: str, library: list[str]) -> tuple[str, str]:
    """One random mutation of DSL ``text``; returns (new text, what was done)."""
    kind = int(rng.integers(8))
    if kind == 0:
        return _char_mutation(rng, text, PROGRAM_CHARS), "char"
    names = list(NAME.finditer(text))
    if kind == 1:   # a near-miss name: unknown op, undefined variable, unknown keyword ...
        m = _pick(rng, names)
        return text[:m.start()] + near_miss(rng, m.group()) + text[m.end():], "near-miss"
    if kind == 2:   # a different op, state kind or leaf quantity in place of one
        spots = [m for m in names if m.group() in SWAPPABLE]
        if spots:
            m = _pick(rng, spots)
            return text[:m.start()] + _pick(rng, SWAPPABLE) + text[m.end():], "swap"
    if kind == 3:   # one argument more or fewer in a call
        calls = list(re.finditer(r"\(([^()]*)\)", text))
        if calls:
            m = _pick(rng, calls)
            inner = m.group(1)
            new = inner.rsplit(",", 1)[0] if "," in inner and rng.random() < 0.5 else inner + ", g"
            return text[:m.start(1)] + new + text[m.end(1):], "arity"
    if kind == 4:   # a fallback to a near-miss of a library name (or to another library program)
        if "fallback" not in text:
            return text.rstrip("\n") + f"\nfallback {near_miss(rng, _pick(rng, library))}() when ndim != 2\n", "fallback"
        target = near_miss(rng, _pick(rng, library)) if rng.random() < 0.7 else _pick(rng, library)
        return re.sub(r"fallback\s+\w+", f"fallback {target}", text), "fallback"
    if kind == 5:   # an extreme or odd number
        nums = list(re.finditer(r"\d+\.?\d*(?:e-?\d+)?", text))
        if nums:
            m = _pick(rng, nums)
            return text[:m.start()] + _pick(rng, NUMBERS) + text[m.end():], "number"
    if kind == 6:   # a line dropped or repeated
        lines = text.split("\n")
        i = int(rng.integers(len(lines)))
        lines[i:i + 1] = [] if rng.random() < 0.5 else [lines[i], lines[i]]
        return "\n".join(lines), "line"
    return _char_mutation(rng, text, PROGRAM_CHARS), "char"


def _step(program) -> None:
    """Compile and take one step on a matrix and a vector leaf."""
    params = {"m": jnp.full((3, 4), 0.5), "v": jnp.linspace(-1.0, 1.0, 5)}
    grads = {"m": jnp.linspace(-1.0, 1.0, 12).reshape(3, 4), "v": jnp.linspace(1.0, -1.0, 5)}
    opt = to_optax(program, learning_rate=1e-3)
    state = opt.init(params)
    opt.update(grads, state, params, value=jnp.float32(1.0),
               obj_fn=lambda p: sum(jnp.sum(x * x) for x in jax.tree.leaves(p)))   # for h / grad_at


def test_mutated_programs_fail_only_with_positioned_dsl_errors():
    rng = np.random.default_rng(20240611)
    library = metaopt.library.names()
    sources = {n: metaopt.library.source(n) for n in library}
    outcomes: collections.Counter = collections.Counter()
    for _ in range(N_PROGRAMS):
        name = _pick(rng, library)
        text, how = sources[name], []
        for _ in range(int(rng.integers(1, 4))):
            text, what = mutate_program(rng, text, library)
            how.append(what)
        filename = f"{name}.opt"
        try:
            program = parse(text, filename)
        except DSLError as e:
            assert e.file == filename and e.line >= 1 and e.col >= 1, (how, text, str(e))
            assert str(e).startswith(f"{filename}:{e.line}:{e.col}: "), str(e)
            outcomes["rejected", how[-1]] += 1
            continue
        except Exception as e:   # noqa: BLE001 - the point of the test
            pytest.fail(f"{type(e).__name__} (not DSLError) from parse after {how}: {e}\n{text}")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)   # 1e999 overflows to inf: allowed
                _step(program)
        except ValueError as e:
            # The one failure that depends on the parameters, not the text: a matrix-only rule given a
            # vector leaf (the message says to add a fallback).
            assert "reaches it; add `fallback" in str(e), (how, text, str(e))
            outcomes["needs-matrix", how[-1]] += 1
            continue
        except Exception as e:   # noqa: BLE001
            pytest.fail(f"{type(e).__name__} from compiling a validated program after {how}: {e}\n{text}")
        outcomes["accepted", how[-1]] += 1
    accepted = sum(v for (k, _), v in outcomes.items() if k == "accepted")
    rejected = sum(v for (k, _), v in outcomes.items() if k == "rejected")
    # Both outcomes are common, and every mutation kind was caught at least once.
    assert accepted > N_PROGRAMS // 5 and rejected > N_PROGRAMS // 5, outcomes
    assert {w for (k, w) in outcomes if k == "rejected"} >= {"char", "near-miss", "swap", "arity", "fallback"}


# --- (b) configs -------------------------------------------------------------------------------------------

SCHEMAS = {"search": SearchConfig, "eval": EvalConfig, "meta": MetaConfig}
SHIPPED = sorted(os.path.join(kind, f) for kind in SCHEMAS for f in os.listdir(os.path.join(ROOT, "configs", kind))
                 if f.endswith(".yaml"))
YAML_CHARS = ":-[]{}, #'\"\t\nabc1&*!|>%@`"
VALUES = ["-1", "0", "1e999", "-1e-3", "nan", ".inf", "true", "null", "[]", "{}", "[1, 2]", "'x'", "3.5",
          "99999999999999999999", "{a: 1}", "~", "''", "[[1]]", "-0", "0x10", "1_000", "&a 1", "*nope"]


def mutate_config(rng: np.random.Generator, text: str) -> str:
    lines = text.split("\n")
    spots = [i for i, line in enumerate(lines) if re.match(r"\s*(- )?[A-Za-z_]", line)]
    i = _pick(rng, spots)
    line = lines[i]
    kind = int(rng.integers(6))
    if kind == 0:     # a misspelled key
        lines[i] = re.sub(r"^(\s*(?:- )?)([A-Za-z_]+)", lambda m: m.group(1) + near_miss(rng, m.group(2)), line, 1)
    elif kind == 1:   # a misspelled name in the value
        words = list(NAME.finditer(line.split("#")[0]))
        if len(words) > 1:
            m = words[1 + int(rng.integers(len(words) - 1))]
            lines[i] = line[:m.start()] + near_miss(rng, m.group()) + line[m.end():]
    elif kind == 2:   # a value of another type or out of range
        m = re.match(r"^(\s*[A-Za-z_]+:)", line)
        if m:
            lines[i] = f"{m.group(1)} {_pick(rng, VALUES)}"
    elif kind == 3:   # a number replaced
        nums = list(re.finditer(r"-?\d+(?:\.\d*)?(?:e-?\d+)?", line))
        if nums:
            m = _pick(rng, nums)
            lines[i] = line[:m.start()] + _pick(rng, VALUES) + line[m.end():]
    elif kind == 4:
        return _char_mutation(rng, text, YAML_CHARS)
    else:             # a line dropped or repeated (duplicate key)
        lines[i:i + 1] = [] if rng.random() < 0.5 else [line, line]
    return "\n".join(lines)


def test_mutated_configs_fail_only_with_positioned_config_errors(tmp_path):
    rng = np.random.default_rng(20240612)
    outcomes: collections.Counter = collections.Counter()
    for n in range(N_CONFIGS):
        shipped = _pick(rng, SHIPPED)
        kind = shipped.split(os.sep)[0]
        text = open(os.path.join(ROOT, "configs", shipped)).read()
        for _ in range(int(rng.integers(1, 3))):
            text = mutate_config(rng, text)
        path = str(tmp_path / f"{n}_{os.path.basename(shipped)}")
        with open(path, "w") as fh:
            fh.write(text)
        try:
            load_config(path, SCHEMAS[kind])
        except ConfigError as e:
            assert e.file == path and e.line is not None and e.line >= 1, (str(e), text)
            assert str(e).startswith(f"{path}:{e.line}"), str(e)
            outcomes["rejected"] += 1
            continue
        except Exception as e:   # noqa: BLE001 - the point of the test
            pytest.fail(f"{type(e).__name__} (not ConfigError) loading a mutated {shipped}: {e}\n{text}")
        outcomes["loaded"] += 1
    assert outcomes["loaded"] > N_CONFIGS // 10 and outcomes["rejected"] > N_CONFIGS // 3, outcomes
