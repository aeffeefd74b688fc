"""Programs as fixed-shape integer/float arrays (the batched interpreter's input).

Register file (``n_registers`` rows, each a per-parameter tensor in the interpreter)::

    0 g   1 w   2 t   3 loss   4 lr   | states (n_state) | constants (n_const) | temporaries

Each instruction row ``i`` computes ``regs[dst[i]] = OPS[ops[i]](regs[args[i, 0]], regs[args[i, 1]],
regs[args[i, 2]])``. ``OPS[0]`` is ``copy`` (identity) and pads the rows past ``n_rows``; the other opcodes
are the registry's searchable ops sorted by name. Hyperparameters are baked in as constants; constant
sub-expressions are folded. Register ``r`` starts a training at ``init_const[r] + init_w[r] * w0`` (constants,
state initial values ``0``/``c``/``w``); states persist across steps simply because nothing resets them.

``wkind[i]`` is the value kind of row ``i``'s argument (0 tensor, 1 row, 2 col, 3 scalar/global/const):
the interpreter stores every value broadcast to the parameter's shape, so sums (``sum norm dot numel
global_*``) weight each element by ``1 / (copies of it)`` to match the compiled path exactly.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np

from metaopt.dsl import ops as opreg
from metaopt.dsl.fold import const_value
from metaopt.dsl import inputs as inputreg
from metaopt.dsl.program import INPUT_KINDS, Assign, Call, Const, Expr, Program, StateDecl, Var
from metaopt.dsl.simplify import simplify

# The register file holds the interpreted inputs only (g w t loss lr, registers 0..4); a program reading a random
# or objective input (noise, h; metaopt/dsl/inputs.py) or using grad_at is refused and runs through to_optax.
INPUTS = tuple(i.name for i in inputreg.all_inputs() if i.interpreted)
N_INPUTS = len(INPUTS)
# ``interp1m(a, b, q) = (1 - q)*a + q*b`` is ``interp`` with a constant beta given as ``q = 1 - beta``:
# the compiled path computes ``1 - beta`` in Python (float64) before rounding, as optax does for its
# decays; from float32 ``beta = 0.999`` it would be off by 1e-5 relative, so the encoder stores ``q``.
OPS: tuple[str, ...] = ("copy",) + tuple(sorted(op.name for op in opreg.searchable())) + ("interp1m",)
OPCODE: dict[str, int] = {name: i for i, name in enumerate(OPS)}
ARITY: dict[str, int] = {"copy": 1, "interp1m": 3, **{op.name: op.arity for op in opreg.searchable()}}
# Weight kinds (see module docstring); row/col keep their own weights, anything narrower is "scalar".
WKIND = {"tensor": 0, "row": 1, "col": 2, "scalar": 3, "global": 3, "const": 3}
STATE_KIND_CODE = {k: i for i, k in enumerate(("tensor", "scalar", "global", "row", "col"))}
STATE_KIND_NAME = {i: k for k, i in STATE_KIND_CODE.items()}


class EncodingError(ValueError):
    """The program cannot be encoded: a non-searchable op, too many rows or registers, an odd state init."""


class Encoded(NamedTuple):
    """One program (or, with a leading axis on every field, a population; see :func:`stack`)."""
    ops: jax.Array          # int32 [max_len]       opcode per row (index into OPS)
    args: jax.Array         # int32 [max_len, 3]    argument registers (unused slots: 0)
    dst: jax.Array          # int32 [max_len]       destination register
    wkind: jax.Array        # int32 [max_len]       weight kind of the row's argument (for sums)
    n_rows: jax.Array       # int32 []              rows in use; rows past it are padding
    init_const: jax.Array   # float32 [n_registers] constant part of each register's initial value
    init_w: jax.Array       # float32 [n_registers] coefficient of w0 in each register's initial value
    state_kind: jax.Array   # int32 [n_registers]   STATE_KIND_CODE of state registers (0 elsewhere)
    n_state: jax.Array      # int32 []              state registers N_INPUTS .. N_INPUTS + n_state
    n_const: jax.Array      # int32 []              constant registers right after the states
    output: jax.Array       # int32 []              register holding the update direction


def stack(encodeds: list[Encoded]) -> Encoded:
    """A population batch: every field gets a leading axis. All members need the same shapes."""
    if not encodeds:
        raise ValueError("stack() needs at least one Encoded")
    shapes = {tuple(np.shape(f) for f in e) for e in encodeds}
    if len(shapes) != 1:
        raise ValueError("stack(): programs were encoded with different max_len / n_registers")
    # Host arrays: one transfer per field when the batch reaches a jitted call (a jnp.stack here dispatched
    # one device op per program and field: ~40% of a warm hurdle judging's host time).
    return Encoded(*(np.stack([np.asarray(e[i]) for e in encodeds]) for i in range(len(Encoded._fields))))


class _Encoder:
    def __init__(self, program: Program, max_len: int, n_registers: int):
        self.p, self.max_len, self.n_registers = program, max_len, n_registers
        self.hp = {n: float(v) for n, v in program.hyperparams}
        self.states = {s.name: N_INPUTS + i for i, s in enumerate(program.states)}
        self.kinds: dict[str, str] = {**INPUT_KINDS, **{s.name: s.kind for s in program.states}}
        self.names: dict[str, int] = {n: i for i, n in enumerate(INPUTS)} | self.states
        self.consts: dict[float, int] = {}
        self.const_order: list[float] = []
        self.rows: list[tuple[int, tuple[int, int, int], int, int]] = []
        self.reg_kind: dict[int, str] = {}
        self.n_temps = 0

    # Constants get registers after the states; temporaries are allocated from the top down, so the
    # layout only needs the total count once encoding is finished.
    def const(self, value: float) -> int:
        key = float(np.float32(value))
        if key not in self.consts:
            self.consts[key] = len(self.const_order)
            self.const_order.append(key)
        return -1 - self.consts[key]          # placeholder, resolved in finish()

    def temp(self) -> int:
        self.n_temps += 1
        return 1_000_000 + self.n_temps       # placeholder, resolved in finish()

    def kind_of(self, reg: int) -> str:
        if reg < 0:
            return "const"
        if reg < N_INPUTS:
            return INPUT_KINDS[INPUTS[reg]]
        return self.reg_kind.get(reg, "tensor")

    def emit(self, op: str, arg_regs: list[int], arg_kinds: list[str], dst: int | None) -> tuple[int, str]:
        if op not in OPCODE:
            raise EncodingError(f"op {op!r} is not searchable, so the interpreter cannot run it")
        if len(self.rows) >= self.max_len:
            raise EncodingError(f"program needs more than max_len={self.max_len} instruction rows")
        kind = "tensor" if op == "copy" else opreg.result_kind(opreg.get(op.replace("1m", "")), arg_kinds)
        wk = WKIND[opreg.join(*arg_kinds)] if arg_kinds else 0
        dst = self.temp() if dst is None else dst
        padded = tuple(arg_regs + [0] * (3 - len(arg_regs)))
        self.rows.append((OPCODE[op], padded, dst, wk))
        if op == "copy":
            kind = arg_kinds[0]
        self.reg_kind[dst] = kind
        return dst, kind

    def expr(self, e: Expr, dst: int | None = None) -> tuple[int, str]:
        """Emit rows computing ``e``; returns (register, kind). ``dst`` forces the last row's target."""
        value = const_value(e, self.hp)
        if value is not None:
            reg = self.const(value)
            return (reg, "const") if dst is None else self.emit("copy", [reg], ["const"], dst)
        if isinstance(e, Var):
            if e.name not in self.names:
                if e.name in INPUT_KINDS:
                    raise EncodingError(f"input {e.name!r} is not available in the batched interpreter")
                raise EncodingError(f"unknown name {e.name!r}")
            reg = self.names[e.name]
            kind = self.kinds.get(e.name, self.kind_of(reg))
            return (reg, kind) if dst is None else self.emit("copy", [reg], [kind], dst)
        assert isinstance(e, Call)
        if e.op == "interp" and (beta := const_value(e.args[2], self.hp)) is not None:
            (ra, ka), (rb, kb) = self.expr(e.args[0]), self.expr(e.args[1])
            return self.emit("interp1m", [ra, rb, self.const(1.0 - beta)], [ka, kb, "const"], dst)
        regs, kinds = zip(*(self.expr(a) for a in e.args)) if e.args else ((), ())
        return self.emit(e.op, list(regs), list(kinds), dst)

    def run(self) -> Encoded:
        if self.p.fallback is not None:
            raise EncodingError("programs with a fallback cannot be encoded (the interpreter runs one rule "
                                "on every leaf)")
        for s in self.p.states:
            if s.kind not in STATE_KIND_CODE:   # major/minor: the registers hold leaf-shaped values only
                raise EncodingError(f"state {s.name}: {s.kind} (matrix-shaped) state is not interpreted; "
                                    f"the program runs through to_optax")
        init_c, init_w = [], []
        for s in self.p.states:
            c, w = self.state_init(s)
            init_c.append(c)
            init_w.append(w)
        for a in self.p.body:
            self.assign(a)
        out, _ = self.expr(self.p.output)
        return self.finish(out, init_c, init_w)

    def state_init(self, s: StateDecl) -> tuple[float, float]:
        """``c0 + c1 * w`` for the inits the interpreter supports (constants of hyperparameters, ``w``)."""
        value = const_value(s.init, self.hp)
        if value is not None:
            return value, 0.0
        if s.init == Var("w"):
            return 0.0, 1.0
        raise EncodingError(f"state {s.name}: init {s.init} is neither constant nor w")

    def assign(self, a: Assign) -> None:
        if a.target in self.states:
            reg = self.states[a.target]
            self.expr(a.expr, dst=reg)
            self.reg_kind[reg] = self.kinds[a.target]   # a state keeps its declared kind
            return
        reg, kind = self.expr(a.expr)
        if reg in self.states.values():
            # A local naming a state's current value must not change when the state is reassigned.
            reg, kind = self.emit("copy", [reg], [kind], None)
        self.names[a.target] = reg
        self.kinds[a.target] = kind

    def finish(self, out: int, init_c: list[float], init_w: list[float]) -> Encoded:
        n_state, n_const = len(self.p.states), len(self.const_order)
        base_const, base_temp = N_INPUTS + n_state, N_INPUTS + n_state + n_const
        if base_temp + self.n_temps > self.n_registers:
            raise EncodingError(f"program needs {base_temp + self.n_temps} registers, n_registers="
                                f"{self.n_registers}")

        def resolve(r: int) -> int:
            if r < 0:
                return base_const + (-1 - r)
            if r >= 1_000_000:
                return base_temp + r - 1_000_001
            return r

        L, R = self.max_len, self.n_registers
        ops_, args = np.zeros(L, np.int32), np.zeros((L, 3), np.int32)
        dst, wkind = np.zeros(L, np.int32), np.zeros(L, np.int32)
        for i, (op, a, d, wk) in enumerate(self.rows):
            ops_[i], args[i], dst[i], wkind[i] = op, [resolve(x) for x in a], resolve(d), wk
        ic, iw, sk = np.zeros(R, np.float32), np.zeros(R, np.float32), np.zeros(R, np.int32)
        ic[N_INPUTS:base_const], iw[N_INPUTS:base_const] = init_c, init_w
        sk[N_INPUTS:base_const] = [STATE_KIND_CODE[s.kind] for s in self.p.states]
        ic[base_const:base_temp] = self.const_order
        return Encoded(ops_, args, dst, wkind, np.int32(len(self.rows)), ic, iw, sk, np.int32(n_state),
                       np.int32(n_const), np.int32(resolve(out)))


def encode(program: Program, max_len: int, n_registers: int) -> Encoded:
    """Encode ``program`` (searchable ops only) into fixed-shape arrays; raises :class:`EncodingError`."""
    if n_registers < N_INPUTS + 1:
        raise EncodingError(f"n_registers must be > {N_INPUTS}")
    return _Encoder(program, max_len, n_registers).run()


def decode(enc: Encoded) -> Program:
    """The Program an :class:`Encoded` runs (hyperparameters appear as constants; names canonical).

    Every temporary becomes a local, then the simplifier inlines single-use locals, drops dead code
    and renames canonically, so ``encode(decode(e))`` computes what ``e`` computes.
    """
    e = Encoded(*(np.asarray(f) for f in enc))
    n_state, n_const = int(e.n_state), int(e.n_const)
    base_const = N_INPUTS + n_state
    names: dict[int, Expr] = {i: Var(n) for i, n in enumerate(INPUTS)}
    states = []
    for i in range(n_state):
        r = N_INPUTS + i
        names[r] = Var(f"s{i}")
        init: Expr = Const(float(e.init_const[r]))
        if e.init_w[r] != 0:
            init = Var("w") if e.init_const[r] == 0 and e.init_w[r] == 1 else \
                Call("add", (init, Call("mul", (Const(float(e.init_w[r])), Var("w")))))
        states.append(StateDecl(f"s{i}", STATE_KIND_NAME[int(e.state_kind[r])], init))
    for r in range(base_const, base_const + n_const):
        names[r] = Const(float(e.init_const[r]))
    body = []
    for i in range(int(e.n_rows)):
        op = OPS[int(e.ops[i])]
        args = tuple(names.get(int(a), Const(0.0)) for a in e.args[i][:ARITY[op]])
        if op == "interp1m":
            q = args[2].value if isinstance(args[2], Const) else None
            op, args = ("interp", args[:2] + (Const(1.0 - q),)) if q is not None else \
                ("interp", (args[1], args[0], args[2]))      # (1-q)*a + q*b == interp(b, a, q)
        rhs = args[0] if op == "copy" else Call(op, args)
        d = int(e.dst[i])
        target = f"s{d - N_INPUTS}" if N_INPUTS <= d < base_const else f"r{i}"
        body.append(Assign(target, rhs))
        if target.startswith("r"):
            names[d] = Var(target)
    out = names.get(int(e.output), Const(0.0))
    return simplify(Program("decoded", (), tuple(states), tuple(body), out))
