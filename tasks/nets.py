"""Small flax.linen networks shared by the data tasks, and the glue that turns a network plus a
dataset into a :class:`~tasks.base.Task`."""
from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from tasks.base import Task
from tasks.data import Dataset, softmax_cross_entropy, supervised_batcher

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu, "tanh": jnp.tanh, "gelu": nn.gelu, "silu": nn.silu, "sigmoid": nn.sigmoid,
    "elu": nn.elu,
}


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    if name not in ACTIVATIONS:
        raise KeyError(f"unknown activation {name!r}; known: {', '.join(sorted(ACTIVATIONS))}")
    return ACTIVATIONS[name]


class MLP(nn.Module):
    """Dense layers of the given widths with an activation between them; the last layer is linear."""

    widths: Sequence[int]
    act: str = "relu"

    @property
    def io_paths(self) -> tuple[str, ...]:
        """The first (input-reading) and the last (output) Dense: Task.io_paths."""
        return ("Dense_0", f"Dense_{len(self.widths) - 1}")

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i, w in enumerate(self.widths):
            x = nn.Dense(w)(x)
            if i < len(self.widths) - 1:
                x = activation(self.act)(x)
        return x


def patches_3x3(x: jax.Array) -> jax.Array:
    """NHWC -> NHW(9C): each pixel's zero-padded 3x3 neighbourhood, so a 3x3 convolution is a Dense."""
    h, w = x.shape[-3], x.shape[-2]
    pad = [(0, 0)] * (x.ndim - 3) + [(1, 1), (1, 1), (0, 0)]
    p = jnp.pad(x, pad)
    return jnp.concatenate([p[..., i:i + h, j:j + w, :] for i in range(3) for j in range(3)], axis=-1)


class DigitsCNN(nn.Module):
    """Two 3x3 convolutions (the second with stride 2) on 8x8 single-channel images, then a linear head.

    The convolutions are written as patch extraction + Dense (im2col) rather than ``nn.Conv``: on
    XLA:CPU a convolution inside ``lax.scan`` (how every training run executes) measured ~13x slower
    than this (400 steps: 32 s vs 2.5 s), while outside a loop the two cost about the same.
    """

    channels: Sequence[int] = (16, 32)
    num_classes: int = 10
    act: str = "relu"

    @property
    def io_paths(self) -> tuple[str, ...]:
        """The first convolution (on the raw pixels) and the head."""
        return ("Dense_0", f"Dense_{len(self.channels)}")

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape(x.shape[:-1] + (8, 8, 1))        # flat 64 pixels -> NHWC
        for i, c in enumerate(self.channels):
            p = patches_3x3(x)
            if i > 0:
                p = p[..., ::2, ::2, :]                  # stride 2: keep every other output position
            x = activation(self.act)(nn.Dense(c)(p))
        return nn.Dense(self.num_classes)(x.reshape(x.shape[:-3] + (-1,)))


def flax_task(name: str, model: nn.Module, example: jax.Array, loss_fn: Callable, batch: Callable,
              steps: int, eval_every: int, description: str) -> Task:
    """A Task whose parameters are ``model``'s flax params and whose loss is ``loss_fn(outputs, batch)``;
    its input/output layers are ``model.io_paths``."""

    def init(key: jax.Array):
        return model.init(key, example)["params"]

    def loss(params, b) -> jax.Array:
        return loss_fn(model.apply({"params": params}, b[0]), b).astype(jnp.float32)

    return Task(name, init, loss, batch, steps=steps, eval_every=eval_every, description=description,
                io_paths=model.io_paths)


def classifier_task(name: str, model: nn.Module, data: Dataset, batch_size: int, steps: int,
                    eval_every: int, description: str) -> Task:
    """Mean softmax cross-entropy of ``model`` on ``data`` (train minibatches, whole valid split)."""
    return flax_task(name, model, jnp.zeros((1, data.x_train.shape[1]), jnp.float32),
                     lambda logits, b: softmax_cross_entropy(logits, b[1]),
                     supervised_batcher(data, batch_size), steps, eval_every, description)
