"""A held-out recurrent workload, an LSTM character language model on the stdlib sources, and a family of
tiny LSTM/GRU language models for meta-training.

Same corpus, tokenizer and batches as the transformer LMs (the windows come from the batch function
of :func:`tasks.lm.char_lm`, so train/valid windows are identical for equal context and batch size),
but a recurrent model: embedding -> one LSTM layer (Hochreiter & Schmidhuber 1997) -> linear head.
LSTM LMs (Penn Treebank in most optimizer papers) stress optimizers differently from transformers:
long products of recurrent Jacobians, saturating gates, exploding gradients without clipping.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from tasks.base import Task, TaskFamily, key_to_rng
from tasks.data import softmax_cross_entropy
from tasks.lm import FAMILY_TRAIN_CHARS, FAMILY_VALID_CHARS, char_lm
from tasks.registry import register, register_family
from tasks.text import VOCAB_SIZE


CELLS = {"lstm": nn.OptimizedLSTMCell, "gru": nn.GRUCell}


class LSTMLM(nn.Module):
    """Embedding -> one recurrent layer (``cell``: an LSTM, or a GRU, Cho et al. 2014) -> linear head."""

    embed: int = 32
    hidden: int = 128
    cell: str = "lstm"

    @property
    def io_paths(self) -> tuple[str, ...]:
        """The embedding and the head; the LSTM cell's input and recurrent kernels are hidden."""
        return ("Embed_0", "Dense_0")

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        x = nn.Embed(VOCAB_SIZE, self.embed)(tokens)
        h = nn.RNN(CELLS[self.cell](self.hidden))(x)
        return nn.Dense(VOCAB_SIZE)(h)


def lstm_lm(name: str, embed: int, hidden: int, context: int, batch_size: int, steps: int,
            eval_every: int = 100, cell: str = "lstm", **corpus) -> Task:
    """Mean next-character cross-entropy (nats) of a recurrent LM over windows of ``context`` characters;
    ``corpus`` (``valid_windows``, ``max_train_chars``, ``max_valid_chars``) goes to :func:`char_lm`'s batches."""
    if cell not in CELLS:
        raise KeyError(f"unknown recurrent cell {cell!r}; known: {', '.join(sorted(CELLS))}")
    windows = char_lm(name, context=context, batch_size=batch_size, **corpus).batch
    model = LSTMLM(embed, hidden, cell)

    def init(key: jax.Array):
        return model.init(key, jnp.zeros((1, context), jnp.int32))["params"]

    def loss(params, tokens: jax.Array) -> jax.Array:
        logits = model.apply({"params": params}, tokens[:, :-1])
        return softmax_cross_entropy(logits.reshape(-1, VOCAB_SIZE), tokens[:, 1:].reshape(-1))

    return Task(name, init, loss, windows, steps=steps, eval_every=eval_every, io_paths=model.io_paths,
                description=f"{cell.upper()} char LM on stdlib sources: embed {embed}, hidden {hidden}, "
                            f"context {context}, batch {batch_size}")


# batch 16: at batch 32 this model measured ~47 ms/step (load ~10), over a third of the heldout budget
register("lm_lstm_stdlib")(lambda: lstm_lm("lm_lstm_stdlib", 32, 128, 32, 16, 1000))
register("lm_lstm_stdlib_quick")(lambda: lstm_lm("lm_lstm_stdlib_quick", 16, 64, 16, 32, 400))


class CharRNNFamily(TaskFamily):
    """Tiny LSTM and GRU character LMs on the stdlib corpus for meta-training on the recurrent shape of
    the held-out ``lm_lstm_stdlib``: cell LSTM/GRU, embedding 8/16, hidden 16/32/48, context 8/12/20,
    batch 8/16 and a horizon of 200/400/800 steps, drawn from the key; 16 fixed valid windows.

    Disjoint from every suite task by construction: the held-out LSTMs have hidden 64/128 and context
    16/32 (tests/test_families.py checks names, descriptions and parameter/batch shapes).
    """

    name = "char_rnn"
    cells = ("lstm", "gru")
    embeds = (8, 16)
    hiddens = (16, 32, 48)
    contexts = (8, 12, 20)
    batch_sizes = (8, 16)
    horizons = (200, 400, 800)

    def sample(self, key: jax.Array) -> Task:
        rng = key_to_rng(key)
        cell, e, h = str(rng.choice(self.cells)), int(rng.choice(self.embeds)), int(rng.choice(self.hiddens))
        ctx, bs = int(rng.choice(self.contexts)), int(rng.choice(self.batch_sizes))
        steps = int(rng.choice(self.horizons))
        return lstm_lm(f"char_{cell}_e{e}_h{h}_c{ctx}_b{bs}_s{steps}", e, h, ctx, bs, steps, 50, cell,
                       valid_windows=16, max_train_chars=FAMILY_TRAIN_CHARS, max_valid_chars=FAMILY_VALID_CHARS)


register_family("char_rnn")(CharRNNFamily)
