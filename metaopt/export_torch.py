"""Export a DSL Program as a standalone PyTorch optimizer: ``to_torch_source(program) -> str``.

The module imports only ``torch`` and ``math`` and defines ``class <Name>(torch.optim.Optimizer)`` whose
``__init__(params, lr=1e-3, <the program's hyperparameters>, *, maximize=False, io_params=())`` takes parameter
groups with per-group hyperparameters (``io_params``: input/output layers), ``step(closure=None)`` matches
``metaopt.to_optax``: ``w <- w - lr * u`` with ``u`` the program's output. It follows the structure of
``metaopt.export.to_source``: statements run in per-leaf loops (here: per parameter group, then per parameter);
a global reduction ends a loop, is combined over every parameter the program handles (all groups), and the
next statements continue in a new loop; leaf-independent statements run once between loops. Each op is written
with its registry torch form (``Op.torch``); helpers come verbatim from ``metaopt/torch_runtime.py``.

Conventions (documented in docs/torch.md): ``t`` counts ``step()`` calls of the optimizer (one count for all
parameters, as metaopt's ``t``), float32 like ``t``, ``loss`` (float32) and global states in metaopt;
optimizer-wide values (global states, ``step``) live in ``state["global"]``, so ``state_dict`` round-trips
them. Random inputs (``noise``, ``h``'s Rademacher signs) are JAX's own draws, reproduced bit for bit, and the
objective's (``h``, ``grad_at``) come from ``step``'s closure (metaopt/torch_inputs.py). Speed: constants are
hoisted out of the parameter loop as Python floats, and fresh temporaries and state buffers are updated in place
(``lerp_``, ``addcmul_``, ``add_(alpha=)``, ``addcdiv_`` for the final update).

The statement and loop structure lives here (``_Step``); the text of single expressions in
``export_torch_expr``, the in-place update forms in ``export_torch_inplace``, the optimizer class in
``export_torch_class`` and the copied runtime helpers in ``export_torch_helpers``.
"""
from __future__ import annotations

import textwrap

from metaopt.dsl import inputs, ops
from metaopt.dsl.program import INPUT_KINDS, Call, Expr, Program, Var
from metaopt.export import _num, _post_order, _predicate, program_chain
from metaopt.export_torch_expr import Block as _Block, ExprForms, local_name as _name
from metaopt.export_torch_helpers import helper_sources
from metaopt.export_torch_inplace import DIMS as _DIMS, InPlaceForms, paren as _paren

__all__ = ["to_torch_source", "class_name"]


def class_name(program: Program) -> str:
    """``dadapt_adamw`` -> ``DadaptAdamw``."""
    return "".join(part[:1].upper() + part[1:] for part in program.name.split("_") if part) or "Optimizer"


class _Step(ExprForms, InPlaceForms):
    """Generates ``_<name>_route``, ``_<name>_init``, ``_<name>_init_global`` and ``_<name>_step``."""

    def __init__(self, program: Program):
        self.p = program
        self.fn = _name(program.name)
        self.hp = [n for n, _ in program.hyperparams]
        self.states = {s.name: s for s in program.states}
        self.kinds = {**INPUT_KINDS, **{n: "const" for n in self.hp}, **{s.name: s.kind for s in program.states}}
        self.helpers: set[str] = set()
        self.ssa: dict[str, str] = {}            # DSL temp / global state -> current python name
        self.origin: dict[str, str] = {}         # python name -> "const" | "global" | "leaf"
        self.const_defs: list[tuple[str, str, set]] = []   # (python name, code, deps) in program order
        self.tdep: set[str] = set()              # const python names computed from t (float32 tensors)
        self.aliases: dict[str, set[str]] = {}   # state -> temps that may hold its buffer itself
        self.keeps: list[str] = []
        self.count = 0
        self.gl: dict[Call, str] = {}
        self.multi = False
        self.drawn = inputs.random_inputs(program.reads())   # noise, h: drawn per parameter before the statements
        self.needs_n = bool(self.drawn)                      # the step defines n (parameters handled)

    # ------------------------------------------------------------------ statements
    def may_alias(self, e: Expr) -> set[str]:
        """States whose buffer the value of ``e`` may be (only a bare name passes a buffer on)."""
        if not isinstance(e, Var):
            return set()
        if e.name in self.states:
            return {e.name}
        return {s for s, temps in self.aliases.items() if e.name in temps}

    def state_stmt(self, blk: _Block, target: str, e: Expr) -> None:
        s = self.states[target]
        ks, ke = s.kind, self.kind(e)
        buf = self.leaf_var(target, blk)
        safe = not self.aliases.get(target)
        self.helpers |= {"_store", "_new_state"}
        if safe and ks in _DIMS and isinstance(e, Call) and e.op == "interp" and e.args[0] == Var(target) \
                and self.is_number(e.args[2]) and ops.join(ks, self.kind(e.args[1])) == ks \
                and self.kind(e.args[1]) in _DIMS:
            b = self.rt(e.args[2], blk)
            b = _paren(b[0], b[1], 2)
            x = e.args[1]
            if isinstance(x, Call) and x.op == "square" and self.kind(x.args[0]) in _DIMS \
                    and ops.join(ks, self.kind(x.args[0])) == ks:
                y = self.rt(x.args[0], blk)[0]
                if not y.isidentifier():   # computed once, used twice
                    blk.body.append(f"_sq = {y}")
                    y = "_sq"
                blk.body.append(f"{buf}.mul_({b}).addcmul_({y}, {y}, value=1 - {b})")
            else:
                blk.body.append(f"{buf}.lerp_({self.rt(x, blk)[0]}, 1 - {b})")
            return
        out = self.out_form(e, buf, blk) if safe and ks in _DIMS and ke == ks else None
        if out is not None:   # computed straight into the state's buffer (no new tensor per step)
            blk.body.append(out)
            return
        text, _, fresh = self.rt(e, blk)
        if fresh and ks in _DIMS and ke == ks:
            new = self.fresh(target)
            blk.body.append(f"{new} = st[{target!r}] = {text}")
        elif safe:
            blk.body.append(f"_store({buf}, {text})")
            return
        else:
            new = self.fresh(target)
            blk.body.append(f"{new} = st[{target!r}] = _new_state({text}, p, {ks!r})")
        blk.local[target] = new
        self.aliases[target] = set()

    def loop(self, blk: _Block) -> list[str]:
        return (["    for hp, members in groups:"] + self.header(blk, " " * 8)
                + ["        for i, p, g, st in members:"] + [" " * 12 + x for x in blk.loads + blk.body])

    def reduction(self, c: Call, var: str) -> list[str]:
        op = ops.get(c.op)
        blk = _Block()
        args = []
        for a in c.args:
            text, prec, _ = self.rt(a, blk)
            args.append(f"torch.as_tensor({text})" if self.kind(a) == "const" else _paren(text, prec, 5))
        partial, finish = op.torch
        if op.kind == "objective":   # every parameter's point, then one evaluation (torch_inputs._grad_at)
            self.helpers.add(finish)
            self.needs_n = True
            blk.body += ["_pp[i] = p", f"_pt[i] = {partial.format(*args)}"]
            return (["    _pp, _pt = [None] * n, [None] * n"] + self.loop(blk)
                    + [f"    {var} = {finish}({self.p.name!r}, env['closure'], _pp, _pt)"])
        self.note(partial + finish)
        blk.body.append(f"_p.append({partial.format(*args, leaf='g')})")
        combine = "_combine_max" if op.combine == "max" else "_combine_sum"
        self.helpers.add(combine)
        return ["    _p = []"] + self.loop(blk) + [f"    {var} = {finish.format(combine + '(_p)')}"]

    def step(self) -> list[str]:
        p = self.p
        stmts = [(a.target, a.expr) for a in p.body] + [(None, p.output)]
        glob_states = [s.name for s in p.states if s.kind == "global"]
        for n in glob_states:
            self.ssa[n] = _name(n)
            self.origin[_name(n)] = "global"
        out: list[str] = []
        shared = False
        loop: _Block | None = None
        per_leaf_blocks = 0

        def flush():
            nonlocal loop, per_leaf_blocks
            if loop is not None:
                out.extend(self.loop(loop))
                per_leaf_blocks += 1
                loop = None

        for target, e in stmts:
            for c in _post_order(e):
                if isinstance(c, Call) and ops.get(c.op).kind in ("global", "objective") and c not in self.gl:
                    flush()
                    var = f"g{len(self.gl)}_"
                    out.extend(self.reduction(c, var))
                    per = ops.get(c.op).kind == "objective" and ops.get(c.op).result != "global"
                    self.gl[c] = f"{var}[i]" if per else var   # grad_at: per leaf
                    per_leaf_blocks += 1
            k = self.kind(e)
            if target is None:
                loop = loop or _Block()
                self.output(loop, e)
                continue
            is_state = target in self.states
            if k == "const" and not is_state:
                deps: set = set()
                code, _ = self.rc(e, deps)
                py = self.fresh(target)
                if not self.is_number(e):
                    self.tdep.add(py)
                self.const_defs.append((py, code, deps))
                self.ssa[target], self.origin[py] = py, "const"
                self.kinds[target] = k
                for temps in self.aliases.values():
                    temps.discard(target)
            elif ops.join(k, "global") == "global" and (not is_state or self.states[target].kind == "global"):
                flush()
                shared = True
                blk = _Block(top=True)
                text = self.rt(e, blk)[0]
                py = self.fresh(target)
                out.extend(self.header(blk, "    ") + [f"    {py} = {text}"])
                if is_state:
                    out.append(f"    glob[{target!r}] = _global({py})")
                else:
                    self.kinds[target] = k
                self.ssa[target], self.origin[py] = py, "global"
            else:
                loop = loop or _Block()
                if is_state:
                    self.state_stmt(loop, target, e)
                else:
                    py = self.fresh(target)
                    loop.body.append(f"{py} = {self.rt(e, loop)[0]}")
                    loop.local[target] = py
                    self.ssa[target], self.origin[py] = py, "leaf"
                    self.kinds[target] = k
                    self.keeps.append(py)
                    loop.body.append(f"_{py}[i] = {py}")
                    for temps in self.aliases.values():
                        temps.discard(target)
                    for s in self.may_alias(e):
                        self.aliases.setdefault(s, set()).add(target)
        flush()
        keeps = set(self.keeps)
        if per_leaf_blocks <= 1:   # a single loop: per-leaf temporaries never outlive it
            out = [x for x in out if not any(x.strip() == f"_{py}[i] = {py}" for py in keeps)]
            keeps = set()
        head = [f"def _{self.fn}_step(groups, glob, t, loss, env):",
                f'    """One step of {p.name} for the parameters it handles: groups = [(hp, [(i, p, g, state)])]."""',
                ]
        if keeps or self.needs_n:
            head.append("    n = sum(len(members) for _, members in groups)")
        head += self.draws()
        if shared:
            head.append("    hp0 = groups[0][0]")
            self.helpers.add("_check_uniform")
            head.append(f"    _check_uniform(groups, {['lr'] + [_name(h) for h in self.hp]!r}, {p.name!r})")
        head += [f"    {_name(n)} = glob[{n!r}]" for n in glob_states]
        head += [f"    _{py} = [None] * n" for py in self.keeps if py in keeps]
        return head + out

    def init(self) -> list[str]:
        blk, gblk = _Block(), _Block(top=False)
        fields, gfields = [], []
        for s in self.p.states:
            target = gblk if s.kind == "global" else blk
            text = self.rt(s.init, target)[0]
            if s.kind == "global":
                gfields.append(f"{s.name!r}: _global({text})")
            else:
                fields.append(f"{s.name!r}: _new_state({text}, p, {s.kind!r})")
        self.helpers |= {"_new_state", "_global"}
        if self.drawn:   # the PRNG key of the random inputs, PRNGKey(seed) (metaopt/dsl/inputs.py)
            self.helpers.add("_rng_key")
            gfields.append(f"'rng_key': _rng_key(hp[{_name(inputs.SEED)!r}])")
        return ([f"def _{self.fn}_init(p, hp):"] + ["    " + x for x in blk.loads] + self.header(blk, "    ")
                + [f"    return {{{', '.join(fields)}}}", "", "",
                   f"def _{self.fn}_init_global(hp):"] + self.header(gblk, "    ")
                + [f"    return {{{', '.join(gfields)}}}"])

    def draws(self) -> list[str]:
        """The random inputs, per parameter: JAX's draws (torch_inputs), keys folded from the step count, the
        parameter's position among all the optimizer's parameters (the leaf index) and the stream."""
        L = []
        for name in self.drawn:
            key = f"_leaf_key(glob['rng_key'], env['count'], env['index'][id(p)], {inputs.get(name).stream})"
            loop = ["    for hp, members in groups:", "        for i, p, g, st in members:"]
            self.helpers.add("_leaf_key")
            if name == "noise":
                self.helpers |= {"_normal_like", "_random_words", "_threefry2x32"}
                L += ["    _noise = [None] * n"] + loop + [f"            _noise[i] = _normal_like({key}, g)"]
            else:
                self.helpers |= {"_rademacher_like", "_random_words", "_threefry2x32", "_hutchinson"}
                L += ["    _pp, _z = [None] * n, [None] * n"] + loop + [
                    "            _pp[i] = p", f"            _z[i] = _rademacher_like({key}, p)",
                    f"    _h = _hutchinson({self.p.name!r}, _pp, _z)"]
        return L

    def route(self) -> list[str]:
        from metaopt import library
        L = [f"def _{self.fn}_route(shape, io, hp):",
             f'    """(program handling a parameter of this shape (io: of the input/output layers), its hp)."""']
        f = self.p.fallback
        if f is not None:
            deps: set = set()
            names = {n: self.const_var(n, deps) for n in self.hp}
            pred = _predicate(f.when, names)
            target = library.get(f.name)
            given = dict(f.args)
            args = [f"{_name(n)!r}: {self.rc(given[n], deps)[0] if n in given else _num(v)}"
                    for n, v in target.hyperparams]
            L += [f"    {_name(n)} = hp[{_name(n)!r}]" for n in self.hp if ("hp", n) in deps]
            L += [f"    if {pred}:",
                  f"        return _{_name(f.name)}_route(shape, io, {{'lr': hp['lr'], {', '.join(args)}}})"]
        return L + [f"    return {self.p.name!r}, hp"]


def _needs_matrix(p: Program) -> bool:
    return any(ops.get(o).kind in ("factored", "matrix") for o in p.ops_used()) or any(
        s.kind in ("row", "col") for s in p.states)


def to_torch_source(program: Program) -> str:
    """A standalone module (torch + math) defining ``class <Name>(torch.optim.Optimizer)`` for ``program``."""
    from metaopt.export_torch_class import class_source
    chain = program_chain(program)
    for q in chain:
        for name in sorted(q.ops_used()):
            if not ops.get(name).torch:
                raise NotImplementedError(f"{q.name}: op {name!r} has no PyTorch form (Op.torch in "
                                          f"metaopt/dsl/ops.py), so this program cannot be exported to torch")
    gens = [_Step(q) for q in chain]
    chunks = []
    for gen in reversed(gens):
        chunks += ["", ""] + gen.route() + ["", ""] + gen.init() + ["", ""] + gen.step()
    helper_src = helper_sources(set().union(*(g.helpers for g in gens)), chain)
    doc = textwrap.indent(str(program).rstrip(), "    ")
    header = (f'"""{program.name}: a torch.optim.Optimizer exported by metaopt from this DSL program '
              f'(needs only torch).\n\n{doc}\n"""\nimport math\n\nimport torch\n\n\n')
    reads_loss = any("loss" in q.reads() for q in chain)
    objective = [q.name for q in chain if inputs.objective_uses(q)]
    cls = class_source(program, class_name(program), [q.name for q in chain],
                       [q.name for q in chain if _needs_matrix(q)], reads_loss, objective)
    return header + "\n\n".join(helper_src) + "\n".join(chunks) + "\n\n\n" + cls
