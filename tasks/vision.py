"""Held-out image models on scikit-learn's bundled 8x8 ``digits``: a VGG-style ConvNet, a small
Vision Transformer, an MLP-Mixer, a pre-LN residual MLP and a variational autoencoder.

Each comes in two tiers: the ``heldout`` tier (the realistic horizon) and a cheaper ``_quick`` tier
(narrower, fewer steps) for ``heldout-quick``. The split is the fixed stratified 80/20 split of
:func:`tasks.data.digits`; the valid batch is the whole valid split and ignores its key.

Convolutions are written as 3x3 patch extraction + Dense (:func:`tasks.nets.patches_3x3`), which is a
real weight-shared convolution: ``nn.Conv`` inside ``lax.scan`` measured ~13x slower on XLA:CPU.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from tasks.base import Task, check_split
from tasks.data import digits
from tasks.lm import Block
from tasks.nets import classifier_task, patches_3x3
from tasks.registry import register

SIDE = 8   # digits images are 8x8, one channel


def _images(x: jax.Array) -> jax.Array:
    """Flat 64 pixels -> NHWC."""
    return x.reshape(x.shape[:-1] + (SIDE, SIDE, 1))


def _patch_tokens(x: jax.Array, patch: int) -> jax.Array:
    """Flat 64 pixels -> (batch, (8/patch)^2 tokens, patch^2 pixels): non-overlapping square patches."""
    n = SIDE // patch
    img = x.reshape(x.shape[:-1] + (n, patch, n, patch))
    img = jnp.moveaxis(img, -3, -2)                        # (..., n, n, patch, patch)
    return img.reshape(x.shape[:-1] + (n * n, patch * patch))


def _avg_pool2(x: jax.Array) -> jax.Array:
    """2x2 average pooling, stride 2, on NHWC."""
    h, w, c = x.shape[-3:]
    return x.reshape(x.shape[:-3] + (h // 2, 2, w // 2, 2, c)).mean(axis=(-4, -2))


class ConvNet(nn.Module):
    """VGG-style: stages of two 3x3 convolutions + GELU, each stage followed by 2x2 average pooling,
    then a linear head on the flattened map. ``stages=(16, 32)``: 8x8 -> 4x4 -> 2x2."""

    stages: Sequence[int] = (16, 32)
    num_classes: int = 10

    @property
    def io_paths(self) -> tuple[str, ...]:
        """The first convolution (on the raw pixels) and the head (two convolutions per stage before it)."""
        return ("Dense_0", f"Dense_{2 * len(self.stages)}")

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = _images(x)
        for c in self.stages:
            for _ in range(2):
                x = nn.gelu(nn.Dense(c)(patches_3x3(x)))
            x = _avg_pool2(x)
        return nn.Dense(self.num_classes)(x.reshape(x.shape[:-3] + (-1,)))


class ViT(nn.Module):
    """Patch embedding + learned positions, pre-LN transformer blocks (bidirectional), mean-pooled
    tokens, LayerNorm, linear head (Dosovitskiy et al. 2021, without the class token)."""

    d_model: int = 48
    layers: int = 2
    heads: int = 4
    patch: int = 2
    num_classes: int = 10

    @property
    def io_paths(self) -> tuple[str, ...]:
        """Patch embedding, positions and head (the blocks' Dense layers are Block_i/Dense_j)."""
        return ("Dense_0", "pos", "Dense_1")

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        tokens = _patch_tokens(x, self.patch)
        h = nn.Dense(self.d_model)(tokens)
        h = h + self.param("pos", nn.initializers.normal(0.02), tokens.shape[-2:-1] + (self.d_model,))
        for _ in range(self.layers):
            h = Block(self.d_model, self.heads)(h, None)
        return nn.Dense(self.num_classes)(nn.LayerNorm()(h.mean(axis=-2)))


class MixerBlock(nn.Module):
    """Token mixing (an MLP across patches) then channel mixing (an MLP across features), both pre-LN
    and residual (Tolstikhin et al. 2021)."""

    token_hidden: int
    channel_hidden: int

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        y = jnp.swapaxes(nn.LayerNorm()(h), -1, -2)          # (..., channels, tokens)
        y = nn.Dense(h.shape[-2])(nn.gelu(nn.Dense(self.token_hidden)(y)))
        h = h + jnp.swapaxes(y, -1, -2)
        y = nn.Dense(h.shape[-1])(nn.gelu(nn.Dense(self.channel_hidden)(nn.LayerNorm()(h))))
        return h + y


class Mixer(nn.Module):
    d_model: int = 64
    layers: int = 2
    token_hidden: int = 32
    channel_hidden: int = 128
    patch: int = 2
    num_classes: int = 10

    @property
    def io_paths(self) -> tuple[str, ...]:
        """Patch embedding and head (the mixing MLPs are MixerBlock_i/Dense_j)."""
        return ("Dense_0", "Dense_1")

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = nn.Dense(self.d_model)(_patch_tokens(x, self.patch))
        for _ in range(self.layers):
            h = MixerBlock(self.token_hidden, self.channel_hidden)(h)
        return nn.Dense(self.num_classes)(nn.LayerNorm()(h).mean(axis=-2))


class ResMLP(nn.Module):
    """Dense stem, ``blocks`` pre-LN residual blocks (LN -> Dense(2w) -> GELU -> Dense(w)), final LN,
    linear head: depth and normalization the plain digits MLPs of the train suite never have."""

    width: int = 128
    blocks: int = 4
    num_classes: int = 10

    @property
    def io_paths(self) -> tuple[str, ...]:
        """The stem and the head: two Dense per block between them."""
        return ("Dense_0", f"Dense_{2 * self.blocks + 1}")

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = nn.Dense(self.width)(x)
        for _ in range(self.blocks):
            h = h + nn.Dense(self.width)(nn.gelu(nn.Dense(2 * self.width)(nn.LayerNorm()(h))))
        return nn.Dense(self.num_classes)(nn.LayerNorm()(h))


def image_classifier(name: str, model: nn.Module, batch_size: int, steps: int, eval_every: int,
                     description: str) -> Task:
    """Mean softmax cross-entropy of ``model`` (which reshapes the flat pixels itself) on digits."""
    return classifier_task(name, model, digits(), batch_size, steps, eval_every, description)


# --- VAE ----------------------------------------------------------------------------------------

class VAE(nn.Module):
    """MLP encoder to a diagonal Gaussian posterior, MLP decoder to Bernoulli pixel logits."""

    hidden: int = 128
    latent: int = 8

    @property
    def io_paths(self) -> tuple[str, ...]:
        """The encoder's first layer (on the pixels) and the decoder's last (pixel logits). flax names a Dense
        when it is built, and the decoder's output Dense is built before the hidden one it is applied to, so
        the output layer is Dense_2 and Dense_3 reads z. The posterior layer (Dense_1) and the decoder's
        first layer (Dense_3) sit between encoder and decoder: hidden layers of the whole network."""
        return ("Dense_0", "Dense_2")

    @nn.compact
    def __call__(self, x: jax.Array, eps: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        h = nn.gelu(nn.Dense(self.hidden)(x))
        mean, log_var = jnp.split(nn.Dense(2 * self.latent)(h), 2, axis=-1)
        z = mean + jnp.exp(0.5 * log_var) * eps                 # reparameterization trick
        logits = nn.Dense(x.shape[-1])(nn.gelu(nn.Dense(self.hidden)(z)))
        return logits, mean, log_var


def digits_vae(name: str, hidden: int, latent: int, batch_size: int, steps: int, eval_every: int = 100,
               valid_seed: int = 0) -> Task:
    """Negative ELBO per pixel of a VAE (Kingma & Welling 2014) on digits; pixel intensities in [0, 1]
    are the Bernoulli targets. The reparameterization noise is part of the batch (drawn from the batch
    key), so the loss stays a pure function of (params, batch); the valid noise is fixed."""
    data = digits()
    x_train, x_valid = jnp.asarray(data.x_train), jnp.asarray(data.x_valid)
    valid = (x_valid, jax.random.normal(jax.random.PRNGKey(valid_seed), (x_valid.shape[0], latent)))
    model = VAE(hidden, latent)

    def batch(key: jax.Array, split: str):
        check_split(split)
        if split == "valid":
            return valid
        k_idx, k_eps = jax.random.split(key)
        idx = jax.random.randint(k_idx, (batch_size,), 0, x_train.shape[0])
        return x_train[idx], jax.random.normal(k_eps, (batch_size, latent))

    def init(key: jax.Array):
        return model.init(key, jnp.zeros((1, SIDE * SIDE)), jnp.zeros((1, latent)))["params"]

    def loss(params, b) -> jax.Array:
        x, eps = b
        logits, mean, log_var = model.apply({"params": params}, x, eps)
        recon = jnp.sum(optax.sigmoid_binary_cross_entropy(logits, x), axis=-1)
        kl = 0.5 * jnp.sum(jnp.exp(log_var) + mean ** 2 - 1.0 - log_var, axis=-1)
        return jnp.mean(recon + kl) / x.shape[-1]

    return Task(name, init, loss, batch, steps=steps, eval_every=eval_every, io_paths=model.io_paths,
                description=f"digits VAE, MLP {hidden} hidden, latent {latent}, batch {batch_size}")


# --- registration: (heldout tier, quick tier) ---------------------------------------------------

def _convnet(name, stages, batch_size, steps):
    return image_classifier(name, ConvNet(stages), batch_size, steps, 100,
                            f"digits ConvNet, 2x conv3x3 per stage, stages {stages}, avg-pool, batch {batch_size}")


def _vit(name, d_model, layers, batch_size, steps):
    return image_classifier(name, ViT(d_model, layers), batch_size, steps, 100,
                            f"digits ViT, 2x2 patches (16 tokens), d{d_model}, {layers} layers, batch {batch_size}")


def _mixer(name, d_model, layers, batch_size, steps):
    return image_classifier(name, Mixer(d_model, layers, token_hidden=d_model // 2, channel_hidden=2 * d_model),
                            batch_size, steps, 100,
                            f"digits MLP-Mixer, 2x2 patches, d{d_model}, {layers} blocks, batch {batch_size}")


def _resmlp(name, width, blocks, batch_size, steps):
    return image_classifier(name, ResMLP(width, blocks), batch_size, steps, 100,
                            f"digits pre-LN residual MLP, width {width}, {blocks} blocks, batch {batch_size}")


register("digits_convnet")(lambda: _convnet("digits_convnet", (16, 32), 64, 1000))
register("digits_convnet_quick")(lambda: _convnet("digits_convnet_quick", (8, 16), 32, 300))
register("digits_vit")(lambda: _vit("digits_vit", 48, 2, 32, 1000))
register("digits_vit_quick")(lambda: _vit("digits_vit_quick", 24, 1, 32, 300))
register("digits_mixer")(lambda: _mixer("digits_mixer", 64, 2, 32, 1000))
register("digits_mixer_quick")(lambda: _mixer("digits_mixer_quick", 32, 1, 32, 300))
register("digits_resmlp")(lambda: _resmlp("digits_resmlp", 128, 4, 64, 1000))
register("digits_resmlp_quick")(lambda: _resmlp("digits_resmlp_quick", 64, 2, 32, 300))
register("digits_vae")(lambda: digits_vae("digits_vae", 128, 8, 64, 2000))
register("digits_vae_quick")(lambda: digits_vae("digits_vae_quick", 64, 4, 32, 400))
