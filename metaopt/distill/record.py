"""Imitation data: record a teacher optimizer's inputs and updates along its own training trajectories.

The teacher (a learned optimizer, ``lopt:DIR``, or any spec or ``optax.GradientTransformation``) trains each
task from each seed exactly as :func:`metaopt.train` would (same instance, initialization and minibatches;
``tests/test_distill.py`` checks the losses agree). At every step the sampled elements of each tensor are kept:
the gradient ``g``, the parameters ``w`` the update was computed at, the minibatch loss, and the teacher's
update direction ``u = -Δw / lr`` (``lr``: the learning rate, or the learned optimizer's multiplier). Every
``every``-th step also keeps EMA features a DSL program could compute itself, with the DSL's own ops::

    m_β ← interp(m_β, g, β)            v_β ← interp(v_β, square(g), β)         (from m = v = 0)

for β in ``decays`` — raw, not bias corrected, exactly the state ``m = interp(m, g, b1)`` of ``adam.opt``.

Which elements: per tensor a fixed, seeded sample (:func:`sample_leaf`) that stays the same for the whole
trajectory, since the replay (:mod:`metaopt.distill.replay`) runs a program's state along it. Matrices keep a
random sub-block of rows x columns, so row/column statistics and the leaf's ``ndim`` still make sense; tensors
no larger than ``per_tensor`` are kept whole (then the replay is exact for every op, reductions included).
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import zlib
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

import tasks as task_registry
from metaopt.compile import optax_factory
from metaopt.distill.store import LeafSample, Recording, Trajectory, save
from metaopt.dsl import ops
from metaopt.dsl.program import Program
from metaopt.leaf_io import io_leaves, io_prefixes, leaf_paths
from metaopt.train import resolve_optimizer

DECAYS = (0.5, 0.9, 0.99, 0.999)


def feature_names(decays: Sequence[float]) -> tuple[str, ...]:
    return tuple(f"m{b:g}" for b in decays) + tuple(f"v{b:g}" for b in decays)


def sample_leaf(shape: tuple[int, ...], n: int, rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, ...]]:
    """(sorted flat indices, sample shape) of about ``n`` elements of a tensor of ``shape``.

    A tensor of at most ``n`` elements is kept whole. A matrix (``ndim >= 2``, viewed as ``[rows, last dim]``
    like the DSL's row/column ops) keeps ``r`` random rows x ``c`` random columns, ``r*c <= n``, shape
    ``(1, ..., 1, r, c)``; a vector keeps ``n`` random elements.
    """
    size = int(np.prod(shape, dtype=np.int64))
    if size <= n:
        return np.arange(size, dtype=np.int32), tuple(shape)
    if len(shape) < 2:
        return np.sort(rng.choice(size, n, replace=False)).astype(np.int32), (n,)
    rows, cols = size // shape[-1], shape[-1]
    r = min(rows, math.isqrt(n - 1) + 1)           # about sqrt(n) of each, more rows if the matrix is narrow
    c = min(cols, max(1, n // r))
    r = min(rows, max(1, n // c))
    ri = np.sort(rng.choice(rows, r, replace=False))
    ci = np.sort(rng.choice(cols, c, replace=False))
    return (ri[:, None] * cols + ci[None, :]).ravel().astype(np.int32), (1,) * (len(shape) - 2) + (r, c)


def _layout(task, per_tensor: int, seed: int) -> tuple[tuple[LeafSample, ...], np.ndarray, np.ndarray]:
    """The leaves in sorted-path order (the order a ``{path: array}`` dict flattens in), their flat indices
    and, per leaf of that order, its position among ``jax.tree.leaves(params)``."""
    shapes = jax.eval_shape(task.init, jax.random.PRNGKey(0))
    paths = leaf_paths(shapes)
    if len(set(paths)) != len(paths):
        raise ValueError(f"{task.name}: parameter key paths are not unique: {paths}")
    ios = io_leaves(shapes, io_prefixes(task.io_paths))
    order = np.argsort(np.asarray(paths, dtype=object), kind="stable")
    leaves, idx, offset = [], [], 0
    shape_list = [tuple(x.shape) for x in jax.tree_util.tree_leaves(shapes)]
    for j in order:
        rng = np.random.default_rng([seed, zlib.crc32(task.name.encode()), zlib.crc32(paths[j].encode())])
        flat, sample_shape = sample_leaf(shape_list[j], per_tensor, rng)
        leaves.append(LeafSample(paths[j], shape_list[j], sample_shape, offset, bool(ios[j])))
        idx.append(flat)
        offset += flat.size
    return tuple(leaves), np.concatenate(idx).astype(np.int32), order.astype(np.int32)


def _step_keys(data_key: jax.Array, steps: int, eval_every: int) -> jax.Array:
    """The minibatch keys of ``metaopt.train(..., steps, eval_every)``: per chunk of ``eval_every`` steps."""
    chunks = jax.random.split(data_key, steps // eval_every)
    return jax.vmap(lambda k: jax.random.split(k, eval_every))(chunks).reshape(steps, *chunks.shape[1:])


def _run(task, opt: optax.GradientTransformationExtraArgs, key: jax.Array, steps: int, eval_every: int,
         lr: float, leaves: tuple[LeafSample, ...], idx: np.ndarray, order: np.ndarray):
    """(g, w, u [T, N], loss [T]) at the sampled elements along the teacher's run from ``key``."""
    sizes = [leaf.size for leaf in leaves]
    bounds = np.cumsum([0] + sizes)

    def gather(tree):
        xs = jax.tree_util.tree_leaves(tree)
        return jnp.concatenate([jnp.ravel(xs[j])[idx[bounds[i]:bounds[i + 1]]] for i, j in enumerate(order)])

    @jax.jit
    def run(key):
        inst = task.for_run(key)
        init_key, data_key, _ = jax.random.split(key, 3)
        params = inst.init(init_key)
        value_and_grad = jax.value_and_grad(inst.loss)

        def step(carry, step_key):
            params, state = carry
            loss, grads = value_and_grad(params, inst.batch(step_key, "train"))
            updates, state = opt.update(grads, state, params, value=loss)
            out = (gather(grads), gather(params), -gather(updates) / lr, loss)
            return (optax.apply_updates(params, updates), state), out

        _, out = jax.lax.scan(step, (params, opt.init(params)), _step_keys(data_key, steps, eval_every))
        return out

    return jax.device_get(run(key))


@functools.partial(jax.jit, static_argnames="decays")
def _features(g: jax.Array, decays: tuple[float, ...]) -> jax.Array:
    """[T, 2D, N]: m_β and v_β (module docstring) after every step."""
    interp, square = ops.get("interp").fn, ops.get("square").fn

    def step(carry, gt):
        # β stays a Python float, as in a compiled program: (1 - β) is then rounded once from float64,
        # where float32 arithmetic on β = 0.999 would be off by ~1e-5 relative
        ms = [interp(m, gt, b) for m, b in zip(carry[0], decays)]
        vs = [interp(v, square(gt), b) for v, b in zip(carry[1], decays)]
        return (ms, vs), jnp.stack(ms + vs)

    zeros = [jnp.zeros(g.shape[1], jnp.float32) for _ in decays]
    return jax.lax.scan(step, (zeros, list(zeros)), g)[1]


def _teacher(teacher, learning_rate: float | None, name: str | None):
    """(factory or transform, learning rate, header description) of a teacher argument."""
    if isinstance(teacher, optax.GradientTransformation):
        if learning_rate is None:
            raise ValueError("record(): a GradientTransformation teacher needs learning_rate= (its updates are "
                             "divided by it to give the direction u)")
        return teacher, float(learning_rate), {"spec": name or "custom", "kind": "transform", "digest": None}
    if isinstance(teacher, Program):
        digest = hashlib.sha256(str(teacher).encode()).hexdigest()[:16]
        return optax_factory(teacher), float(1.0 if learning_rate is None else learning_rate), \
            {"spec": name or teacher.name, "kind": "program", "digest": digest}
    if not isinstance(teacher, str):
        raise TypeError(f"record(): teacher must be an optimizer spec string, a learned-optimizer checkpoint "
                        f"directory, a Program or an optax.GradientTransformation, got {type(teacher).__name__}")
    from metaopt import specs
    from metaopt.evaluate.store import optimizer_digest
    if os.path.isfile(os.path.join(teacher, "lopt.json")):
        teacher = "lopt:" + teacher                  # a bare checkpoint directory
    spec = specs.resolve(teacher)
    lr = float(spec.default_lr if learning_rate is None else learning_rate)
    return spec.factory, lr, {"spec": teacher, "kind": spec.kind, "digest": optimizer_digest(teacher)}


def _header(info: dict, lr: float, task_names: Sequence[str], horizons: Sequence[int], seed: int, n_seeds: int,
            every: int, per_tensor: int, eval_every: int, decays: tuple[float, ...], feature_dtype: str) -> dict:
    return {"teacher": info, "learning_rate": lr, "tasks": list(task_names), "seeds": list(range(seed, seed + n_seeds)),
            "steps": list(horizons), "every": every, "per_tensor": per_tensor, "eval_every": eval_every,
            "features": list(feature_names(decays)), "feature_decays": list(decays), "feature_dtype": feature_dtype,
            "u": "-(applied update) / learning_rate at the recorded steps",
            "versions": {"jax": jax.__version__, "optax": optax.__version__}}


def _checked(task_names: Sequence[str], steps: int | None, n_seeds: int, per_tensor: int, every: int,
             decays: Sequence[float], feature_dtype: str) -> tuple[tuple[float, ...], list[int]]:
    """The arguments of :func:`record` checked: (decays, each task's horizon)."""
    if per_tensor < 1 or every < 1 or n_seeds < 1:
        raise ValueError(f"record(): per_tensor, every and n_seeds must be >= 1, got {per_tensor}, {every}, "
                         f"{n_seeds}")
    if feature_dtype not in ("float32", "float16"):
        raise ValueError(f"record(): feature_dtype must be 'float32' or 'float16', got {feature_dtype!r}")
    if not task_names:
        raise ValueError("record(): no tasks given")
    decays = tuple(float(b) for b in decays)
    if not all(0 < b < 1 for b in decays):
        raise ValueError(f"record(): decays must lie in (0, 1), got {decays}")
    horizons = [int(task_registry.get(name).steps if steps is None else steps) for name in task_names]
    if min(horizons) < 1:
        raise ValueError(f"record(): steps must be >= 1, got {min(horizons)}")
    return decays, horizons


def record(teacher, task_names: Sequence[str], steps: int | None, seed: int, out_path: str | os.PathLike | None,
           *, n_seeds: int = 1, per_tensor: int = 64, every: int = 10, decays: Sequence[float] = DECAYS,
           learning_rate: float | None = None, feature_dtype: str = "float32", eval_every: int = 50,
           teacher_name: str | None = None, progress: Callable[[str, int], None] | None = None) -> Recording:
    """Record ``teacher`` on ``task_names`` (deterministic given the arguments; written to ``out_path``).

    ``teacher``: ``"lopt:DIR"`` or a checkpoint directory (a learned optimizer, run at multiplier
    ``learning_rate``, default 1), any :func:`metaopt.specs.resolve` spec (``"adam"``, ``"optax:adam(b1=0.8)"``;
    default learning rate: the spec's grid centre), a DSL ``Program`` (default learning rate 1), or an
    ``optax.GradientTransformation`` (``learning_rate`` required: its updates are divided by it). ``steps``: per trajectory (``None``: each task's own horizon).
    Seeds ``seed, seed + 1, ..., seed + n_seeds - 1`` give the run keys ``PRNGKey(s)``. ``per_tensor``: elements
    kept per tensor; ``every``: features and updates are kept at steps ``1, 1 + every, ...``; ``eval_every``:
    the chunking of :func:`metaopt.train` whose minibatch keys are reproduced. ``progress(task, seed)`` is
    called after each trajectory.
    """
    decays, horizons = _checked(task_names, steps, n_seeds, per_tensor, every, decays, feature_dtype)
    opt_like, lr, info = _teacher(teacher, learning_rate, teacher_name)
    trajs = []
    for name, n_steps in zip(task_names, horizons):
        task = task_registry.get(name)
        chunk = eval_every if n_steps % eval_every == 0 else n_steps
        opt = resolve_optimizer(opt_like, lr, task.io_paths)
        leaves, idx, order = _layout(task, per_tensor, seed)
        rec_pos = np.arange(0, n_steps, every)
        for s in range(seed, seed + n_seeds):
            g, w, u, loss = _run(task, opt, jax.random.PRNGKey(s), n_steps, chunk, lr, leaves, idx, order)
            feats = np.asarray(_features(jnp.asarray(g), decays))[rec_pos]
            trajs.append(Trajectory(name, s, leaves, np.asarray(g, np.float32), np.asarray(w, np.float32),
                                    np.asarray(loss, np.float32), (rec_pos + 1).astype(np.int32),
                                    np.asarray(u, np.float32)[rec_pos], feats.astype(feature_dtype), idx))
            if progress is not None:
                progress(name, s)
    header = _header(info, lr, task_names, horizons, seed, n_seeds, every, per_tensor, eval_every, decays,
                     feature_dtype)
    rec = Recording(header, tuple(trajs))
    if out_path is not None:
        save(rec, out_path)
    return rec


def record_or_reuse(out_path: str | os.PathLike, teacher, task_names: Sequence[str], steps: int | None, seed: int,
                    **kwargs) -> tuple[Recording, bool]:
    """(the recording, reused): the one at ``out_path`` when its header is the one :func:`record` would write
    with these arguments (teacher spec and checkpoint digest, tasks, seeds, horizons, sampling, features,
    jax/optax versions), else a new one recorded there (``kwargs``: those of :func:`record`)."""
    from metaopt.distill.store import load
    names = ("n_seeds", "per_tensor", "every", "decays", "feature_dtype")
    decays, horizons = _checked(task_names, steps, *(kwargs.get(k, d) for k, d in zip(
        names, (1, 64, 10, DECAYS, "float32"))))
    if os.path.exists(out_path):
        try:
            old = load(out_path)
        except ValueError:
            old = None          # not a recording (a truncated file cannot be: the write is atomic)
        if old is not None:
            _, lr, info = _teacher(teacher, kwargs.get("learning_rate"), kwargs.get("teacher_name"))
            want = _header(info, lr, task_names, horizons, seed, kwargs.get("n_seeds", 1), kwargs.get("every", 10),
                           kwargs.get("per_tensor", 64), kwargs.get("eval_every", 50), decays,
                           kwargs.get("feature_dtype", "float32"))
            if {k: v for k, v in old.header.items() if k != "format"} == json.loads(json.dumps(want)):
                return old, True
    return record(teacher, task_names, steps, seed, out_path, **kwargs), False
