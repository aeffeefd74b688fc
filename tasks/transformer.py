"""Held-out transformer workloads: a character LM on the stdlib sources, grokking-style modular
addition, and in-context linear regression.

* ``lm_transformer_stdlib`` reuses :func:`tasks.lm.char_lm` (same corpus, tokenizer and model code)
  at a size optimizer papers would call small rather than toy (>= 200k parameters, 1,000 steps).
* ``modular_addition`` (Power et al. 2022, "Grokking"): predict ``(a + b) mod p`` from the tokens
  ``a b =`` with a fixed fraction of the p^2 pairs for training; the valid split is every other pair,
  so the valid loss measures generalisation, which comes late and depends strongly on the optimizer
  (and its weight decay).
* ``icl_linreg`` (Garg et al. 2022): each sequence holds ``points`` pairs (x_i, y_i = w.x_i / sqrt(d))
  with a fresh ``w ~ N(0, I)`` per sequence; a causal transformer predicts every y_i from the pairs
  before it. ``w`` is drawn from the batch key, so no fixed parameter vector (and no rule that ignores
  the gradient) solves the task: the model has to learn regression in context.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tasks.base import Task, check_split
from tasks.data import softmax_cross_entropy
from tasks.lm import Block, char_lm
from tasks.registry import register

MODULAR_DATA_SEED = 0     # fixes which (a, b) pairs are train pairs
ICL_VALID_SEED = 0        # fixes the valid sequences (and their w) of in-context regression


class Encoder(nn.Module):
    """Input projection (or token embedding), learned positions, pre-LN blocks, final LayerNorm."""

    d_model: int
    layers: int
    heads: int
    length: int
    vocab: int = 0            # > 0: integer tokens through an embedding; 0: real vectors through a Dense
    causal: bool = False

    @property
    def io_paths(self) -> tuple[str, ...]:
        """The input embedding (or projection) and the positions; the task's head lives outside."""
        return ("Embed_0" if self.vocab else "Dense_0", "pos")

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = nn.Embed(self.vocab, self.d_model)(x) if self.vocab else nn.Dense(self.d_model)(x)
        h = h + self.param("pos", nn.initializers.normal(0.02), (self.length, self.d_model))
        mask = nn.make_causal_mask(jnp.zeros(h.shape[:-1])) if self.causal else None
        for _ in range(self.layers):
            h = Block(self.d_model, self.heads)(h, mask)
        return nn.LayerNorm()(h)


# --- modular addition ---------------------------------------------------------------------------

def modular_addition(name: str, p: int, train_fraction: float, d_model: int, layers: int, heads: int,
                     batch_size: int, steps: int, eval_every: int = 100) -> Task:
    """Cross-entropy of the answer token read at the ``=`` position; train minibatches are drawn with
    replacement from the train pairs, the valid batch is every held-out pair."""
    a, b = np.divmod(np.arange(p * p), p)
    tokens = np.stack([a, b, np.full_like(a, p)], axis=1).astype(np.int32)   # token p is "="
    labels = ((a + b) % p).astype(np.int32)
    order = np.random.default_rng(MODULAR_DATA_SEED).permutation(p * p)
    n_train = int(round(train_fraction * p * p))
    train_rows, valid_rows = np.sort(order[:n_train]), np.sort(order[n_train:])
    x_train, y_train = jnp.asarray(tokens[train_rows]), jnp.asarray(labels[train_rows])
    valid = (jnp.asarray(tokens[valid_rows]), jnp.asarray(labels[valid_rows]))

    encoder = Encoder(d_model, layers, heads, length=3, vocab=p + 1)
    head = nn.Dense(p)

    def batch(key: jax.Array, split: str):
        check_split(split)
        if split == "valid":
            return valid
        idx = jax.random.randint(key, (batch_size,), 0, n_train)
        return x_train[idx], y_train[idx]

    def init(key: jax.Array):
        k_enc, k_head = jax.random.split(key)
        enc = encoder.init(k_enc, jnp.zeros((1, 3), jnp.int32))["params"]
        return {"encoder": enc, "head": head.init(k_head, jnp.zeros((1, d_model)))["params"]}

    def loss(params, bt) -> jax.Array:
        x, y = bt
        h = encoder.apply({"params": params["encoder"]}, x)[:, -1]
        return softmax_cross_entropy(head.apply({"params": params["head"]}, h), y)

    io_paths = tuple(f"encoder/{q}" for q in encoder.io_paths) + ("head",)
    return Task(name, init, loss, batch, steps=steps, eval_every=eval_every, io_paths=io_paths,
                description=f"(a + b) mod {p}, {train_fraction:.0%} of pairs for training, transformer "
                            f"d{d_model}, {layers} layer(s), batch {batch_size}")


# --- in-context linear regression ---------------------------------------------------------------

def _regression_sequences(key: jax.Array, n: int, points: int, dim: int) -> tuple[jax.Array, jax.Array]:
    """``n`` sequences of ``2 * points`` tokens of width ``dim + 1`` and their targets [n, points].

    Token 2i carries x_i (last coordinate 0), token 2i+1 carries y_i in the last coordinate; the
    model's output at token 2i is its prediction of y_i, which it cannot see yet (causal mask).
    """
    k_w, k_x = jax.random.split(key)
    w = jax.random.normal(k_w, (n, dim))
    x = jax.random.normal(k_x, (n, points, dim))
    y = jnp.einsum("npd,nd->np", x, w) / jnp.sqrt(dim)        # unit variance whatever dim is
    x_tok = jnp.concatenate([x, jnp.zeros((n, points, 1))], axis=-1)
    y_tok = jnp.concatenate([jnp.zeros((n, points, dim)), y[..., None]], axis=-1)
    seq = jnp.stack([x_tok, y_tok], axis=2).reshape(n, 2 * points, dim + 1)
    return seq, y


def icl_linreg(name: str, dim: int, points: int, d_model: int, layers: int, heads: int, batch_size: int,
               steps: int, eval_every: int = 100, valid_sequences: int = 256) -> Task:
    """Mean squared error of the predictions of y_1..y_points (predicting 0 scores 1.0; the
    least-squares posterior mean reaches ~0 once ``i > dim``)."""
    encoder = Encoder(d_model, layers, heads, length=2 * points, causal=True)
    readout = nn.Dense(1)
    valid = _regression_sequences(jax.random.PRNGKey(ICL_VALID_SEED), valid_sequences, points, dim)

    def batch(key: jax.Array, split: str):
        check_split(split)
        if split == "valid":
            return valid
        return _regression_sequences(key, batch_size, points, dim)

    def init(key: jax.Array):
        k_enc, k_out = jax.random.split(key)
        enc = encoder.init(k_enc, jnp.zeros((1, 2 * points, dim + 1)))["params"]
        return {"encoder": enc, "readout": readout.init(k_out, jnp.zeros((1, d_model)))["params"]}

    def loss(params, bt) -> jax.Array:
        seq, y = bt
        h = encoder.apply({"params": params["encoder"]}, seq)[:, ::2]     # the x_i tokens
        pred = readout.apply({"params": params["readout"]}, h)[..., 0]
        return jnp.mean((pred - y) ** 2)

    io_paths = tuple(f"encoder/{q}" for q in encoder.io_paths) + ("readout",)
    return Task(name, init, loss, batch, steps=steps, eval_every=eval_every, io_paths=io_paths,
                description=f"in-context linear regression, d={dim}, {points} points per sequence, causal "
                            f"transformer d{d_model}, {layers} layers, batch {batch_size}")


# --- registration: (heldout tier, quick tier) ---------------------------------------------------

# context 32 x batch 16 tokens per step: at context 64 this model alone took ~35 min of the 45-minute budget
register("lm_transformer_stdlib")(lambda: char_lm("lm_transformer_stdlib", d_model=96, layers=2, heads=4,
                                                  context=32, batch_size=16, steps=1000, eval_every=100))
register("lm_transformer_stdlib_quick")(lambda: char_lm("lm_transformer_stdlib_quick", d_model=32, layers=2,
                                                        heads=4, context=32, batch_size=16, steps=300,
                                                        eval_every=100))
# with 40-60% of the pairs, 2,000-3,000 steps of AdamW only memorise (valid loss back above ln 47)
register("modular_addition")(lambda: modular_addition("modular_addition", 47, 0.8, 64, 1, 4, 128, 2000, 200))
# 50% of the pairs for p = 23 only memorised within 600 steps (every optimizer's valid loss rose above
# its initial value); with 80% the valid loss falls from 3.6 to ~1.7 within 1,000 steps
register("modular_addition_quick")(lambda: modular_addition("modular_addition_quick", 23, 0.8, 32, 1, 4, 64,
                                                            1000))
register("icl_linreg")(lambda: icl_linreg("icl_linreg", 5, 10, 48, 2, 4, 32, 1000))
# d=3 with one layer and 400 steps stayed above the zero predictor (loss 1.12); d=2 with two layers
# reaches ~0.6 within 400 steps
register("icl_linreg_quick")(lambda: icl_linreg("icl_linreg_quick", 2, 8, 32, 2, 2, 32, 400))
