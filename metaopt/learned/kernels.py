"""The arithmetic of metaopt's learned optimizers, as pure functions over arrays.

This module imports only ``jax``, ``jax.numpy``, ``numpy`` and ``optax``: ``export_source`` copies it
verbatim into a standalone module, so the exported optimizer is the same code the package runs
(not a re-implementation that could drift). Weights are plain dicts of arrays.

Per-parameter features (Metz et al. 2022, "Practical tradeoffs between memory, compute, and
performance in learned optimizers"; learned_optimization's ``small_fc_lopt``), for each tensor::

    m_i ← β_i m_i + (1 − β_i) g            (momenta, β_i ∈ momentum_decays)
    v   ← β_v v + (1 − β_v) g²             (second moment)
    f   = [g, w, m_1..m_k, √v, g/√(v+ε), m_1/√(v+ε) .. m_k/√(v+ε)]

With ``factored`` (Adafactor's factored second moment, Shazeer & Stern 2018, as a cheap feature of
Metz et al. 2022), every tensor of rank ≥ 2 also keeps row and column EMAs of g² over its last two axes,
r ← β_v r + (1 − β_v) mean_j g²,  c ← β_v c + (1 − β_v) mean_i g²  (O(n + m) memory for an n × m
matrix), whose outer product v̂ = r cᵀ / mean(r) is the rank-1 estimate of v, and the features gain::

    [g/√(v̂+ε), 1/√(r+ε), 1/√(c+ε), m_1/√(v̂+ε) .. m_k/√(v̂+ε)]      (broadcast to the tensor's shape)

For tensors of rank < 2 there is nothing to factor: v̂ = v and both row and column features are 1/√(v+ε).

Each feature is normalized over its tensor by its second moment, f̂ = f / √(mean(f²) + ε). The
normalization is *folded into the first layer's weights* (W₁ ← diag(1/√(mean f²)) W₁), and the
per-tensor scalar inputs (time features tanh(t/x), and for the hypernetwork its outputs) are folded
into the first layer's bias, so the only per-parameter work is one [P, F] × [F, H] product and the
output layer. The update is (Metz et al. 2022)::

    u = −lr_mult · step_mult · d · exp(exp_mult · s)        (d, s) = MLP(f̂)
"""
from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

EPS = 1e-8


class MomentState(NamedTuple):
    """Accumulators per parameter tensor: momenta[i] mirrors params, v mirrors params."""
    t: jax.Array                 # int32 scalar, steps taken so far
    momenta: tuple               # tuple (one per decay) of param-shaped pytrees
    v: Any                       # param-shaped pytree
    # per leaf (flattened order): (row, col) EMAs of g² for rank >= 2, () otherwise; () for the whole
    # state when the rule has no factored features (so older rules' states are unchanged)
    factored: tuple = ()


def time_features(t: jax.Array, scales: Sequence[float]) -> jax.Array:
    """tanh(t / x) for each x: a bank of saturating clocks telling the rule how far training is."""
    t = jnp.asarray(t, jnp.float32)
    return jnp.tanh(t / jnp.asarray(scales, jnp.float32))


def init_moments(params: Any, n_momenta: int, factored: bool = False) -> MomentState:
    zeros = lambda: jax.tree_util.tree_map(jnp.zeros_like, params)
    fac = tuple((jnp.zeros(x.shape[:-1], x.dtype), jnp.zeros(x.shape[:-2] + x.shape[-1:], x.dtype))
                if x.ndim >= 2 else () for x in jax.tree_util.tree_leaves(params)) if factored else ()
    return MomentState(jnp.zeros([], jnp.int32), tuple(zeros() for _ in range(n_momenta)), zeros(), fac)


def update_moments(grads: Any, state: MomentState, momentum_decays: Sequence[float],
                   rms_decay: float) -> MomentState:
    momenta = tuple(jax.tree_util.tree_map(lambda m, g, b=b: b * m + (1.0 - b) * g, ms, grads)
                    for b, ms in zip(momentum_decays, state.momenta))
    v = jax.tree_util.tree_map(lambda v, g: rms_decay * v + (1.0 - rms_decay) * g * g, state.v, grads)
    fac = tuple(() if not f else
                (rms_decay * f[0] + (1.0 - rms_decay) * jnp.mean(g * g, axis=-1),
                 rms_decay * f[1] + (1.0 - rms_decay) * jnp.mean(g * g, axis=-2))
                for f, g in zip(state.factored, jax.tree_util.tree_leaves(grads))) if state.factored else ()
    return MomentState(state.t + 1, momenta, v, fac)


def num_features(n_momenta: int, factored: bool = False) -> int:
    return 4 + 2 * n_momenta + (3 + n_momenta if factored else 0)


def factored_features(g: jax.Array, momenta: Sequence[jax.Array], v: jax.Array, rc: tuple) -> list:
    """The factored features of one tensor (see the module docstring); ``rc`` is its (row, col) or ()."""
    if rc:
        r, c = rc
        return _factored(g, momenta, _row_scale(r)[..., :, None] * c[..., None, :],
                         jax.lax.rsqrt(r + EPS)[..., :, None], jax.lax.rsqrt(c + EPS)[..., None, :])
    row = jax.lax.rsqrt(v + EPS)
    return _factored(g, momenta, v, row, row)


def _row_scale(r: jax.Array) -> jax.Array:
    # v̂ = (r / mean r) cᵀ: the scalar division is done on the O(n) row vector, not per element;
    # the 1e-30 keeps v̂ = 0 (not 0/0) before any nonzero gradient was seen
    return r / (jnp.mean(r, axis=-1, keepdims=True) + 1e-30)


def _factored(g, momenta, v_hat, row, col) -> list:
    rs = jax.lax.rsqrt(v_hat + EPS)
    return [g * rs, jnp.broadcast_to(row, g.shape), jnp.broadcast_to(col, g.shape), *[m * rs for m in momenta]]


def leaf_features(g: jax.Array, w: jax.Array, momenta: Sequence[jax.Array], v: jax.Array,
                  rc: tuple | None = None) -> list:
    """All per-parameter features of one tensor in the first layer's order: :func:`tensor_features`,
    then with ``rc`` not None (a factored rule; ``rc`` is the leaf's (row, col) or ()) :func:`factored_features`."""
    feats = tensor_features(g, w, momenta, v)
    return feats if rc is None else feats + factored_features(g, momenta, v, rc)


SEPARATE_STATS = 1 << 15    # tensors of at least this many elements get a statistics pass of their own


def leaf_mean_squares(g: jax.Array, w: jax.Array, momenta: Sequence[jax.Array], v: jax.Array,
                      rc: tuple | None = None) -> jax.Array:
    """[F]: mean(f²) of every feature of :func:`leaf_features` (the per-tensor statistics).

    Large tensors get a pass of their own: with ``mean(square(f))`` of the MLP loop's own feature
    arrays, XLA:CPU materializes every feature (its large reductions are not fused with their producers)
    and the loop then re-reads ~F arrays from memory instead of recomputing them from the 4 + k state
    arrays (1.5-2x slower updates on a 1M-parameter model). The optimization barrier keeps the two passes
    from sharing subexpressions. Small tensors keep the shared form: fewest ops, which is what counts
    under ``vmap`` on the small tasks of meta-training. The factored row/column features are broadcasts
    of O(n) and O(m) vectors whose mean square over the tensor is their own: reduced there.
    """
    momenta = tuple(momenta)
    if g.size >= SEPARATE_STATS:
        g, w, momenta, v, rc = jax.lax.optimization_barrier((g, w, momenta, v, rc))
    ms = [jnp.mean(jnp.square(f)) for f in leaf_features(g, w, momenta, v, rc)]
    if rc:
        n = len(ms) - 3 - len(momenta)   # factored_features: g/√(v̂+ε), row, col, then one per momentum
        ms[n + 1], ms[n + 2] = (jnp.mean(jnp.square(jax.lax.rsqrt(x + EPS))) for x in rc)
    return jnp.stack(ms)


def tensor_features(g: jax.Array, w: jax.Array, momenta: Sequence[jax.Array], v: jax.Array) -> list:
    """The per-parameter feature list of one tensor (unnormalized; see module docstring)."""
    rs = jax.lax.rsqrt(v + EPS)
    return [g, w, *momenta, jnp.sqrt(v), g * rs, *[m * rs for m in momenta]]


def feature_norms(feats: Sequence[jax.Array]) -> jax.Array:
    """[F]: 1/√(mean(f²)+ε) per feature — the per-tensor second-moment normalization."""
    return norms_from_mean_squares(jnp.stack([jnp.mean(jnp.square(f)) for f in feats]))


def norms_from_mean_squares(ms: jax.Array) -> jax.Array:
    return jax.lax.rsqrt(ms + 1e-12)


def log_rms_from_mean_squares(ms: jax.Array) -> jax.Array:
    return 0.5 * jnp.log(ms + 1e-30)


def apply_mlp(feats: Sequence[jax.Array], norms: jax.Array, w1: jax.Array, b1: jax.Array,
              hidden: Sequence[tuple], w_out: jax.Array, b_out: jax.Array,
              exp_mult: float, step_mult: jax.Array, fused: bool = True) -> jax.Array:
    """The per-parameter MLP on normalized features, folded as described in the module docstring.

    ``b1`` is already the per-tensor bias (bias + scalar-feature contribution); ``hidden`` is a
    sequence of (W, b) for extra hidden layers; ``w_out`` is [H, 2]. Returns the update direction
    ``step_mult · d · exp(exp_mult · s)`` shaped like the tensor.

    Two equal formulations: the matrix form stacks features into [P, F] and uses matrix products
    (needed for extra hidden layers; ``fused=False`` forces it); the fused form, the default for
    one hidden layer, unrolls the MLP over hidden units as scalar-weighted sums of feature arrays,
    which XLA fuses with the feature computation into a single elementwise loop — neither [P, F]
    nor [P, H] is materialized. It is faster on CPU at every tensor size measured: ~3× for large
    tensors (F≈10, H≤32), and on the 16–1,500-parameter tasks PES meta-trains on, where under
    ``vmap`` over particles the matrix form becomes a small batched dot per particle
    (benchmarks/meta_throughput.py: 0.26 → 0.39).
    """
    shape = feats[0].shape
    w1n = norms[:, None] * w1
    if fused and not hidden:
        direction = b_out[0]
        magnitude = b_out[1]
        for j in range(w1.shape[1]):
            hj = b1[j]
            for i, f in enumerate(feats):
                hj = hj + f * w1n[i, j]
            hj = jax.nn.relu(hj)
            direction = direction + hj * w_out[j, 0]
            magnitude = magnitude + hj * w_out[j, 1]
        return step_mult * direction * jnp.exp(exp_mult * magnitude)
    x = jnp.stack([f.reshape(-1) for f in feats], axis=-1)           # [P, F]
    h = jax.nn.relu(x @ w1n + b1)                                    # [P, H]
    for w, b in hidden:
        h = jax.nn.relu(h @ w + b)
    out = h @ w_out + b_out                                          # [P, 2]
    direction, magnitude = out[:, 0], out[:, 1]
    return (step_mult * direction * jnp.exp(exp_mult * magnitude)).reshape(shape)


# ---------------------------------------------------------------- the per-parameter MLP optimizer
def mlp_update(weights: dict, grads: Any, state: MomentState, params: Any, *,
               momentum_decays: Sequence[float], rms_decay: float, time_scales: Sequence[float],
               step_mult: float, exp_mult: float, lr_mult: float | jax.Array = 1.0,
               nominal: float = 0.0, factored: bool = False):
    """One step of the small per-parameter MLP optimizer: returns (updates, new_state).

    ``factored`` adds the Adafactor-style features of the module docstring (``state`` must come from
    ``init_moments(..., factored=True)``).

    With ``nominal`` = c > 0 the update gains a fixed Adam term (a "nominal descent direction",
    Harrison et al. 2022, "A closer look at learned optimization: stability, robustness, and
    inductive biases"): u = −lr_mult · step_mult · (MLP(f̂) + c · m̂/(√v̂ + ε)), so the rule starts
    near Adam and meta-training learns a correction instead of descent from scratch.
    """
    state = update_moments(grads, state, momentum_decays, rms_decay)
    # scalar features fold into the bias: one [n_time] × [n_time, H] product per step, not per param
    b1 = weights["b1"] + time_features(state.t, time_scales) @ weights["w1_time"]
    hidden = [(weights[f"w_h{i}"], weights[f"b_h{i}"]) for i in range(_count_hidden(weights))]
    g_leaves, treedef = jax.tree_util.tree_flatten(grads)
    w_leaves = treedef.flatten_up_to(params)
    m_leaves = [treedef.flatten_up_to(m) for m in state.momenta]
    v_leaves = treedef.flatten_up_to(state.v)
    if nominal:
        k = int(np.argmin([abs(b - 0.9) for b in momentum_decays]))    # Adam's β₁ = 0.9
        m_hat = 1.0 / (1.0 - jnp.asarray(momentum_decays[k], jnp.float32) ** state.t)
        v_hat = 1.0 / (1.0 - jnp.asarray(rms_decay, jnp.float32) ** state.t)
    out = []
    for i, (g, w, v) in enumerate(zip(g_leaves, w_leaves, v_leaves)):
        ms, rc = [m[i] for m in m_leaves], (state.factored[i] if factored else None)
        norms = norms_from_mean_squares(leaf_mean_squares(g, w, ms, v, rc))
        u = apply_mlp(leaf_features(g, w, ms, v, rc), norms, weights["w1"], b1, hidden, weights["w_out"],
                      weights["b_out"], exp_mult, step_mult)
        if nominal:   # Adam's bias-corrected direction m̂/(√v̂ + ε) as a fixed descent term
            u = u + step_mult * nominal * (m_leaves[k][i] * m_hat) / (jnp.sqrt(v * v_hat) + EPS)
        out.append(-lr_mult * u)
    return jax.tree_util.tree_unflatten(treedef, out), state


def _count_hidden(weights: dict) -> int:
    return sum(1 for k in weights if k.startswith("w_h"))


# ---------------------------------------------------------------- the VeLO-style hypernetwork
class HyperState(NamedTuple):
    moments: MomentState
    lstm_c: jax.Array     # [T, H_lstm]: one LSTM cell state per parameter tensor
    lstm_h: jax.Array     # [T, H_lstm]
    loss_first: jax.Array  # scalar: first minibatch loss seen (NaN until seen)
    loss_ema: jax.Array    # scalar: EMA of the minibatch loss


def lstm_cell(weights: dict, x: jax.Array, c: jax.Array, h: jax.Array):
    """A standard LSTM cell (Hochreiter & Schmidhuber 1997), batched over tensors: x [T, D]."""
    z = jnp.concatenate([x, h], axis=-1) @ weights["lstm_w"] + weights["lstm_b"]
    i, f, g, o = jnp.split(z, 4, axis=-1)
    c = jax.nn.sigmoid(f + 1.0) * c + jax.nn.sigmoid(i) * jnp.tanh(g)   # +1: remember by default
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return c, h


def loss_features(value, loss_first, loss_ema):
    """[2]: log of the smoothed and current loss relative to the first loss, clipped; 0 if unknown."""
    rel = lambda x: jnp.clip(jnp.log(jnp.abs(x) + 1e-12) - jnp.log(jnp.abs(loss_first) + 1e-12), -10, 10) / 3.0
    f = jnp.stack([rel(loss_ema), rel(value)])
    return jnp.where(jnp.isfinite(f), f, 0.0)


def hyper_init(params: Any, n_momenta: int, lstm_size: int) -> HyperState:
    n = len(jax.tree_util.tree_leaves(params))
    z = jnp.zeros((n, lstm_size), jnp.float32)
    return HyperState(init_moments(params, n_momenta), z, z, jnp.full([], jnp.nan, jnp.float32),
                      jnp.zeros([], jnp.float32))


def hyper_update(weights: dict, grads: Any, state: HyperState, params: Any, value=None, *,
                 momentum_decays: Sequence[float], rms_decay: float, time_scales: Sequence[float],
                 num_steps: int, step_mult: float, exp_mult: float, lr_mult: float | jax.Array = 1.0):
    """One step of the hypernetwork optimizer (VeLO, Metz et al. 2022, simplified).

    Per tensor, an LSTM reads tensor statistics s = [log rms of each feature, log size, tanh(t/x),
    t/num_steps, loss features] and emits (a) mixing weights α = softmax(W_α h) over a bank of K
    per-parameter MLPs, whose weights are mixed as W = Σ_k α_k W_k, and (b) a per-tensor log step
    size ℓ. The tensor's update is then exp(ℓ) · MLP_W(f̂) as in :func:`mlp_update`.
    """
    moments = update_moments(grads, state.moments, momentum_decays, rms_decay)
    if value is None:
        value = jnp.full([], jnp.nan, jnp.float32)
    value = jnp.asarray(value, jnp.float32)
    loss_first = jnp.where(jnp.isnan(state.loss_first), value, state.loss_first)
    loss_ema = jnp.where(moments.t == 1, value, 0.9 * state.loss_ema + 0.1 * value)
    g_leaves, treedef = jax.tree_util.tree_flatten(grads)
    w_leaves = treedef.flatten_up_to(params)
    m_leaves = [treedef.flatten_up_to(m) for m in moments.momenta]
    v_leaves = treedef.flatten_up_to(moments.v)
    leaves = [(g, w, [m[i] for m in m_leaves], v) for i, (g, w, v) in enumerate(zip(g_leaves, w_leaves, v_leaves))]
    mean_sq = [leaf_mean_squares(*leaf) for leaf in leaves]     # one pass serves the LSTM and the norms
    shared = jnp.concatenate([time_features(moments.t, time_scales),
                              jnp.asarray(moments.t, jnp.float32)[None] / num_steps,
                              loss_features(value, loss_first, loss_ema)])
    stats = jnp.stack([jnp.concatenate([log_rms_from_mean_squares(s) / 10.0,
                                        jnp.log(jnp.asarray([float(g.size)], jnp.float32)) / 10.0,
                                        shared]) for s, g in zip(mean_sq, g_leaves)])     # [T, D]
    c, h = lstm_cell(weights, stats, state.lstm_c, state.lstm_h)
    alpha = jax.nn.softmax(h @ weights["mix_w"] + weights["mix_b"], axis=-1)           # [T, K]
    log_lr = (h @ weights["lr_w"] + weights["lr_b"])[:, 0]                             # [T]
    w1 = jnp.einsum("tk,kfh->tfh", alpha, weights["bank_w1"])
    b1 = alpha @ weights["bank_b1"] + (h @ weights["bias_w"])                          # [T, H]
    w_out = jnp.einsum("tk,kho->tho", alpha, weights["bank_w_out"])
    b_out = alpha @ weights["bank_b_out"]
    out = []
    for i, (leaf, s) in enumerate(zip(leaves, mean_sq)):
        u = apply_mlp(leaf_features(*leaf), norms_from_mean_squares(s), w1[i], b1[i], (), w_out[i], b_out[i],
                      exp_mult, step_mult * jnp.exp(log_lr[i]))
        out.append(-lr_mult * u)
    new = HyperState(moments, c, h, loss_first, loss_ema)
    return jax.tree_util.tree_unflatten(treedef, out), new


# ---------------------------------------------------------------- optax wrappers
def mlp_transform(weights: dict, lr_mult: float = 1.0, **hp) -> optax.GradientTransformationExtraArgs:
    def init(params):
        return init_moments(params, len(hp["momentum_decays"]), hp.get("factored", False))

    def update(grads, state, params=None, **extra):
        if params is None:
            raise ValueError("this learned optimizer reads the parameters: pass params to update()")
        return mlp_update(weights, grads, state, params, lr_mult=lr_mult, **hp)

    return optax.GradientTransformationExtraArgs(init, update)


def hyper_transform(weights: dict, lr_mult: float = 1.0, **hp) -> optax.GradientTransformationExtraArgs:
    lstm_size = int(np.shape(weights["lstm_b"])[-1]) // 4

    def init(params):
        return hyper_init(params, len(hp["momentum_decays"]), lstm_size)

    def update(grads, state, params=None, value=None, **extra):
        if params is None:
            raise ValueError("this learned optimizer reads the parameters: pass params to update()")
        return hyper_update(weights, grads, state, params, value, lr_mult=lr_mult, **hp)

    return optax.GradientTransformationExtraArgs(init, update)


TRANSFORMS = {"mlp": mlp_transform, "hyper": hyper_transform}
