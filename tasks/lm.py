"""A small character-level transformer language model on the stdlib corpus (:mod:`tasks.text`).

Pre-LayerNorm decoder blocks (causal multi-head self-attention + GELU MLP), learned positional
embeddings, untied output layer. The loss is the mean next-character cross-entropy in nats.
Train batches are random windows of the train text; the valid batch is a fixed set of evenly spaced
windows of the valid text (key-independent, so curves are comparable).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tasks.base import Task, TaskFamily, check_split, key_to_rng
from tasks.data import softmax_cross_entropy
from tasks.registry import register, register_family
from tasks.text import VOCAB_SIZE, stdlib_corpus


class Block(nn.Module):
    """One pre-LN transformer block."""

    d_model: int
    heads: int

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        h = nn.LayerNorm()(x)
        x = x + nn.SelfAttention(num_heads=self.heads, qkv_features=self.d_model, deterministic=True)(h, mask=mask)
        h = nn.LayerNorm()(x)
        h = nn.Dense(4 * self.d_model)(h)
        return x + nn.Dense(self.d_model)(nn.gelu(h))


class CharTransformer(nn.Module):
    """Token + position embeddings, ``layers`` blocks, final LayerNorm, linear head over the vocabulary."""

    vocab: int
    context: int
    d_model: int = 64
    layers: int = 2
    heads: int = 4

    @property
    def io_paths(self) -> tuple[str, ...]:
        """Token and position embeddings and the (untied) head over the vocabulary."""
        return ("Embed_0", "pos", "Dense_0")

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        t = tokens.shape[-1]
        x = nn.Embed(self.vocab, self.d_model)(tokens)
        x = x + self.param("pos", nn.initializers.normal(0.02), (self.context, self.d_model))[:t]
        mask = nn.make_causal_mask(tokens)
        for _ in range(self.layers):
            x = Block(self.d_model, self.heads)(x, mask)
        return nn.Dense(self.vocab)(nn.LayerNorm()(x))


def char_lm(name: str, d_model: int = 64, layers: int = 2, heads: int = 4, context: int = 64,
            batch_size: int = 32, valid_windows: int = 64, max_train_chars: int = 1_000_000,
            max_valid_chars: int = 120_000, steps: int = 600, eval_every: int = 100) -> Task:
    """A character transformer LM task; the corpus is capped at ``max_*_chars`` (it becomes jit constants)."""
    corpus = stdlib_corpus(max_train_chars, max_valid_chars)
    train_text = jnp.asarray(corpus.train)            # uint8: one byte per character in the constant
    span = context + 1                                # inputs plus the next-character targets
    n_train = corpus.train.shape[0] - span
    if n_train <= 0 or corpus.valid.shape[0] < span:
        raise ValueError("corpus too small for the context length")
    # fixed valid windows, evenly spaced over the valid text
    starts = np.linspace(0, corpus.valid.shape[0] - span, valid_windows).astype(np.int64)
    valid = jnp.asarray(corpus.valid[starts[:, None] + np.arange(span)], jnp.int32)
    model = CharTransformer(VOCAB_SIZE, context, d_model, layers, heads)
    offsets = jnp.arange(span)

    def batch(key: jax.Array, split: str) -> jax.Array:
        check_split(split)
        if split == "valid":
            return valid
        start = jax.random.randint(key, (batch_size, 1), 0, n_train + 1)
        return train_text[start + offsets].astype(jnp.int32)

    def init(key: jax.Array):
        return model.init(key, jnp.zeros((1, context), jnp.int32))["params"]

    def loss(params, tokens: jax.Array) -> jax.Array:
        logits = model.apply({"params": params}, tokens[:, :-1])
        return softmax_cross_entropy(logits.reshape(-1, VOCAB_SIZE), tokens[:, 1:].reshape(-1))

    return Task(name, init, loss, batch, steps=steps, eval_every=eval_every, io_paths=model.io_paths,
                description=f"char transformer LM on stdlib sources: d{d_model}, {layers} layers, "
                            f"{heads} heads, context {context}, batch {batch_size}")


# d48 x 2 layers (~69k parameters): the 116k-parameter d64 model cost ~2x per step for the same horizon
register("char_lm_stdlib")(lambda: char_lm("char_lm_stdlib", d_model=48, layers=2, heads=4, steps=500))
register("smoke_char_lm")(lambda: char_lm("smoke_char_lm", d_model=16, layers=1, heads=2, context=16,
                                          batch_size=8, valid_windows=16, max_train_chars=20_000,
                                          max_valid_chars=4_000, steps=40, eval_every=20))


# The train families' corpus cap: the text becomes an XLA constant of every compiled unroll, and a
# 100k-character slice of the stdlib sources (ids only) still gives thousands of distinct windows.
FAMILY_TRAIN_CHARS = 100_000
FAMILY_VALID_CHARS = 20_000


class CharLMFamily(TaskFamily):
    """Tiny character transformer LMs on the stdlib corpus (:func:`char_lm`) for meta-training on the
    shape of the held-out ``lm_transformer_stdlib``: width 8/16/24, 1-2 layers, 1-2 heads, context
    8/12/20, batch 4/8/16 and a horizon of 200/400/800 steps, drawn from the key; 16 fixed valid windows.

    Disjoint from every suite task by construction: the suites' transformer LMs all use context 16, 32
    or 64, which this family never draws (tests/test_families.py checks names, descriptions and
    parameter/batch shapes).
    """

    name = "char_lm"
    widths = (8, 16, 24)
    depths = (1, 2)
    heads = (1, 2)
    contexts = (8, 12, 20)
    batch_sizes = (4, 8, 16)
    horizons = (200, 400, 800)

    def sample(self, key: jax.Array) -> Task:
        rng = key_to_rng(key)
        d, layers, heads = int(rng.choice(self.widths)), int(rng.choice(self.depths)), int(rng.choice(self.heads))
        ctx, bs = int(rng.choice(self.contexts)), int(rng.choice(self.batch_sizes))
        steps = int(rng.choice(self.horizons))
        return char_lm(f"char_lm_d{d}_l{layers}_h{heads}_c{ctx}_b{bs}_s{steps}", d_model=d, layers=layers,
                       heads=heads, context=ctx, batch_size=bs, valid_windows=16,
                       max_train_chars=FAMILY_TRAIN_CHARS, max_valid_chars=FAMILY_VALID_CHARS, steps=steps,
                       eval_every=50)


register_family("char_lm")(CharLMFamily)
