"""found1: exported by metaopt from this DSL program (needs only jax and optax).

    # Found by metaopt search (regularized evolution), rank 1, fingerprint f90b88a0d5eae1e2.
    # Search fitness 0.6824 (1 / geometric mean over the search tasks of the speedup over tuned AdamW, each clipped to [1/4, 4]; lower is better); funnel fitness 0.6288.
    optimizer found1(b1 = 0.8975, b2 = 0.9988, eps = 1e-8, wd = 0.01316)
    state s0 = 0
    state s1 = 0
    s0 = interp(s0, g, b1)
    s1 = interp(s1, square(g), b2)
    return (b1 + b2 + w) * wd + s0 / (1 - b1 ^ t) / (eps + sqrt(s1 / (1 - b2 ^ t)))
"""
import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

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


def abs_sq(x):
    # |x|^2, real even for complex x (optax's numerics.abs_sq); a real x takes exactly jnp.square's path.
    return jnp.real(jnp.conj(x) * x) if jnp.iscomplexobj(x) else jnp.square(x)


def io_prefixes(io_paths):
    """``io_paths`` checked and normalised to a tuple of ``/``-joined key paths (outer slashes dropped)."""
    if isinstance(io_paths, str):
        raise TypeError(f"io_paths takes a sequence of key-path prefixes such as ('Embed_0', 'head'), "
                        f"not the string {io_paths!r}")
    out = tuple(io_paths)
    for q in out:
        if not isinstance(q, str) or not q.strip("/"):
            raise TypeError(f"io_paths entries must be non-empty '/'-joined key paths (str), got {q!r}")
    return tuple(q.strip("/") for q in out)


def leaf_paths(tree):
    """The ``/``-joined key path of every leaf of ``tree``, in ``jax.tree.leaves`` order."""
    paths = []
    for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]:
        # DictKey (dicts, flax params) and FlattenedIndexKey carry .key, GetAttrKey (NamedTuples) .name,
        # SequenceKey (lists, tuples) .idx
        keys = [getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))) for k in path]
        paths.append("/".join(str(k) for k in keys))
    return paths


def io_leaves(tree, io_paths):
    """Per leaf of ``tree`` (``jax.tree.leaves`` order): whether it lies under one of ``io_paths`` (checked by
    ``io_prefixes``). A path that matches no leaf raises ``ValueError``: a misspelled layer name would
    otherwise silently leave that layer to the main rule."""
    if not io_paths:
        return [False] * len(jax.tree_util.tree_leaves(tree))
    paths = leaf_paths(tree)
    under = lambda p, q: p == q or p.startswith(q + "/")
    for q in io_paths:
        if not any(under(p, q) for p in paths):
            shown = ", ".join(paths[:12]) + (", ..." if len(paths) > 12 else "")
            raise ValueError(f"io path {q!r} matches no parameter (the parameters: {shown or 'none'})")
    return [any(under(p, q) for q in io_paths) for p in paths]


class Found1State(NamedTuple):
    """State of found1: step count, one field per DSL state (global: one value), the fallback's state."""
    count: Any
    s0: Any
    s1: Any
    fallback: Any = None


def _found1_init(ws, ios, treedef, b1=0.8975, b2=0.9988, eps=1e-8, wd=0.01316):
    idx = [i for i, x in enumerate(ws) if x is not None]
    _s0 = [optax.MaskedNode()] * len(ws)
    for i in idx:
        w = ws[i]
        _s0[i] = _as(0.0, _storage(w, 'tensor'), w.dtype)
    _s1 = [optax.MaskedNode()] * len(ws)
    for i in idx:
        w = ws[i]
        _s1[i] = _as(0.0, _storage(w, 'tensor'), w.dtype)
    fb = None
    return Found1State(jnp.zeros([], jnp.int32), treedef.unflatten(_s0), treedef.unflatten(_s1), fallback=fb)


def _found1_step(gs, ws, ios, state, treedef, b1=0.8975, b2=0.9988, eps=1e-8, wd=0.01316, *, t, lr, loss, obj):
    idx = [i for i, x in enumerate(gs) if x is not None]
    us = [None] * len(gs)
    _s0 = treedef.flatten_up_to(state.s0)
    _s1 = treedef.flatten_up_to(state.s1)
    for i in idx:
        s0, g = _s0[i], gs[i]
        s0 = b1 * s0 + (1 - b1) * g
        s1 = _s1[i]
        s1 = b2 * s1 + (1 - b2) * abs_sq(g)
        w = ws[i]
        us[i] = jnp.broadcast_to((b1 + b2 + w) * wd + s0 / (1.0 - b1 ** t) / (eps + jnp.sqrt(s1 / (1.0 - b2 ** t))), gs[i].shape)
        _s0[i] = _as(s0, _s0[i].shape, _s0[i].dtype)
        _s1[i] = _as(s1, _s1[i].shape, _s1[i].dtype)
    fb = None
    return us, Found1State(optax.safe_increment(state.count), treedef.unflatten(_s0), treedef.unflatten(_s1), fallback=fb)


def found1(learning_rate, b1=0.8975, b2=0.9988, eps=1e-8, wd=0.01316, io_paths=()) -> optax.GradientTransformationExtraArgs:
    """found1: update w <- w - lr_t * u with u from the DSL program in this module's docstring.

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
        return _found1_init(ws, io_leaves(params, io_paths), treedef, b1=b1, b2=b2, eps=eps, wd=wd)

    def update_fn(updates, state, params=None, value=None, obj_fn=None, **extra):
        gs, treedef = jax.tree.flatten(updates)
        ios = io_leaves(updates, io_paths)
        ws = treedef.flatten_up_to(params) if params is not None else [None] * len(gs)
        lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
        t = optax.safe_increment(state.count).astype(jnp.float32)
        loss = None if value is None else jnp.asarray(value, jnp.float32)
        obj = None if obj_fn is None else (obj_fn, treedef, ws)
        us, state = _found1_step(gs, ws, ios, state, treedef, b1=b1, b2=b2, eps=eps, wd=wd, t=t, lr=lr, loss=loss,
                                    obj=obj)
        if callable(learning_rate):
            out = [(jnp.asarray(-lr, g.dtype) * u).astype(g.dtype) for g, u in zip(gs, us)]
        else:
            out = [(-lr * u).astype(g.dtype) for g, u in zip(gs, us)]
        return treedef.unflatten(out), state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
