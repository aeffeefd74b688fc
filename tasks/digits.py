"""Tasks on scikit-learn's bundled 8x8 ``digits``: MLP classifiers, a small CNN, an MLP autoencoder,
and families of random MLPs and random small CNNs for meta-training.

The split is fixed (stratified 80/20, seed 0, see :mod:`tasks.data`); the valid batch is the whole
valid split (360 images) and does not depend on the key.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from tasks.base import Task, TaskFamily, key_to_rng
from tasks.data import Dataset, digits, supervised_batcher
from tasks.nets import MLP, DigitsCNN, classifier_task, flax_task
from tasks.registry import register, register_family


def digits_mlp(width: int, depth: int, act: str = "relu", batch_size: int = 128, steps: int = 300,
               eval_every: int = 50, name: str | None = None) -> Task:
    """``depth`` hidden layers of ``width`` units with activation ``act``, softmax over 10 classes."""
    name = name or f"digits_mlp_w{width}_d{depth}_{act}"
    return classifier_task(name, MLP((width,) * depth + (10,), act), digits(), batch_size, steps,
                           eval_every, f"digits MLP, {depth}x{width} {act}, batch {batch_size}")


def digits_cnn(channels: tuple[int, ...] = (16, 32), batch_size: int = 64, steps: int = 400,
               eval_every: int = 50, name: str = "digits_cnn") -> Task:
    """Conv3x3(c0) -> Conv3x3/2(c1) -> linear, ReLU, on the 8x8 images."""
    return classifier_task(name, DigitsCNN(tuple(channels)), digits(), batch_size, steps, eval_every,
                           f"digits CNN, channels {tuple(channels)}, batch {batch_size}")


def digits_autoencoder(widths: tuple[int, ...] = (32, 8), act: str = "relu", batch_size: int = 128,
                       steps: int = 300, eval_every: int = 50, name: str = "digits_autoencoder") -> Task:
    """MLP autoencoder 64 -> widths -> reversed widths -> 64 with sigmoid output; loss is the mean
    squared reconstruction error (pixels are in [0, 1]) scaled by 10 so it starts near 1."""
    widths = tuple(widths)
    model = MLP(widths + widths[-2::-1] + (64,), act)

    def loss_fn(out, b):
        return 10.0 * jnp.mean((jax.nn.sigmoid(out) - b[0]) ** 2)

    return flax_task(name, model, jnp.zeros((1, 64), jnp.float32), loss_fn,
                     supervised_batcher(digits(), batch_size), steps, eval_every,
                     f"digits MLP autoencoder, bottleneck {widths[-1]}, {act}")


# --- train suite ----------------------------------------------------------------------------------
register("digits_mlp_w32_d1_relu")(lambda: digits_mlp(32, 1, "relu"))
register("digits_mlp_w64_d2_relu")(lambda: digits_mlp(64, 2, "relu"))
register("digits_mlp_w32_d2_tanh")(lambda: digits_mlp(32, 2, "tanh"))
register("digits_autoencoder")(lambda: digits_autoencoder())
# --- heldout suite: shapes and activations the train suite and the family never use -------------
register("digits_mlp_w128_d3_gelu")(lambda: digits_mlp(128, 3, "gelu", steps=400))
register("digits_mlp_w16_d4_elu")(lambda: digits_mlp(16, 4, "elu", batch_size=64, steps=400))
register("digits_cnn")(lambda: digits_cnn())
# --- smoke ------------------------------------------------------------------------------------------
register("smoke_digits_mlp")(lambda: digits_mlp(8, 1, "relu", batch_size=32, steps=60, eval_every=20,
                                                name="smoke_digits_mlp"))
register("smoke_digits_cnn")(lambda: digits_cnn((4, 8), batch_size=16, steps=40, eval_every=20,
                                                name="smoke_digits_cnn"))


class DigitsMLPFamily(TaskFamily):
    """Digits MLPs with width in {16, 32, 64}, depth in {1, 2}, activation in {relu, tanh, silu}
    and batch size in {32, 64, 128}. The held-out digits shapes (width 128, depth >= 3, gelu/elu, CNN)
    are deliberately outside this distribution."""

    name = "digits_mlp"
    widths = (16, 32, 64)
    depths = (1, 2)
    activations = ("relu", "tanh", "silu")
    batch_sizes = (32, 64, 128)

    def sample(self, key: jax.Array) -> Task:
        rng = key_to_rng(key)
        width = int(rng.choice(self.widths))
        depth = int(rng.choice(self.depths))
        act = str(rng.choice(self.activations))
        bs = int(rng.choice(self.batch_sizes))
        return digits_mlp(width, depth, act, batch_size=bs,
                          name=f"digits_mlp_w{width}_d{depth}_{act}_b{bs}")


register_family("digits_mlp")(DigitsMLPFamily)


class DigitsCNNFamily(TaskFamily):
    """Small digits CNNs (:class:`tasks.nets.DigitsCNN`: 3x3 convolutions, all but the first of stride 2)
    for meta-training on the convolutional shapes of the held-out suite (``digits_convnet``) without any
    of its tasks: 1-3 convolutions of 4-12 channels, activation in {relu, tanh, silu}, batch 24 or 48 and a
    horizon of 200, 400 or 800 steps (``Task.steps``), all drawn from the key.

    Disjoint from every suite task by construction: the validation CNN has 16/32 channels and batch 64,
    the smoke CNN batch 16, the held-out ConvNet/ViT/Mixer are other modules (tests/test_families.py
    checks names, descriptions and parameter/batch shapes). At most ~5k parameters, validated on a
    fixed third of the valid split (see :func:`_valid_subset`).
    """

    name = "digits_cnn"
    first_channels = (4, 8)
    channels = (8, 12)
    depths = (1, 2, 3)
    activations = ("relu", "tanh", "silu")
    batch_sizes = (24, 48)
    horizons = (200, 400, 800)

    def sample(self, key: jax.Array) -> Task:
        rng = key_to_rng(key)
        depth = int(rng.choice(self.depths))
        chans = (int(rng.choice(self.first_channels)),) + tuple(int(rng.choice(self.channels))
                                                                for _ in range(depth - 1))
        act = str(rng.choice(self.activations))
        bs = int(rng.choice(self.batch_sizes))
        steps = int(rng.choice(self.horizons))
        name = f"digits_cnn_c{'-'.join(map(str, chans))}_{act}_b{bs}_s{steps}"
        return classifier_task(name, DigitsCNN(chans, act=act), _valid_subset(digits()), bs, steps, 50,
                               f"digits CNN, channels {chans}, {act}, batch {bs}, {steps} steps, "
                               f"valid every 3rd valid image")


def _valid_subset(data: Dataset) -> Dataset:
    """Every 3rd image of the valid split (120 of 360): with ``meta_loss: valid`` PES evaluates the valid
    batch after every inner step of every particle, and on the whole split that was ~10x the train step's
    cost for these CNNs (measured: 4.2-5.4 s per PES meta-step of 16 pairs, unroll 20, load ~11)."""
    return data._replace(x_valid=data.x_valid[::3], y_valid=data.y_valid[::3], valid_index=data.valid_index[::3])


register_family("digits_cnn")(DigitsCNNFamily)
