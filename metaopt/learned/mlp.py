"""The small per-parameter MLP learned optimizer (Metz et al. 2022, "Practical tradeoffs between
memory, compute, and performance in learned optimizers"; learned_optimization's ``small_fc_lopt``).

For every parameter, an MLP shared across all parameters reads the normalized features f̂ of
:mod:`metaopt.learned.kernels` (gradient, momenta, √v, g/√v, m/√v, the parameter) plus the time
features tanh(t/x) and emits (d, s); the update is ``−step_mult · d · exp(exp_mult · s)``, plus
``nominal`` times Adam's direction when ``nominal`` > 0 (see :func:`kernels.mlp_update`).
Cheap extra features (Metz et al. 2022, Sec. 4): ``momentum_decays`` sets how many momenta (and
m/√v features) the rule reads, ``factored`` adds Adafactor's row/column second-moment statistics
(O(n + m) memory per n × m matrix). The defaults are the shipped checkpoints' architecture.
The small multipliers (10⁻³) keep the untrained rule's steps small and make log step sizes easy
to learn (Metz et al. 2022).
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from metaopt.learned import kernels
from metaopt.learned.base import LearnedOptimizer, Theta, register_architecture


class MLPWeights(nn.Module):
    """Declares θ of the per-parameter MLP: first layer split into per-parameter and time parts."""

    n_features: int
    n_time: int
    hidden_size: int
    hidden_layers: int
    out_scale: float = 1.0      # initial scale of the output layer (small: start near the nominal term)

    @nn.compact
    def __call__(self) -> dict:
        lecun = nn.initializers.lecun_normal()
        h = self.hidden_size
        w = {"w1": self.param("w1", lecun, (self.n_features, h)),
             "w1_time": self.param("w1_time", lecun, (self.n_time, h)),
             "b1": self.param("b1", nn.initializers.zeros, (h,))}
        for i in range(self.hidden_layers - 1):
            w[f"w_h{i}"] = self.param(f"w_h{i}", lecun, (h, h))
            w[f"b_h{i}"] = self.param(f"b_h{i}", nn.initializers.zeros, (h,))
        scaled = lambda key, shape, dtype=jnp.float32: self.out_scale * lecun(key, shape, dtype)
        w["w_out"] = self.param("w_out", scaled, (h, 2))
        w["b_out"] = self.param("b_out", nn.initializers.zeros, (2,))
        return w


@register_architecture
@dataclasses.dataclass(frozen=True)
class MLPLOpt(LearnedOptimizer):
    """Per-parameter MLP learned optimizer; ``hidden_layers`` ≥ 1 hidden layers of ``hidden_size``."""

    name = "mlp"
    hidden_size: int = 16
    hidden_layers: int = 1
    momentum_decays: tuple = (0.5, 0.9, 0.99)
    rms_decay: float = 0.999
    time_scales: tuple = (1, 3, 10, 30, 100, 300, 1000, 3000, 10000)
    step_mult: float = 1e-3
    exp_mult: float = 1e-3
    nominal: float = 0.0        # weight of a fixed Adam term in the update (0 = pure MLP)
    factored: bool = False      # Adafactor-style row/column second-moment features (kernels docstring)

    def __post_init__(self):
        if self.hidden_layers < 1:
            raise ValueError("hidden_layers must be >= 1")

    def _module(self) -> MLPWeights:
        # with a nominal Adam term, the learned correction starts 10x smaller than it
        return MLPWeights(kernels.num_features(len(self.momentum_decays), self.factored), len(self.time_scales),
                          self.hidden_size, self.hidden_layers, 0.1 if self.nominal else 1.0)

    def init_meta_params(self, key: jax.Array) -> Theta:
        return self._module().init(key)

    def hyperparams(self) -> dict:
        return dict(momentum_decays=tuple(self.momentum_decays), rms_decay=self.rms_decay,
                    time_scales=tuple(self.time_scales), step_mult=self.step_mult, exp_mult=self.exp_mult,
                    nominal=self.nominal, factored=self.factored)

    def opt(self, theta: Theta, lr_multiplier=1.0) -> optax.GradientTransformationExtraArgs:
        return kernels.mlp_transform(dict(theta["params"]), lr_multiplier, **self.hyperparams())
