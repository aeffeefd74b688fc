"""Export a DSL Program as a standalone Python module: ``to_source(program) -> str``.

The module imports only jax, optax and the standard library and defines
``<name>(learning_rate, **hyperparams) -> optax.GradientTransformationExtraArgs`` computing the same
numbers as ``metaopt.to_optax`` (same ops in the same order; multi-line op implementations are copied
verbatim from ``metaopt/dsl/pyhelpers.py``, which ``to_optax`` itself runs). Each DSL statement becomes one
line inside a per-leaf loop; a global reduction ends the loop, is computed over all leaves, and the next
statements continue in a new loop. A fallback program is exported into the same module.
"""
from __future__ import annotations

import builtins
import inspect
import keyword
import textwrap

from metaopt import leaf_io
from metaopt.compile import state_class
from metaopt.dsl import inputs, ops, pyhelpers
from metaopt.dsl.program import (INPUT_KINDS, BoolOp, Call, Compare, Const, Expr, Predicate, Program, Var,
                                 format_number, walk)
from metaopt.dsl.validate import expr_kind

__all__ = ["to_source"]

_LEAF_IO = ("io_prefixes", "leaf_paths", "io_leaves")   # copied verbatim from metaopt/leaf_io.py

_RESERVED = {"jax", "jnp", "optax", "math", "functools", "NamedTuple", "Any", "idx", "n", "i", "state", "treedef",
             "gs", "ws", "us", "fb", "fus", "learning_rate", "params", "updates", "value", "extra", "init_fn", "update_fn", "shape",
             "io", "ios", "io_paths", *_LEAF_IO, "obj", "obj_fn", "rng_key", "leaf_key", "normal_like", "_draw_dtype",
             "rademacher_like", "hutchinson",
             *dir(builtins),
             *(op.helper for op in ops.all_ops() if op.helper)}   # helper functions live at module level
# Fallback predicates' leaf quantities over a handles() function's arguments `shape` and `io` (a bool)
_LEAF_PY = {"ndim": "len(shape)", "numel": "math.prod(shape)", "min_dim": "(sorted(shape)[-2:] or [1])[0]",
            "io": "int(io)"}


def _py_name(name: str) -> str:
    if name.startswith("_"):
        return "v" + name
    if keyword.iskeyword(name) or name in _RESERVED:
        return name + "_"
    return name


def _num(v: float) -> str:
    s = format_number(v)
    return s + ".0" if s.lstrip("-").isdigit() else s   # float literals: no int32 overflow in jnp


class _Expr:
    """Renders expressions as Python with minimal parentheses (Python and the DSL share precedences)."""

    def __init__(self, names: dict[str, str], globals_: dict[Call, str]):
        self.names, self.globals = names, globals_

    def __call__(self, e: Expr) -> tuple[str, int]:
        if isinstance(e, Const):
            return _num(e.value), (3 if e.value < 0 else 5)
        if isinstance(e, Var):
            return self.names.get(e.name, _py_name(e.name)), 5
        if e in self.globals:
            return self.globals[e], 5
        op = ops.get(e.op)
        args = [self(a) for a in e.args]
        if op.prefix:
            (s, p), = args
            return f"-{s if p >= 3 else f'({s})'}", 3
        if op.infix:
            (ls, lp), (rs, rp) = args
            lmin, rmin = (op.prec, op.prec + 1) if op.assoc == "left" else (op.prec + 1, 3)
            ls = ls if lp >= lmin else f"({ls})"
            rs = rs if rp >= rmin else f"({rs})"
            return f"{ls} {'**' if op.symbol == '^' else op.symbol} {rs}", op.prec
        wrap = op.py_wrap or (0,) * len(args)
        texts = [s if p >= need else f"({s})" for (s, p), need in zip(args, wrap)]
        return op.py.format(*texts), op.py_prec


class _Gen:
    def __init__(self, program: Program):
        self.p = program
        self.helpers: set[str] = set()
        self.fn = _py_name(program.name)
        self.cls = state_class(program.name, tuple(s.name for s in program.states)).__name__
        self.hp = [_py_name(n) for n, _ in program.hyperparams]
        self.drawn = inputs.random_inputs(program.reads())   # random inputs: a PRNG key in the state
        if self.drawn:
            self.helpers |= {"rng_key", "leaf_key"} | {"noise": {"normal_like", "_draw_dtype"},
                                                       "h": {"rademacher_like", "hutchinson"}}[self.drawn[0]]
            if len(self.drawn) > 1:
                self.helpers |= {"normal_like", "_draw_dtype", "rademacher_like", "hutchinson"}

    def sig(self) -> str:
        return ", ".join(f"{h}={_num(v)}" for h, (_, v) in zip(self.hp, self.p.hyperparams))

    def hp_args(self) -> str:
        return ", ".join(self.hp)

    def note_helpers(self, e: Expr) -> None:
        for c in walk(e):
            if isinstance(c, Call) and ops.get(c.op).helper:
                self.helpers.add(ops.get(c.op).helper)

    def state_class(self) -> list[str]:
        lines = [f"class {self.cls}(NamedTuple):", f'    """State of {self.p.name}: step count, one field per '
                 f'DSL state (global: one value), the fallback\'s state."""', "    count: Any"]
        if self.drawn:
            lines.append("    rng_key: Any   # PRNGKey(seed): each step's draws fold in count, leaf and stream")
        lines += [f"    {_py_name(s.name)}: Any" for s in self.p.states]
        lines.append("    fallback: Any = None")
        return lines

    def handles(self) -> list[str]:
        """``mine(shape, io)``: whether this program itself handles a leaf (not its fallback)."""
        f = self.p.fallback
        if f is None:
            return []
        pred = _predicate(f.when, {n: h for (n, _), h in zip(self.p.hyperparams, self.hp)})
        hps = f", {self.hp_args()}" if self.hp else ""
        return [f"def _{self.fn}_handles(shape, io{hps}):", f"    return not ({pred})", ""]

    def mine_line(self, arr: str) -> str:
        if self.p.fallback is None:
            return f"    idx = [i for i, x in enumerate({arr}) if x is not None]"
        extra = f", {self.hp_args()}" if self.hp else ""
        return (f"    idx = [i for i, x in enumerate({arr}) if x is not None and "
                f"_{self.fn}_handles(x.shape, ios[i]{extra})]")

    def fallback_call(self, kind: str) -> list[str]:
        f = self.p.fallback
        if f is None:
            return [f"    fb = None"]
        r = _Expr({n: h for (n, _), h in zip(self.p.hyperparams, self.hp)}, {})
        args = ", ".join(f"{_py_name(n)}={r(e)[0]}" for n, e in f.args)
        sub = "[None if (i in idx) else x for i, x in enumerate({})]"
        if kind == "init":
            return [f"    fb = _{_py_name(f.name)}_init({sub.format('ws')}, ios, treedef{', ' + args if args else ''})"]
        return [f"    fus, fb = _{_py_name(f.name)}_step({sub.format('gs')}, {sub.format('ws')}, ios, state.fallback, "
                f"treedef{', ' + args if args else ''}, t=t, lr=lr, loss=loss, obj=obj)",
                "    us = [fu if i not in idx else u for i, (u, fu) in enumerate(zip(us, fus))]"]

    def init(self) -> list[str]:
        p = self.p
        sig = f", {self.sig()}" if self.hp else ""
        L = [f"def _{self.fn}_init(ws, ios, treedef{sig}):", self.mine_line("ws")]
        r = _Expr({}, {})
        for s in p.states:
            self.note_helpers(s.init)
            v, name = r(s.init)[0], _py_name(s.name)
            if s.kind == "global":
                L.append(f"    {name} = jnp.asarray({v}, jnp.float32)")
                continue
            L.append(f"    _{name} = [optax.MaskedNode()] * len(ws)")
            L.append("    for i in idx:")
            L.append("        w = ws[i]")
            L.append(f"        _{name}[i] = _as({v}, _storage(w, {s.kind!r}), w.dtype)")
        L += self.fallback_call("init")
        fields = ", ".join(f"{_py_name(s.name)}" if s.kind == "global" else f"treedef.unflatten(_{_py_name(s.name)})"
                           for s in p.states)
        if self.drawn:
            fields = f"rng_key({_py_name(inputs.SEED)}){', ' + fields if fields else ''}"
        L.append(f"    return {self.cls}(jnp.zeros([], jnp.int32), {fields + ', ' if fields else ''}fallback=fb)")
        return L

    def step(self) -> list[str]:
        p = self.p
        sig = f", {self.sig()}" if self.hp else ""
        kinds = {**INPUT_KINDS, **{n: "const" for n, _ in p.hyperparams}, **{s.name: s.kind for s in p.states}}
        per_leaf = {"g", "w"} | {s.name for s in p.states if s.kind != "global"} | set(self.drawn)
        L = [f"def _{self.fn}_step(gs, ws, ios, state, treedef{sig}, *, t, lr, loss, obj):", self.mine_line("gs"),
             "    us = [None] * len(gs)"] + self.draws()
        for s in p.states:
            name = _py_name(s.name)
            L.append(f"    {name} = state.{name}" if s.kind == "global"
                     else f"    _{name} = treedef.flatten_up_to(state.{name})")
        gl: dict[Call, str] = {}
        loop: list[tuple[str, Expr]] = []   # (target, expr) of the open per-leaf loop

        def flush():
            if loop:
                L.extend(self.loop(loop, per_leaf, gl))
                loop.clear()

        stmts = [(a.target, a.expr) for a in p.body] + [("__u", p.output)]
        for target, e in stmts:
            self.note_helpers(e)
            gcalls = [c for c in _post_order(e) if isinstance(c, Call) and ops.get(c.op).kind in ("global",
                                                                                                 "objective")]
            if any(c not in gl for c in gcalls):
                flush()
                for c in gcalls:
                    if c not in gl:
                        var = f"__g{len(gl)}"
                        L.extend(self.reduction(c, var, per_leaf, gl))
                        per = ops.get(c.op).kind == "objective" and ops.get(c.op).result != "global"
                        gl[c] = f"{var}[i]" if per else var   # grad_at: per leaf
            k = "tensor" if target == "__u" else expr_kind(p, e, kinds)
            if target != "__u":
                if target not in {s.name for s in p.states}:
                    kinds[target] = k
            shared = target != "__u" and ops.join(k, "global") == "global" and (
                target not in {s.name for s in p.states} or p.state(target).kind == "global")
            if shared:
                flush()   # a leaf-independent value: computed once, outside the loops
                per_leaf.discard(target)
                L.append(f"    {_py_name(target)} = {_Expr({}, gl)(e)[0]}")
            else:
                if target != "__u":
                    per_leaf.add(target)
                loop.append((target, e))
        flush()
        L += self.fallback_call("step")
        fields = ", ".join(f"jnp.asarray({_py_name(s.name)}, state.{_py_name(s.name)}.dtype)" if s.kind == "global"
                           else f"treedef.unflatten(_{_py_name(s.name)})" for s in p.states)
        if self.drawn:
            fields = "state.rng_key" + (", " + fields if fields else "")
        L.append(f"    return us, {self.cls}(optax.safe_increment(state.count), "
                 f"{fields + ', ' if fields else ''}fallback=fb)")
        return L

    def draws(self) -> list[str]:
        """The random inputs the program reads, per handled leaf (metaopt/dsl/inputs.py's key derivation)."""
        L = []
        for name in self.drawn:
            key = f"leaf_key(state.rng_key, state.count, i, {inputs.get(name).stream})"
            if name == "noise":
                L += ["    _noise = [None] * len(gs)", "    for i in idx:",
                      f"        _noise[i] = normal_like({key}, gs[i])"]
            else:
                L.append(f"    _h = hutchinson(obj, {{i: rademacher_like({key}, obj[2][i]) for i in idx}})")
        return L

    def _loads(self, exprs: list[Expr], per_leaf: set[str], assigned: set[str]) -> str:
        names = []
        for e in exprs:
            for v in walk(e):
                if isinstance(v, Var) and v.name in per_leaf and v.name not in assigned and v.name not in names:
                    names.append(v.name)
        if not names:
            return ""
        src = {"g": "gs[i]", "w": "ws[i]"}
        return f"        {', '.join(_py_name(x) for x in names)} = " + ", ".join(
            src.get(x, f"_{_py_name(x)}[i]") for x in names)

    def loop(self, stmts: list[tuple[str, Expr]], per_leaf: set[str], gl: dict[Call, str]) -> list[str]:
        r = _Expr({}, gl)
        body, assigned, order = [], set(), []
        for target, e in stmts:
            loads = self._loads([e], per_leaf, assigned)
            if loads:
                body.append(loads)
                assigned |= {v.name for v in walk(e) if isinstance(v, Var)}   # loaded once per loop
            if target == "__u":
                body.append(f"        us[i] = jnp.broadcast_to({r(e)[0]}, gs[i].shape)")
                continue
            body.append(f"        {_py_name(target)} = {r(e)[0]}")
            assigned.add(target)
            if target not in order:
                order.append(target)
        states = {s.name: s for s in self.p.states}
        stores = []
        for x in order:
            n = _py_name(x)
            stores.append(f"        _{n}[i] = _as({n}, _{n}[i].shape, _{n}[i].dtype)" if x in states
                          else f"        _{n}[i] = {n}")
        pre = [f"    _{_py_name(x)} = [None] * len(gs)" for x in order if x not in states and not self._declared(x)]
        return pre + ["    for i in idx:"] + body + stores

    def _declared(self, x: str) -> bool:
        seen = getattr(self, "_decl", set())
        hit = x in seen
        seen.add(x)
        self._decl = seen
        return hit

    def reduction(self, c: Call, var: str, per_leaf: set[str], gl: dict[Call, str]) -> list[str]:
        op = ops.get(c.op)
        r = _Expr({}, {k: v for k, v in gl.items() if k != c})
        args = [r(a)[0] for a in c.args]
        L = ["    __p = []" if op.kind == "global" else "    __p = {}", "    for i in idx:"]
        loads = self._loads(list(c.args), per_leaf, set())
        if loads:
            L.append(loads)
        if op.kind == "objective":   # every leaf's point, then one evaluation of obj_fn (pyhelpers)
            return L + [f"        __p[i] = {op.py.format(*args)}", f"    {var} = {op.helper}(obj, __p)"]
        L.append(f"        __p.append({op.py.format(*args, leaf='gs[i]')})")
        total = "functools.reduce(jnp.maximum, __p)" if op.combine == "max" else "sum(__p[1:], __p[0])"
        L.append(f"    {var} = {op.py_finish.format(total)}")
        return L


def _post_order(e: Expr):
    if isinstance(e, Call):
        for a in e.args:
            yield from _post_order(a)
    yield e


def _predicate(q: Predicate, names: dict[str, str]) -> str:
    if isinstance(q, BoolOp):
        return f" {q.op} ".join(f"({_predicate(a, names)})" for a in q.args)
    assert isinstance(q, Compare)
    return f"{_LEAF_PY[q.quantity]} {q.cmp} {_Expr(names, {})(q.rhs)[0]}"


_RUNTIME = '''
def _storage(w, kind):
    """Shape a state of this kind takes for leaf w (tensor: w's; row: [..., r, 1]; col: [..., 1, c])."""
    if kind == "tensor":
        return w.shape
    if kind == "row":
        return w.shape[:-1] + (1,)
    if kind == "col":
        return w.shape[:-2] + (1, w.shape[-1])
    if kind in ("major", "minor"):   # square, on the longer / shorter side of a 2-D leaf
        side = max(w.shape) if kind == "major" else min(w.shape)
        return (side, side)
    return ()


def _as(value, shape, dtype):
    return jnp.broadcast_to(jnp.asarray(value, dtype), shape)
'''


def program_chain(program: Program) -> list[Program]:
    """The program and its fallback chain (library programs), each once, the program first."""
    from metaopt import library
    progs, todo = [], [program]
    while todo:
        q = todo.pop()
        if any(x.name == q.name for x in progs):
            continue
        progs.append(q)
        if q.fallback is not None:
            todo.append(library.get(q.fallback.name))
    return progs


def to_source(program: Program) -> str:
    """A standalone Python module (jax + optax + stdlib) defining ``<name>(learning_rate, **hp)``."""
    gens = [_Gen(q) for q in program_chain(program)]
    chunks = []
    for gen in reversed(gens):
        chunks += ["", ""] + gen.state_class() + ["", ""] + gen.handles() + gen.init() + ["", ""] + gen.step()
    main = gens[0]
    helpers = set().union(*(g.helpers for g in gens))
    helper_src = [inspect.getsource(getattr(pyhelpers, h)) for h in sorted(helpers)]
    if helpers & {"gt", "lt", "ge", "le"}:
        helper_src.insert(0, inspect.getsource(pyhelpers._mask))
    if helpers & {"row_mean", "col_mean", "row_max", "col_max"}:
        helper_src.insert(0, inspect.getsource(pyhelpers._need_matrix))
    square_ops = any(ops.get(o).sig for g in gens for o in g.p.ops_used())   # major/minor ops: matrix_kinds.py
    if square_ops:
        helper_src[:0] = [inspect.getsource(getattr(pyhelpers, h)) for h in ("_tall", "_first_columns", "_sign_fixed")]
    if square_ops or helpers & {"orthogonalize", "whiten", "svd_basis", "project", "unproject", "row_normalize",
                                "col_normalize"}:
        helper_src.insert(0, inspect.getsource(pyhelpers._as_matrix))
    helper_src.append("\n\n".join(inspect.getsource(getattr(leaf_io, h)) for h in _LEAF_IO))
    sig = f", {main.sig()}" if main.hp else ""
    hp_kw = ", ".join(f"{h}={h}" for h in main.hp)
    doc = textwrap.indent(str(program).rstrip(), "    ")
    needs = sorted({n for g in gens for n in inputs.objective_uses(g.p)})
    what = f"{program.name} evaluates the objective ({', '.join(needs)}): call "
    obj_check = "" if not needs else (
        "        if obj_fn is None or params is None:\n"
        f"            raise ValueError({what!r}\n"
        "                             'update(grads, state, params, obj_fn=f) with f(params) -> the loss on the "
        "current batch')\n")
    top = f'''

def {main.fn}(learning_rate{sig}, io_paths=()) -> optax.GradientTransformationExtraArgs:
    """{program.name}: update w <- w - lr_t * u with u from the DSL program in this module's docstring.

    learning_rate: a float or an optax schedule (called with the number of previous updates).
    io_paths: key-path prefixes ('/'-joined pytree keys, e.g. ("Embed_0", "head") for flax params) of the
    leaves of the model's input and output layers, where a fallback predicate's `io` is 1; default none.
    update(grads, state, params=None, value=None, obj_fn=None): params when the rule reads w, value= the loss
    when it reads loss, obj_fn= (params -> the loss on the current batch, as for optax.contrib.sophia) and params
    when it evaluates the objective (h, grad_at).
    """
    io_paths = io_prefixes(io_paths)

    def init_fn(params):
        ws, treedef = jax.tree.flatten(params)
        return _{main.fn}_init(ws, io_leaves(params, io_paths), treedef{', ' + hp_kw if hp_kw else ''})

    def update_fn(updates, state, params=None, value=None, obj_fn=None, **extra):
        gs, treedef = jax.tree.flatten(updates)
        ios = io_leaves(updates, io_paths)
        ws = treedef.flatten_up_to(params) if params is not None else [None] * len(gs)
        lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
        t = optax.safe_increment(state.count).astype(jnp.float32)
        loss = None if value is None else jnp.asarray(value, jnp.float32)
{obj_check}        obj = None if obj_fn is None else (obj_fn, treedef, ws)
        us, state = _{main.fn}_step(gs, ws, ios, state, treedef{', ' + hp_kw if hp_kw else ''}, t=t, lr=lr, loss=loss,
                                    obj=obj)
        if callable(learning_rate):
            out = [(jnp.asarray(-lr, g.dtype) * u).astype(g.dtype) for g, u in zip(gs, us)]
        else:
            out = [(-lr * u).astype(g.dtype) for g, u in zip(gs, us)]
        return treedef.unflatten(out), state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
'''
    header = (f'"""{program.name}: exported by metaopt from this DSL program (needs only jax and optax).\n\n'
              f'{doc}\n"""\nimport functools\nimport math\nfrom typing import Any, NamedTuple\n\n'
              f'import jax\nimport jax.numpy as jnp\nimport optax\n')
    body = "\n".join(chunks)
    return header + _RUNTIME + ("\n\n" + "\n\n".join(helper_src) if helper_src else "") + body + "\n" + top
