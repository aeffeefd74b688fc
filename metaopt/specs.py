"""Optimizer specs: the strings users pass to ``metaopt eval`` (and Python callers), resolved to factories.

Accepted forms (``resolve`` raises :class:`SpecError` listing them, with close library names)::

    adamw                       a library program      -> metaopt.to_optax(metaopt.library.get(name), ...)
    path/to/rule.opt            a program file         -> metaopt.to_optax(metaopt.parse(text), ...)
    optax:adamw                 an optax built-in      -> getattr(optax, name)(learning_rate=lr, ...)
    lopt:path/to/checkpoint     a learned optimizer    -> metaopt.learned.load_factory(path): lr is a
                                                          multiplier, 1.0 = the meta-trained step

Any form may end in keyword arguments, e.g. ``adamw(b1=0.95, wd=0.1)`` or ``optax:sgd(momentum=0.9)``;
the special keyword ``lr`` moves the centre of the tuning grid instead of being passed on, and ``tune=False``
runs at that rate with no grid at all (``adam(lr=1e-3, tune=False)``; ``lopt:PATH(tune=False)`` is the
learned optimizer's own step, multiplier 1.0): the "no tuning" rows of a table.

:func:`check` validates a spec the way :func:`resolve` does, without loading learned-optimizer
checkpoints: configs call it at load time, so a misspelled name fails before any work starts.
"""
from __future__ import annotations

import ast
import dataclasses
import difflib
import os
import re
from typing import Any, Callable

import optax

from metaopt import library
from metaopt.compile import to_optax
from metaopt.dsl import parse

Factory = Callable[[Any], optax.GradientTransformation]

ACCEPTED = ("a library name (e.g. adamw; see `metaopt list`)",
            "a program file (path/to/rule.opt)",
            "an optax built-in (optax:NAME, e.g. optax:adamw)",
            "a learned optimizer (lopt:PATH)",
            "any of these followed by keyword arguments, e.g. adamw(b1=0.95, wd=0.1)")

# Grid centres, by the optimizer's family. The grid is wide (>= 7 points, 3x apart, widened at an edge),
# so these only need to be within a factor of ~30 of the best rate; they follow the papers' / optax's
# customary defaults. Parameter-free rules (dog, dadapt, polyak) are centred on 1.0.
DEFAULT_LR: dict[str, float] = {
    "sgd": 0.1, "momentum": 0.03, "nesterov": 0.03, "lars": 0.1, "signum": 1e-3, "sinkgd": 0.01,
    "adagrad": 0.01, "rmsprop": 1e-3, "adam": 1e-3, "adamw": 1e-3, "adamax": 2e-3, "amsgrad": 1e-3,
    "nadam": 1e-3, "nadamw": 1e-3, "radam": 1e-3, "adabelief": 1e-3, "adan": 1e-3, "lion": 1e-4,
    "adafactor": 1e-2, "came": 1e-3, "lamb": 1e-3, "muon": 0.02, "normuon": 0.02, "adamuon": 1e-3,
    "dog": 1.0, "dadapt_adamw": 1.0, "prodigy": 1.0, "polyak_sgd": 1.0, "momo": 1.0, "adopt": 1e-3,
    "ademamix": 1e-3, "mars": 1e-3, "adam_mini": 1e-3, "cautious_adamw": 1e-3, "cautious_lion": 1e-4,
    "grams": 1e-3, "diffgrad": 1e-3, "adamp": 1e-3, "adabound": 1e-3, "fromage": 0.01, "noisy_sgd": 0.1,
}
FALLBACK_LR = 1e-3


class SpecError(ValueError):
    """An optimizer spec that cannot be resolved; the message lists what is accepted."""


@dataclasses.dataclass(frozen=True, eq=False)
class OptimizerSpec:
    """A resolved optimizer: ``factory(lr)`` builds the transformation the evaluation trains with.

    Compared and hashed by identity (like :class:`tasks.Task`) so ``factory`` can be a jit static arg.
    """

    name: str                        # the display name: the spec string as the user wrote it
    factory: Factory
    default_lr: float                # centre of the learning-rate grid
    kind: str = "library"            # library | file | optax | lopt | custom
    hyperparams: tuple[tuple[str, Any], ...] = ()
    tune: bool = True                # False: train at default_lr only, no learning-rate grid

    def __repr__(self) -> str:
        return f"OptimizerSpec({self.name!r}, kind={self.kind}, default_lr={self.default_lr:g})"


def default_lr_for(name: str) -> float:
    """The grid centre for an optimizer called ``name`` (family lookup by the longest known prefix)."""
    base = name.lower().rsplit("/", 1)[-1].removesuffix(".opt")
    if base in DEFAULT_LR:
        return DEFAULT_LR[base]
    matches = [k for k in DEFAULT_LR if base.startswith(k) or base.endswith(k)]
    return DEFAULT_LR[max(matches, key=len)] if matches else FALLBACK_LR


_CALL = re.compile(r"^(?P<head>[^()]+?)\s*\((?P<args>.*)\)\s*$", re.S)


def split_kwargs(spec: str) -> tuple[str, dict[str, Any]]:
    """``'adamw(b1=0.95, wd=0.1)'`` -> ``('adamw', {'b1': 0.95, 'wd': 0.1})``; literals only."""
    m = _CALL.match(spec.strip())
    if not m:
        return spec.strip(), {}
    try:
        call = ast.parse(f"f({m.group('args')})", mode="eval").body
        kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
    except (SyntaxError, ValueError) as e:
        raise SpecError(f"{spec!r}: cannot read the keyword arguments ({e})") from None
    if call.args or None in kwargs:
        raise SpecError(f"{spec!r}: hyperparameters must be given as keywords (name=value)")
    return m.group("head").strip(), kwargs


def resolve(spec: str | OptimizerSpec) -> OptimizerSpec:
    """Resolve a spec string (see the module docstring) to an :class:`OptimizerSpec`."""
    if isinstance(spec, OptimizerSpec):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise SpecError(_unknown(repr(spec)))
    head, kwargs = split_kwargs(spec)
    lr_centre = kwargs.pop("lr", None)
    tune = kwargs.pop("tune", True)
    if not isinstance(tune, bool):
        raise SpecError(f"{spec!r}: tune must be True or False, got {tune!r}")
    if head.startswith("optax:"):
        out = _optax_spec(spec, head[len("optax:"):], kwargs)
    elif head.startswith("lopt:"):
        out = _lopt_spec(spec, head[len("lopt:"):], kwargs)
    elif head.endswith(".opt") or os.sep in head or os.path.isfile(head):
        out = _file_spec(spec, head, kwargs)
    else:
        out = _library_spec(spec, head, kwargs)
    if lr_centre is not None:
        out = dataclasses.replace(out, default_lr=float(lr_centre))
    return out if tune else dataclasses.replace(out, tune=False)


def _optax_spec(spec: str, name: str, kwargs: dict) -> OptimizerSpec:
    fn = getattr(optax, name, None)
    if fn is None and name.startswith("contrib."):
        fn = getattr(optax.contrib, name[len("contrib."):], None)
    if not callable(fn) or isinstance(fn, type):
        close = difflib.get_close_matches(name, [n for n in dir(optax) if not n.startswith("_")], 5)
        raise SpecError(f"optax has no optimizer {name!r}" + (f"; close: {', '.join(close)}" if close else ""))

    def factory(lr, _fn=fn, _kw=tuple(kwargs.items())):
        return _fn(learning_rate=lr, **dict(_kw))

    return OptimizerSpec(spec, factory, default_lr_for(name.rsplit(".", 1)[-1]), "optax",
                         tuple(sorted(kwargs.items())))


def _program_factory(program: Any, kwargs: dict) -> Factory:
    try:   # fail now (an unknown hyperparameter) rather than inside a worker
        to_optax(program, learning_rate=1e-3, **kwargs)
    except TypeError as e:
        raise SpecError(str(e)) from None   # the message names the program and its hyperparameters

    # io_paths: the task's input/output layers (Task.io_paths), which metaopt.train passes to a factory
    # that takes them; a fallback `when io == 1` (muon) routes those leaves
    def factory(lr, io_paths=(), _p=program, _kw=tuple(kwargs.items())):
        return to_optax(_p, learning_rate=lr, io_paths=io_paths, **dict(_kw))

    return factory


def _library_spec(spec: str, name: str, kwargs: dict) -> OptimizerSpec:
    known = list(library.names())
    if name not in known:
        raise SpecError(_unknown(spec, close=difflib.get_close_matches(name, known, 5, cutoff=0.5)))
    program = library.get(name)
    centre = getattr(program, "default_lr", None) or default_lr_for(name)
    return OptimizerSpec(spec, _program_factory(program, kwargs), float(centre), "library",
                         tuple(sorted(kwargs.items())))


def _file_spec(spec: str, path: str, kwargs: dict) -> OptimizerSpec:
    if not os.path.isfile(path):
        raise SpecError(_unknown(spec, note=f"no such program file: {path}"))
    with open(path) as fh:
        program = parse(fh.read(), filename=path)
    name = getattr(program, "name", os.path.basename(path))
    return OptimizerSpec(spec, _program_factory(program, kwargs), default_lr_for(name), "file",
                         tuple(sorted(kwargs.items())))


def _lopt_spec(spec: str, path: str, kwargs: dict) -> OptimizerSpec:
    from metaopt.learned import load_factory   # flax and the checkpoint code: only lopt specs need them

    _check_lopt(spec, path)
    factory = load_factory(path, **kwargs)
    # The rate is a multiplier of the meta-trained step, so the grid is centred on 1.0.
    return OptimizerSpec(spec, factory, 1.0, "lopt", tuple(sorted(kwargs.items())))


def _check_lopt(spec: str, path: str) -> None:
    if not os.path.exists(path):
        raise SpecError(f"{spec!r}: no such learned-optimizer checkpoint: {path}")


def check(spec: str | OptimizerSpec) -> None:
    """Raise :class:`SpecError` (or the program file's ``DSLError``) where :func:`resolve` would; a learned
    optimizer's checkpoint is only checked to exist (loading it is the slow part of resolving)."""
    if isinstance(spec, str):
        head, _ = split_kwargs(spec)
        if head.startswith("lopt:"):
            _check_lopt(spec, head[len("lopt:"):])
            return
    resolve(spec)


def _unknown(spec: str, close: list[str] | None = None, note: str | None = None) -> str:
    msg = f"unknown optimizer spec {spec}" if spec.startswith("'") else f"unknown optimizer spec {spec!r}"
    if note:
        msg += f" ({note})"
    if close:
        msg += f"; did you mean: {', '.join(close)}?"
    return msg + ". Accepted: " + "; ".join(ACCEPTED) + "."
