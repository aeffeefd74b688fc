"""A held-out recurrent workload: an LSTM character language model on the stdlib sources.

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

from tasks.base import Task
from tasks.data import softmax_cross_entropy
from tasks.lm import char_lm
from tasks.registry import register
from tasks.text import VOCAB_SIZE


class LSTMLM(nn.Module):
    embed: int = 32
    hidden: int = 128

    @property
    def io_paths(self) -> tuple[str, ...]:
        """The embedding and the head; the LSTM cell's input and recurrent kernels are hidden."""
        return ("Embed_0", "Dense_0")

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        x = nn.Embed(VOCAB_SIZE, self.embed)(tokens)
        h = nn.RNN(nn.OptimizedLSTMCell(self.hidden))(x)
        return nn.Dense(VOCAB_SIZE)(h)


def lstm_lm(name: str, embed: int, hidden: int, context: int, batch_size: int, steps: int,
            eval_every: int = 100) -> Task:
    """Mean next-character cross-entropy (nats) of an LSTM LM over windows of ``context`` characters."""
    windows = char_lm(name, context=context, batch_size=batch_size).batch
    model = LSTMLM(embed, hidden)

    def init(key: jax.Array):
        return model.init(key, jnp.zeros((1, context), jnp.int32))["params"]

    def loss(params, tokens: jax.Array) -> jax.Array:
        logits = model.apply({"params": params}, tokens[:, :-1])
        return softmax_cross_entropy(logits.reshape(-1, VOCAB_SIZE), tokens[:, 1:].reshape(-1))

    return Task(name, init, loss, windows, steps=steps, eval_every=eval_every, io_paths=model.io_paths,
                description=f"LSTM char LM on stdlib sources: embed {embed}, hidden {hidden}, "
                            f"context {context}, batch {batch_size}")


# batch 16: at batch 32 this model measured ~47 ms/step (load ~10), over a third of the heldout budget
register("lm_lstm_stdlib")(lambda: lstm_lm("lm_lstm_stdlib", 32, 128, 32, 16, 1000))
register("lm_lstm_stdlib_quick")(lambda: lstm_lm("lm_lstm_stdlib_quick", 16, 64, 16, 32, 400))
