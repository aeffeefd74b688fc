"""Compile a DSL Program into an optax transformation: ``to_optax(program, learning_rate, **hp)``.

The update is ``w ← w − lr_t · u`` where ``u`` is the program's return value and ``lr_t`` is
``learning_rate`` (a float) or ``learning_rate(count)`` (an optax schedule, called with the number of
previous updates, exactly like ``optax.scale_by_learning_rate``).

How a step is traced: statements run in order, each over every leaf the program handles (a "lockstep"
tree map). Elementwise/per-leaf ops are plain JAX calls on that leaf's values, so XLA sees the same
dataflow graph as a hand-written optax rule and fuses it the same way; a global reduction (``global_norm``
...) inside a statement is evaluated once over all handled leaves (partial per leaf, combined) and shared.
All of this is Python run once at trace time: inside ``jit`` nothing is left but the JAX ops.

State: a NamedTuple ``<Name>State(count, <one field per state>, fallback)``. ``tensor``/``scalar``/``row``/
``col`` states are trees shaped like the parameters (``optax.MaskedNode`` at leaves a fallback handles);
``global`` states are one 0-d array; ``fallback`` is the fallback program's state (or ``None``). A program
reading random inputs (``noise``, ``h``) has a field ``rng_key`` after ``count``: ``PRNGKey(seed)``, from which
each step's draws are folded (metaopt/dsl/inputs.py), as ``optax.add_noise`` keeps its key in its state.

Hyperparameters may be JAX scalars as well as Python numbers, so ``optax.inject_hyperparams`` works under
``jit``: ``optax.inject_hyperparams(optax_factory(program), static_args=static_hyperparams(program))``. A
hyperparameter flows as a traced value everywhere — statements, state initial values, fallback arguments — except
where it decides *which leaves* a fallback takes (``fallback ... when min_dim < min_dim_size_to_factor``):
leaf shapes are static, so those hyperparameters are structural and must be Python numbers (or concrete arrays).
``static_hyperparams(program)`` lists them (in the library: Adafactor's ``min_dim_size_to_factor``); a traced
value for one raises ``TypeError`` naming it.
"""
from __future__ import annotations

import collections
import functools
import inspect
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import optax

from metaopt import library
from metaopt.dsl import inputs, ops
from metaopt.dsl import pyhelpers as H
from metaopt.dsl.matrix_kinds import SQUARE
from metaopt.leaf_io import io_leaves, io_prefixes
from metaopt.dsl.program import BoolOp, Call, Compare, Const, Expr, Predicate, Program, Var, free_vars

__all__ = ["to_optax", "optax_factory", "static_hyperparams", "resolve_hyperparams", "leaf_matches",
           "const_value"]


@functools.lru_cache(maxsize=None)
def state_class(name: str, fields: tuple[str, ...]) -> type:
    """One NamedTuple class per (program, state names): stable treedefs, so jit caches across calls."""
    cls_name = "".join(part.capitalize() for part in name.split("_")) + "State"
    return collections.namedtuple(cls_name, ("count", *fields, "fallback"))


def const_value(e: Expr, hp: dict[str, Any]) -> float | jax.Array:
    """Evaluate a constant expression (numbers, hyperparameters, elementwise ops): a Python float when every
    hyperparameter it reads is a Python number, else a JAX scalar (e.g. traced by ``inject_hyperparams``)."""
    if isinstance(e, Const):
        return float(e.value)
    if isinstance(e, Var):
        v = hp[e.name]
        return float(v) if isinstance(v, (int, float)) else v
    args = [const_value(a, hp) for a in e.args]
    value = ops.get(e.op).fn(*args)
    return float(value) if all(isinstance(a, float) for a in args) else value


def _predicate_vars(pred: Predicate) -> set[str]:
    if isinstance(pred, Compare):
        return {v.name for v in free_vars(pred.rhs)}
    return set().union(*(_predicate_vars(a) for a in pred.args))


def static_hyperparams(program: Program) -> tuple[str, ...]:
    """The hyperparameters that decide which leaves a fallback takes (its ``when``, also through a fallback's
    own fallback): leaf shapes are static, so these must be Python numbers. Pass them as ``static_args`` of
    ``optax.inject_hyperparams``."""
    f = program.fallback
    if f is None:
        return ()
    names = _predicate_vars(f.when)
    inner = set(static_hyperparams(library.get(f.name)))
    for arg, e in f.args:
        if arg in inner:
            names |= {v.name for v in free_vars(e)}
    return tuple(n for n in program.defaults if n in names)


def _concrete_static(program: Program, hp: dict[str, Any]) -> dict[str, Any]:
    """``hp`` with the structural hyperparameters as Python floats; a traced one raises ``TypeError``."""
    out = dict(hp)
    for n in static_hyperparams(program):
        try:
            out[n] = float(hp[n])
        except jax.errors.ConcretizationTypeError:
            raise TypeError(
                f"{program.name}: hyperparameter {n!r} decides which leaves take the fallback "
                f"({program.name}'s `fallback ... when`), so it must be a Python number, not a traced value; "
                f"declare it static: optax.inject_hyperparams(..., static_args={static_hyperparams(program)!r})"
            ) from None
    return out


def resolve_hyperparams(program: Program, given: dict[str, Any], what: str = "") -> dict[str, float]:
    """Defaults overridden by ``given``; unknown names raise ``TypeError`` listing the valid ones."""
    defaults = program.defaults
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        valid = ", ".join(defaults) or "none"
        raise TypeError(f"{what or program.name}: unknown hyperparameter(s) {', '.join(unknown)} "
                        f"(valid: {valid})")
    return {**defaults, **given}


def _leaf_quantity(q: str, shape: tuple[int, ...], io: bool) -> int:
    if q == "io":
        return int(io)
    if q == "ndim":
        return len(shape)
    if q == "numel":
        n = 1
        for d in shape:
            n *= d
        return n
    dims = sorted(shape)[-2:]   # min_dim: the smaller of the two largest dims (0-D/1-D: the smallest)
    return dims[0] if dims else 1


_CMP: dict[str, Callable[[float, float], bool]] = {
    "==": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}


def leaf_matches(pred: Predicate, shape: tuple[int, ...], hp: dict[str, Any], io: bool = False) -> bool:
    """Whether a leaf of static ``shape`` (``io``: of the model's input/output layers) satisfies a fallback
    predicate."""
    if isinstance(pred, BoolOp):
        results = (leaf_matches(a, shape, hp, io) for a in pred.args)
        return all(results) if pred.op == "and" else any(results)
    assert isinstance(pred, Compare)
    return _CMP[pred.cmp](_leaf_quantity(pred.quantity, shape, io), const_value(pred.rhs, hp))


def _fit(value, kind: str, like: jax.Array, dtype) -> jax.Array:
    """Shape a state value to its kind's storage shape and dtype."""
    if kind == "tensor":
        shape = like.shape
    elif kind == "row":
        shape = like.shape[:-1] + (1,)
    elif kind == "col":
        shape = like.shape[:-2] + (1, like.shape[-1])
    elif kind in SQUARE:   # square, on the longer / shorter side of the 2-D leaf
        side = max(like.shape) if kind == "major" else min(like.shape)
        shape = (side, side)
    else:
        shape = ()
    return jnp.broadcast_to(jnp.asarray(value, dtype), shape)


class Rule:
    """A program with resolved hyperparameters, applied to the leaves its fallback does not take."""

    def __init__(self, program: Program, hp: dict[str, Any]):
        self.p, self.hp = program, _concrete_static(program, hp)
        self.names = tuple(s.name for s in program.states)
        # random inputs (noise, h) are drawn from a PRNG key kept in the state (metaopt/dsl/inputs.py)
        self.drawn = inputs.random_inputs(program.reads())
        self.cls = state_class(program.name, ("rng_key",) * bool(self.drawn) + self.names)
        self.fallback: Rule | None = None
        if program.fallback is not None:
            f = program.fallback
            target = library.get(f.name)
            args = {n: const_value(e, self.hp) for n, e in f.args}
            self.fallback = Rule(target, resolve_hyperparams(target, args, f"fallback {f.name} of {program.name}"))
        self.reads_loss = "loss" in program.reads() or bool(self.fallback and self.fallback.reads_loss)
        self.reads_w = "w" in program.reads() or bool(self.fallback and self.fallback.reads_w)
        own = inputs.objective_uses(program)
        # what of this rule (or its fallback) needs update(..., obj_fn=): names for the error message
        self.needs_obj = own + [n for n in (self.fallback.needs_obj if self.fallback else []) if n not in own]
        uses = program.ops_used()
        self.needs_matrix = any(ops.get(o).kind in ("factored", "matrix") for o in uses) or any(
            s.kind in ("row", "col") for s in program.states)
        # major/minor state is defined on a 2-D leaf only (metaopt/dsl/matrix_kinds.py)
        self.needs_2d = any(s.kind in SQUARE for s in program.states)

    def mine(self, shapes: list[tuple[int, ...] | None], ios: list[bool]) -> list[bool]:
        """Which of the given leaves (``None`` = not ours at all; ``ios``: of the input/output layers) this
        program itself handles."""
        f = self.p.fallback
        out = [s is not None and not (f is not None and leaf_matches(f.when, s, self.hp, io))
               for s, io in zip(shapes, ios)]
        if self.needs_2d:
            for s, m in zip(shapes, out):
                if m and len(s) != 2:
                    raise ValueError(f"{self.p.name} keeps major/minor (matrix-shaped) state, defined for 2-D "
                                     f"leaves, but a leaf of shape {s} reaches it; add `fallback NAME(...) when "
                                     f"ndim != 2`")
        if self.needs_matrix:
            for s, m in zip(shapes, out):
                if m and len(s) < 2:
                    raise ValueError(f"{self.p.name} uses matrix/factored ops or row/col state but a leaf of "
                                     f"shape {s} reaches it; add `fallback NAME(...) when ndim < 2`")
        return out

    def init(self, ws: list, ios: list[bool], treedef) -> tuple:
        shapes = [None if w is None else tuple(w.shape) for w in ws]
        mine = self.mine(shapes, ios)
        fields = {}
        for s in self.p.states:
            if s.kind == "global":
                fields[s.name] = jnp.asarray(const_value(s.init, self.hp), jnp.float32)
                continue
            leaves = [_fit(self._eval(s.init, {**self.hp, "w": w}, [], {}), s.kind, w, w.dtype) if m
                      else optax.MaskedNode() for w, m in zip(ws, mine)]
            fields[s.name] = treedef.unflatten(leaves)
        if self.drawn:
            fields["rng_key"] = H.rng_key(self.hp[inputs.SEED])
        fb = self.fallback.init(self._sub_leaves(ws, mine), ios, treedef) if self.fallback else None
        return self.cls(jnp.zeros([], jnp.int32), **fields, fallback=fb)

    def _sub_leaves(self, xs, mine):
        return [x if (x is not None and not m) else None for x, m in zip(xs, mine)]

    def _eval(self, e: Expr, env: dict, envs: list[dict], cache: dict):
        if isinstance(e, Const):
            return e.value
        if isinstance(e, Var):
            return env[e.name]
        op = ops.get(e.op)
        if op.kind == "global":
            if e not in cache:   # one barrier per distinct global call per statement, shared by all leaves
                partials = [op.partial(en["g"], *(self._eval(a, en, envs, cache) for a in e.args)) for en in envs]
                cache[e] = ops.combine(op, partials)
            return cache[e]
        if op.kind == "objective":
            if e not in cache:   # a barrier too: every leaf's point, then one evaluation of obj_fn for all
                points = {en["#i"]: self._eval(e.args[0], en, envs, cache) for en in envs}
                cache[e] = getattr(H, op.helper)(env["#obj"], points)
            return cache[e] if op.result == "global" else cache[e][env["#i"]]
        return op.fn(*(self._eval(a, env, envs, cache) for a in e.args))

    def update(self, gs: list, ws: list, ios: list[bool], state, treedef, t, lr, loss, obj=None
               ) -> tuple[list, tuple]:
        """Directions ``u`` for the leaves this rule (or its fallback) handles, and the new state. ``obj``:
        ``(obj_fn, treedef, every parameter leaf)`` when the rule needs the objective."""
        shapes = [None if g is None else tuple(g.shape) for g in gs]
        mine = self.mine(shapes, ios)
        idx = [i for i, m in enumerate(mine) if m]
        base = {**self.hp, "t": t, "lr": lr, "loss": loss, "#obj": obj}
        per_leaf = {n: treedef.flatten_up_to(getattr(state, n)) for n, s in zip(self.names, self.p.states)
                    if s.kind != "global"}
        drawn = self._draw(idx, gs, state, obj)
        envs = []
        for i in idx:
            env = {**base, "g": gs[i], "w": ws[i], "#i": i, **{n: d[i] for n, d in drawn.items()}}
            for s in self.p.states:
                env[s.name] = getattr(state, s.name) if s.kind == "global" else per_leaf[s.name][i]
            envs.append(env)
        for a in self.p.body:
            cache: dict = {}
            values = [self._eval(a.expr, env, envs, cache) for env in envs]
            for env, v in zip(envs, values):
                env[a.target] = v
        us: list = [None] * len(gs)
        out_cache: dict = {}   # the output's global / objective values, shared by all leaves
        for i, env in zip(idx, envs):
            us[i] = jnp.broadcast_to(self._eval(self.p.output, env, envs, out_cache), gs[i].shape)
        fields = {}
        for s in self.p.states:
            old = getattr(state, s.name)
            if s.kind == "global":
                fields[s.name] = jnp.asarray(envs[0][s.name], old.dtype) if envs else old
                continue
            leaves = list(per_leaf[s.name])
            for i, env in zip(idx, envs):
                leaves[i] = _fit(env[s.name], s.kind, gs[i], leaves[i].dtype)
            fields[s.name] = treedef.unflatten(leaves)
        fb = None
        if self.fallback is not None:
            sub_g = self._sub_leaves(gs, mine)
            fus, fb = self.fallback.update(sub_g, self._sub_leaves(ws, mine), ios, state.fallback, treedef, t, lr,
                                           loss, obj)
            us = [fu if not m and g is not None else u for u, fu, m, g in zip(us, fus, mine, gs)]
        if self.drawn:
            fields["rng_key"] = state.rng_key   # draws fold in the count: the key itself stays
        return us, self.cls(optax.safe_increment(state.count), **fields, fallback=fb)

    def _draw(self, idx: list[int], gs: list, state, obj) -> dict[str, dict[int, jax.Array]]:
        """The random inputs the program reads, per handled leaf (metaopt/dsl/inputs.py's key derivation)."""
        out = {}
        for name in self.drawn:
            keys = {i: H.leaf_key(state.rng_key, state.count, i, inputs.get(name).stream) for i in idx}
            if name == "noise":
                out[name] = {i: H.normal_like(keys[i], gs[i]) for i in idx}
            elif name == "h":
                out[name] = H.hutchinson(obj, {i: H.rademacher_like(keys[i], obj[2][i]) for i in idx})
            else:
                raise AssertionError(name)
        return out


def to_optax(program: Program, learning_rate: float | jax.Array | optax.Schedule, *, io_paths: Sequence[str] = (),
             **hyperparams: float | jax.Array) -> optax.GradientTransformationExtraArgs:
    """Compile ``program`` into ``optax.GradientTransformationExtraArgs``.

    ``update(grads, state, params=None, value=None, obj_fn=None)``: ``params`` is needed when the program (or
    its fallback) reads ``w``; ``value`` (the minibatch loss, as for ``optax.polyak_sgd``) when it reads
    ``loss``; ``obj_fn`` (``params -> scalar loss`` on the current batch, as for ``optax.contrib.sophia``), and
    ``params``, when it reads ``h`` or uses ``grad_at``. Random inputs (``noise``, ``h``) are drawn from the key
    in the state (``PRNGKey(seed)``, see metaopt/dsl/inputs.py). Hyperparameters not given take the program's
    defaults; unknown names raise ``TypeError``.
    ``learning_rate`` and hyperparameters may be JAX scalars (traced ones too), except the structural
    ``static_hyperparams(program)``.

    ``io_paths``: key-path prefixes (``"Embed_0"``, ``"encoder/pos"``, ``"head"``; see
    :mod:`metaopt.leaf_io`) of the leaves of the model's input and output layers, where a fallback predicate's
    ``io`` is 1 (``Task.io_paths``; ``metaopt.train`` passes them). Empty: ``io`` is 0 everywhere.
    """
    rule = Rule(program, resolve_hyperparams(program, hyperparams))
    io_paths = io_prefixes(io_paths)
    scheduled = callable(learning_rate)

    def init_fn(params):
        leaves, treedef = jax.tree.flatten(params)
        return rule.init(leaves, io_leaves(params, io_paths), treedef)

    def update_fn(updates, state, params=None, value=None, obj_fn=None, **extra):
        del extra   # other extra args of a chain are not ours
        gs, treedef = jax.tree.flatten(updates)
        if rule.reads_w and params is None:
            raise ValueError(f"{program.name} reads the parameters `w`: call update(grads, state, params)")
        if rule.reads_loss and value is None:
            raise ValueError(f"{program.name} reads `loss`: call update(grads, state, params, value=loss)")
        if rule.needs_obj and (obj_fn is None or params is None):
            raise ValueError(f"{program.name} evaluates the objective ({', '.join(rule.needs_obj)}): call "
                             f"update(grads, state, params, obj_fn=f) with f(params) -> the loss on the current "
                             f"batch (as for optax.contrib.sophia)")
        ws = treedef.flatten_up_to(params) if params is not None else [None] * len(gs)
        obj = (obj_fn, treedef, ws) if rule.needs_obj else None
        lr = learning_rate(state.count) if scheduled else learning_rate
        t = optax.safe_increment(state.count).astype(jnp.float32)
        loss = None if value is None else jnp.asarray(value, jnp.float32)
        us, new_state = rule.update(gs, ws, io_leaves(updates, io_paths), state, treedef, t, lr, loss, obj)
        if scheduled:
            out = [(jnp.asarray(-lr, g.dtype) * u).astype(g.dtype) for g, u in zip(gs, us)]
        else:
            out = [(-lr * u).astype(g.dtype) for g, u in zip(gs, us)]
        return treedef.unflatten(out), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def optax_factory(program: Program) -> Callable[..., optax.GradientTransformationExtraArgs]:
    """``to_optax`` for ``program`` as a function with an explicit signature ``(learning_rate, *, <each
    hyperparameter>=<default>, io_paths=())``, so ``optax.inject_hyperparams`` sees (and injects) every
    hyperparameter (``io_paths``, a tuple, it passes through as a static argument); a ``**hyperparams``
    signature would reach it as one argument named ``hyperparams``.

    >>> from metaopt import library
    >>> p = library.get("adafactor")
    >>> tx = optax.inject_hyperparams(optax_factory(p), static_args=static_hyperparams(p))(learning_rate=0.1)
    >>> sorted(tx.init({"w": jnp.zeros(3)}).hyperparams)[:3]
    ['clipping_threshold', 'decay_rate', 'eps']
    """
    def factory(learning_rate, io_paths=(), **hyperparams):
        return to_optax(program, learning_rate, io_paths=io_paths, **hyperparams)

    kw = inspect.Parameter.KEYWORD_ONLY
    factory.__signature__ = inspect.Signature(
        [inspect.Parameter("learning_rate", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        + [inspect.Parameter(n, kw, default=v) for n, v in program.hyperparams]
        + [inspect.Parameter("io_paths", kw, default=())])
    factory.__name__ = factory.__qualname__ = program.name
    factory.__doc__ = f"metaopt.to_optax(<program {program.name}>, learning_rate, **hyperparameters)."
    return factory
