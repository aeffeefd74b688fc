"""to_source: the exported module runs with jax+optax only and equals to_optax; to_latex; CLI."""
from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metaopt import library, parse, to_latex, to_optax, to_source
from metaopt.cli import main as cli
from source_imports import imported_modules

PROGRAMS = {
    "adam": None,
    # random inputs (a PRNG key in the state) and the objective (the input h, the op grad_at)
    "sgld": None, "sophia": None, "sam": None, "ivon": None, "lisa": None,
    # loss_at (a global result of an objective op), per-leaf scalar states, noise into a row state
    "mezo": None, "lbfgs": None, "apollo_mini": None,
    # the factored row_max/col_max (helpers needing _need_matrix) and the elementwise atan2
    "sm3": None, "adam_atan2": None,
    # global reductions in mid-body, a global state, a per-leaf scalar, a masked update and a fallback
    "mixed": """# test program
optimizer mixed(b = 0.9, lambda = 0.1)
state m = 0
state d: global = 1
state r: scalar = 0
m = interp(m, g, b)
n = global_norm(m) + 1e-12
d = max(d, n)
r = r + mean(abs(g))
k = gt(m * g, 0)
return k * m / n * d + lambda * w + 0 * r
fallback adam(b1 = b) when ndim != 2
""",
}


def _load(name, text):
    p = library.get(name) if text is None else parse(text)
    ns: dict = {}
    exec(compile(to_source(p), f"<export {p.name}>", "exec"), ns)
    return p, ns[p.name]


def _objective(params):   # obj_fn of the rules that evaluate it (sophia's h, sam's grad_at): couples the leaves
    xs = jax.tree.leaves(params)
    return sum(jnp.sum(jnp.sin(x) * x) for x in xs) + 0.1 * sum(jnp.sum(x) for x in xs) ** 2


def _tree():
    k = jax.random.split(jax.random.PRNGKey(2), 3)
    return {"v": jax.random.normal(k[0], (5,)), "w": jax.random.normal(k[1], (4, 3)), "s": jax.random.normal(k[2], ())}


@pytest.mark.parametrize("name", list(PROGRAMS))
def test_exported_module_equals_to_optax(name):
    p, factory = _load(name, PROGRAMS[name])
    results = []
    for opt in (to_optax(p, 1e-2), factory(1e-2)):
        params = _tree()
        state = opt.init(params)
        step = jax.jit(lambda pr, st, i, opt=opt: opt.update(
            jax.tree.map(lambda x: jnp.cos(2.0 * x + i), pr), st, pr, obj_fn=_objective))
        for i in range(10):
            u, state = step(params, state, i)
            params = optax.apply_updates(params, u)
        results.append(params)
    for a, b in zip(jax.tree.leaves(results[0]), jax.tree.leaves(results[1])):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_exported_module_imports_only_jax_optax_stdlib():
    src = to_source(parse(PROGRAMS["mixed"]))
    mods = imported_modules(src)
    assert mods <= {"jax", "optax", "functools", "math", "typing"}, mods
    assert "def mixed(learning_rate, b=0.9, lambda_=0.1, io_paths=())" in src
    assert "def _adam_step(" in src   # the fallback program is inlined
    assert "m = b * m + (1 - b) * g" in src   # one readable line per statement


def test_latex_renders_each_statement():
    tex = to_latex(library.get("adam"))
    assert tex.startswith("\\begin{aligned}") and tex.endswith("\\end{aligned}")
    assert r"m &\leftarrow b_{1} m + (1 - b_{1}) g" in tex
    assert r"\sqrt{" in tex and r"\frac{" in tex and r"\epsilon" in tex
    # a found program's states are s0, s1, ...: their initial values must not be double subscripts (s_{0}_{0})
    found = to_latex(parse("optimizer f()\nstate s0 = 0\ns0 = interp(s0, g, 0.9)\nreturn s0"))
    assert "{s_{0}}_{0} &= 0" in found and "_{0}_{0}" not in found


def test_cli_list_show_export(tmp_path, capsys):
    assert cli(["list"]) == 0
    out = capsys.readouterr().out
    assert any(line.split()[:3] == ["adam", "E", "2"] for line in out.splitlines())
    f = tmp_path / "signmat.opt"
    f.write_text("optimizer signmat()\nreturn sign(g)\nfallback sgd() when ndim != 2\n")
    assert cli(["show", str(f)]) == 0
    assert "fallback sgd() when ndim != 2" in capsys.readouterr().out
    bad = tmp_path / "bad.opt"
    bad.write_text("optimizer bad()\nreturn sqrtt(g)\n")
    assert cli(["show", str(bad)]) == 1
    assert f"{bad}:2:8: unknown op 'sqrtt'" in capsys.readouterr().out
    out_py = tmp_path / "adam_export.py"
    assert cli(["export", "adam", "-o", str(out_py)]) == 0
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import adam_export, jax.numpy as jnp; "
            "o = adam_export.adam(0.1); p = {'a': jnp.ones(2)}; "
            "u, _ = o.update(p, o.init(p), p); print(float(u['a'][0]))")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert abs(float(r.stdout.strip()) + 0.1) < 1e-6   # first Adam step is -lr * sign(g)
