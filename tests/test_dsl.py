"""DSL parser, printer and validator: round trip (hypothesis), every error kind with file/line/col."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import metaopt
from metaopt.dsl import Assign, Call, Const, DSLError, Program, StateDecl, Var, ops, parse

ADAM = """# Adam: Kingma & Ba 2015
optimizer adam(b1 = 0.9, b2 = 0.999, eps = 1e-8)
state m = 0
state v = 0
m = interp(m, g, b1)
v = interp(v, square(g), b2)
return (m / (1 - b1 ^ t)) / (sqrt(v / (1 - b2 ^ t)) + eps)
"""


def test_parse_adam_structure():
    p = parse(ADAM)
    assert p.name == "adam" and p.doc == "Adam: Kingma & Ba 2015"
    assert p.hyperparams == (("b1", 0.9), ("b2", 0.999), ("eps", 1e-8))
    assert p.states == (StateDecl("m", "tensor", Const(0.0)), StateDecl("v", "tensor", Const(0.0)))
    assert p.body[0] == Assign("m", Call("interp", (Var("m"), Var("g"), Var("b1"))))
    assert p.output.op == "div"
    assert parse(str(p)) == p and hash(parse(str(p))) == hash(p)


@pytest.mark.parametrize("text, expected", [
    ("a - b - c", Call("sub", (Call("sub", (Var("a"), Var("b"))), Var("c")))),
    ("a - (b - c)", Call("sub", (Var("a"), Call("sub", (Var("b"), Var("c")))))),
    ("a ^ b ^ c", Call("pow", (Var("a"), Call("pow", (Var("b"), Var("c")))))),
    ("-a ^ 2", Call("neg", (Call("pow", (Var("a"), Const(2.0))),))),
    ("-2", Const(-2.0)),
    ("-(2)", Call("neg", (Const(2.0),))),
    ("(-2) ^ t", Call("pow", (Const(-2.0), Var("t")))),
    ("a * -1", Call("mul", (Var("a"), Const(-1.0)))),
    ("a + b * c", Call("add", (Var("a"), Call("mul", (Var("b"), Var("c")))))),
])
def test_precedence_and_roundtrip(text, expected):
    p = parse(f"optimizer x()\na = g\nb = w\nc = t\nd = a + b + c\nreturn d * ({text})\n")
    assert p.output.args[1] == expected
    assert parse(str(p)) == p


def _err(text: str) -> DSLError:
    with pytest.raises(DSLError) as e:
        parse(text, filename="bad.opt")
    assert e.value.file == "bad.opt"
    return e.value


@pytest.mark.parametrize("text, line, col, fragment", [
    ("optimizer a()\nreturn sqrtt(g)", 2, 8, "did you mean 'sqrt'"),
    ("optimizer a()\nreturn max(g)", 2, 8, "max takes 2 arguments, got 1"),
    ("optimizer a()\nx = g\nreturn q", 3, 8, "undefined variable 'q'"),   # (h is an input: Hutchinson's estimate)
    ("optimizer a(y = 2, x = 1)\nreturn g * y", 1, 20, "hyperparameter 'x' is never used"),
    ("optimizer a()\nx = g\nreturn g", 2, 1, "local 'x' is assigned but never used"),
    ("optimizer a()\nx = g\nx = w\nreturn x", 2, 1, "local 'x' is assigned here but never used"),
    ("optimizer a()\nstate m = 0\nreturn g + m", 2, 7, "state 'm' is never assigned"),
    ("optimizer a()\nstate m: global = 0\nm = g\nreturn m", 3, 1, "a tensor value cannot be stored in global"),
    ("optimizer a()\nstate m: scalar = 0\nm = row_mean(g)\nreturn m", 3, 1, "a row value cannot be stored"),
    ("optimizer a()\nreturn row_mean(t)", 2, 8, "row_mean needs a matrix"),
    ("optimizer a()\nreturn orthogonalize(mean(g))", 2, 8, "orthogonalize needs a matrix"),
    ("optimizer a()\nreturn g +", 2, 11, "expected an expression"),
    ("optimizer a()\nreturn (g", 2, 10, "expected ')'"),
    ("optimizer a(\nreturn g", 1, 13, "expected a hyperparameter name or ')'"),
    ("return g", 1, 1, "expected 'optimizer NAME(...)' header"),
    ("optimizer a()\ng = 2\nreturn g", 2, 1, "cannot assign to input 'g'"),
    ("optimizer a()\nstate m = g\nm = m\nreturn m", 2, 11, "undefined variable 'g' in a state initializer"),
    ("optimizer a()\nstate m: matrix = 0\nreturn g", 2, 10, "expected a state kind"),
    ("optimizer a()\nreturn g\nfallback sgd() when rank != 2", 3, 21, "expected a leaf quantity"),
    ("optimizer a()\nreturn g $ 2", 2, 10, "unexpected character '$'"),
    ("optimizer a()\nreturn g\nx = 1", 3, 1, "only a 'fallback' line may follow 'return'"),
    ("optimizer a()\nsqrt = g\nreturn sqrt", 2, 1, "reserved"),
    ("optimizer a()\nreturn g\nfallback sgd(lr = g) when ndim != 2", 3, 19, "undefined variable 'g' in a fallback"),
    ("optimizer a()\nreturn g\nfallback  adamww() when ndim != 2", 3, 11,
     "unknown library optimizer 'adamww' (did you mean 'adamw'"),
    ("optimizer a(k = 2)\nreturn g\nfallback adamw(b1 = 0.9, b3 = k) when ndim != 2", 3, 26,
     "fallback adamw has no hyperparameter 'b3' (its hyperparameters: b1, b2, eps, wd)"),
    ("optimizer a()\nreturn g\nfallback sgd(lr = 1) when ndim != 2", 3, 14, "its hyperparameters: none"),
    ("optimizer a()\nreturn g\nfallback sgd() when io == 2", 3, 27, "compare it with 0 or 1"),
    ("optimizer a(k = 1)\nreturn g\nfallback sgd() when ndim != 2 or io >= k", 3, 40, "compare it with 0 or 1"),
    ("optimizer a()\nio = g\nreturn io", 2, 1, "reserved"),
    ("optimizer a(io_paths = 1)\nreturn g", 1, 13, "'io_paths' is reserved"),
])
def test_errors_name_line_col(text, line, col, fragment):
    e = _err(text)
    assert fragment in e.msg, e.msg
    assert (e.line, e.col) == (line, col), str(e)
    assert f"bad.opt:{line}:{col}:" in str(e)


def test_snapshot_state_may_stay_unassigned():
    p = parse("optimizer a()\nstate x0 = w\nreturn w - x0 + g")
    assert p.states[0].name == "x0"


def test_fallback_predicate_roundtrip():
    p = parse("optimizer a(k = 3)\nreturn k * g\n"
              "fallback adam(b1 = k / 4) when ndim != 2 or (numel < 10 and min_dim <= k)")
    assert p.fallback.name == "adam" and p.fallback.when.op == "or"
    assert parse(str(p)) == p


def test_io_predicate_roundtrip_and_latex():
    p = parse("optimizer a()\nreturn g\nfallback adam() when ndim != 2 or io == 1")
    assert p.fallback.when.args[1].quantity == "io"
    assert str(p).endswith("fallback adam() when ndim != 2 or io == 1\n") and parse(str(p)) == p
    assert "io == 1" in metaopt.to_latex(p)


def test_registry_is_the_single_source():
    for op in ops.all_ops():
        assert op.kind in ops.OP_KINDS and op.latex and (op.py or op.symbol), op.name
        assert (op.fn is not None) != (op.kind in ("global", "objective")), op.name
    assert {o.name for o in ops.searchable()} < {o.name for o in ops.all_ops()}
    assert ops.get("add").symbol == "+" and ops.infix("^").name == "pow" and ops.prefix("-").name == "neg"
    with pytest.raises(KeyError, match="did you mean"):
        ops.get("sqr")
    assert ops.join("row", "col") == "tensor" and ops.join("const", "global") == "global"


# --- hypothesis: random valid programs round-trip through text ------------------------------------------
_NUM = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False, width=64)


def _expr(names: list[str], depth: int):
    leaf = st.one_of(_NUM.map(Const), st.sampled_from(names).map(Var))
    if depth == 0:
        return leaf
    sub = _expr(names, depth - 1)
    elementwise = [op for op in ops.all_ops() if op.kind in ("elementwise", "reduce")]
    return st.one_of(leaf, st.sampled_from(elementwise).flatmap(
        lambda op: st.tuples(*[sub] * op.arity).map(lambda args, op=op: Call(op.name, tuple(args)))))


@st.composite
def programs(draw):
    hps = tuple((f"h{i}", draw(_NUM)) for i in range(draw(st.integers(0, 2))))
    names = ["g", "w", "t"] + [h for h, _ in hps]
    states = tuple(StateDecl(f"s{i}", "tensor", draw(_expr([h for h, _ in hps] + ["w"], 1)))
                   for i in range(draw(st.integers(0, 2))))
    names += [s.name for s in states]
    body = []
    for s in states:
        body.append(Assign(s.name, draw(_expr(names, 2))))
    local = draw(_expr(names, 2))
    body.append(Assign("x", local))
    used = [h for h, _ in hps] + ["x"]
    out = Var(used[0])
    for u in used[1:]:
        out = Call("add", (out, Var(u)))
    out = Call("mul", (out, draw(_expr(names + ["x"], 2))))
    return Program("rand", hps, states, tuple(body), out, None, draw(st.sampled_from(["", "doc line\nmore"])))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs())
def test_roundtrip_random_programs(p):
    text = str(p)
    q = metaopt.parse(text)
    assert q == p, text
    assert str(q) == text


def test_fallback_chain_that_loops_is_rejected(tmp_path, monkeypatch):
    import importlib
    validate_mod = importlib.import_module("metaopt.dsl.validate")   # the module, not the function it exports
    (tmp_path / "p.opt").write_text("optimizer p()\nreturn g\nfallback q() when ndim != 2\n")
    (tmp_path / "q.opt").write_text("optimizer q()\nreturn g\nfallback p() when ndim != 2\n")
    monkeypatch.setattr(validate_mod, "LIBRARY_DIR", tmp_path)
    e = _err("optimizer a()\nreturn g\nfallback p() when ndim != 2")
    assert (e.line, e.col) == (3, 10) and "fallback chain loops: p -> q -> p" in e.msg


def test_every_library_fallback_is_checked_against_its_target():
    # The library's own fallbacks pass the new checks, and the compiled target takes exactly the arguments
    # validation allowed (metaopt.compile resolves the same library file).
    from metaopt.dsl.validate import fallback_header
    for name in metaopt.library.names():
        p = metaopt.library.get(name)
        if p.fallback is not None:
            hps, _ = fallback_header(p.fallback.name)
            assert hps == tuple(metaopt.library.get(p.fallback.name).defaults)
            assert {n for n, _ in p.fallback.args} <= set(hps)
            metaopt.to_optax(p, learning_rate=1e-3)


def test_dsl_imports_no_higher_layer():
    """metaopt.dsl is the bottom layer: interpret, compile, search and tasks import it, never the reverse."""
    import ast
    import pathlib
    forbidden = ("metaopt.interpret", "metaopt.compile", "metaopt.library", "metaopt.learned", "metaopt.meta",
                 "metaopt.evaluate", "search", "tasks")
    for f in pathlib.Path(metaopt.dsl.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for n in names:
                assert not any(n == m or n.startswith(m + ".") for m in forbidden), f"{f.name} imports {n}"
