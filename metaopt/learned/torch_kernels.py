"""PyTorch port of :mod:`metaopt.learned.kernels`: the learned optimizers as a ``torch.optim.Optimizer``.

This module imports only ``torch``; ``metaopt export lopt:PATH --format torch`` copies it verbatim
into a standalone module (beside a safetensors weights file). It computes what ``kernels.mlp_update`` and
``kernels.hyper_update`` compute (same features, normalization, MLP / hypernetwork, nominal Adam term and
dtypes: weights, time and loss features in float32), checked against them in tests/test_torch_export.py::

    m_i ← β_i m_i + (1 − β_i) g,  v ← β_v v + (1 − β_v) g²
    f = [g, w, m_1..m_k, √v, g/√(v+ε), m_i/√(v+ε)],  f̂ = f / √(mean(f²) + ε)   (per tensor)
    (with ``factored``: + [g/√(v̂+ε), 1/√(r+ε), 1/√(c+ε), m_i/√(v̂+ε)], v̂ = r cᵀ / mean(r), Adafactor)
    w ← w − lr_mult · step_mult · d · exp(exp_mult · s),  (d, s) = MLP(f̂)   (+ nominal · Adam's direction)
"""

import torch

EPS = 1e-8


def time_features(t, scales):
    """tanh(t / x) for each x (float32)."""
    return torch.tanh(torch.tensor(float(t), dtype=torch.float32) / torch.tensor(scales, dtype=torch.float32))


def tensor_features(g, w, momenta, v):
    rs = torch.rsqrt(v + EPS)
    return [g, w, *momenta, torch.sqrt(v), g * rs, *[m * rs for m in momenta]]


def factored_features(g, momenta, v, st):
    """Adafactor-style features of one tensor (kernels.factored_features): row/col EMAs of g² in ``st``."""
    if "row" in st:
        r, c = st["row"], st["col"]
        v_hat = r[..., :, None] * c[..., None, :] / (torch.mean(r, dim=-1)[..., None, None] + 1e-30)
        row = torch.rsqrt(r + EPS)[..., :, None].expand(g.shape)
        col = torch.rsqrt(c + EPS)[..., None, :].expand(g.shape)
    else:
        v_hat = v
        row = col = torch.rsqrt(v + EPS)
    rs = torch.rsqrt(v_hat + EPS)
    return [g * rs, row, col, *[m * rs for m in momenta]]


def feature_norms(feats):
    return torch.stack([torch.rsqrt(torch.mean(torch.square(f)) + 1e-12) for f in feats])


def feature_log_rms(feats):
    return torch.stack([0.5 * torch.log(torch.mean(torch.square(f)) + 1e-30) for f in feats])


def apply_mlp(feats, norms, w1, b1, hidden, w_out, b_out, exp_mult, step_mult):
    """``step_mult · d · exp(exp_mult · s)`` of the per-parameter MLP on normalized features (tensor-shaped)."""
    x = torch.stack([f.reshape(-1) for f in feats], dim=-1)                 # [P, F]
    h = torch.relu(x @ (norms[:, None] * w1).to(x.dtype) + b1.to(x.dtype))    # [P, H]
    for w, b in hidden:
        h = torch.relu(h @ w.to(x.dtype) + b.to(x.dtype))
    out = h @ w_out.to(x.dtype) + b_out.to(x.dtype)
    return (step_mult * out[:, 0] * torch.exp(exp_mult * out[:, 1])).reshape(feats[0].shape)


def lstm_cell(weights, x, c, h):
    z = torch.cat([x, h], dim=-1) @ weights["lstm_w"] + weights["lstm_b"]
    i, f, g, o = torch.chunk(z, 4, dim=-1)
    c = torch.sigmoid(f + 1.0) * c + torch.sigmoid(i) * torch.tanh(g)
    return c, torch.sigmoid(o) * torch.tanh(c)


def loss_features(value, loss_first, loss_ema):
    def rel(x):
        return torch.clamp(torch.log(torch.abs(x) + 1e-12) - torch.log(torch.abs(loss_first) + 1e-12), -10, 10) / 3.0
    f = torch.stack([rel(loss_ema), rel(value)])
    return torch.where(torch.isfinite(f), f, torch.zeros_like(f))


class LearnedOptimizer(torch.optim.Optimizer):
    """A meta-trained learned optimizer ("mlp" or "hyper" architecture) with frozen weights.

    Args:
      params: parameters or parameter groups.
      weights: dict name -> tensor (the meta-trained θ).
      architecture: "mlp" (per-parameter MLP) or "hyper" (per-tensor LSTM over a bank of MLPs).
      hyperparams: the architecture's fixed settings (momentum_decays, rms_decay, time_scales, ...).
      lr_multiplier: scales the update (1.0 = as meta-trained); per group like ``lr``.

    ``step(closure=None)`` returns the closure's loss; the hypernetwork reads it (loss features are 0 without).
    """

    def __init__(self, params, weights, architecture, hyperparams, lr_multiplier=1.0):
        if architecture not in ("mlp", "hyper"):
            raise ValueError(f"unknown learned-optimizer architecture {architecture!r}")
        super().__init__(params, dict(lr_multiplier=lr_multiplier))
        self.weights = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in weights.items()}
        self.architecture, self.hp = architecture, dict(hyperparams)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        hp, W = self.hp, self.weights
        glob = dict(self.state["global"])
        self.state["global"] = glob
        glob["t"] = t = glob.get("t", 0) + 1
        items = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse or torch.is_complex(p):
                    raise TypeError("learned optimizers need dense real gradients")
                st = self.state[p]
                if not st:
                    st["momenta"] = [torch.zeros_like(p) for _ in hp["momentum_decays"]]
                    st["v"] = torch.zeros_like(p)
                    if hp.get("factored") and p.ndim >= 2:
                        st["row"] = torch.zeros(p.shape[:-1], dtype=p.dtype)
                        st["col"] = torch.zeros(p.shape[:-2] + p.shape[-1:], dtype=p.dtype)
                    if self.architecture == "hyper":
                        st["lstm_c"] = torch.zeros(W["lstm_b"].shape[-1] // 4)
                        st["lstm_h"] = torch.zeros(W["lstm_b"].shape[-1] // 4)
                g = p.grad
                for b, m in zip(hp["momentum_decays"], st["momenta"]):
                    m.mul_(b).add_(g, alpha=1.0 - b)
                st["v"].mul_(hp["rms_decay"]).addcmul_(g, g, value=1.0 - hp["rms_decay"])
                if "row" in st:
                    st["row"].mul_(hp["rms_decay"]).add_(torch.mean(g * g, dim=-1), alpha=1.0 - hp["rms_decay"])
                    st["col"].mul_(hp["rms_decay"]).add_(torch.mean(g * g, dim=-2), alpha=1.0 - hp["rms_decay"])
                items.append((p, g, st, float(group["lr_multiplier"])))
        if items:
            (self._mlp if self.architecture == "mlp" else self._hyper)(items, t, loss, glob)
        return loss

    def _mlp(self, items, t, loss, glob):
        hp, W = self.hp, self.weights
        b1 = W["b1"] + time_features(t, hp["time_scales"]) @ W["w1_time"]
        hidden = [(W[f"w_h{i}"], W[f"b_h{i}"]) for i in range(sum(1 for k in W if k.startswith("w_h")))]
        nominal = hp.get("nominal", 0.0)
        if nominal:
            decays = hp["momentum_decays"]
            k = min(range(len(decays)), key=lambda j: abs(decays[j] - 0.9))   # Adam's beta1 = 0.9
            tt = torch.tensor(float(t), dtype=torch.float32)
            m_hat = 1.0 / (1.0 - torch.tensor(decays[k], dtype=torch.float32) ** tt)
            v_hat = 1.0 / (1.0 - torch.tensor(hp["rms_decay"], dtype=torch.float32) ** tt)
        for p, g, st, lr_mult in items:
            feats = tensor_features(g, p, st["momenta"], st["v"])
            if hp.get("factored"):
                feats += factored_features(g, st["momenta"], st["v"], st)
            u = apply_mlp(feats, feature_norms(feats), W["w1"], b1, hidden, W["w_out"], W["b_out"],
                          hp["exp_mult"], hp["step_mult"])
            if nominal:
                u = u + hp["step_mult"] * nominal * (st["momenta"][k] * m_hat) / (torch.sqrt(st["v"] * v_hat) + EPS)
            p.add_(u, alpha=-lr_mult)

    def _hyper(self, items, t, loss, glob):
        hp, W = self.hp, self.weights
        value = torch.tensor(float("nan")) if loss is None else torch.as_tensor(loss).detach().float()
        first = glob.get("loss_first", torch.tensor(float("nan")))
        glob["loss_first"] = first = torch.where(torch.isnan(first), value, first)
        ema = value if t == 1 else 0.9 * glob["loss_ema"] + 0.1 * value
        glob["loss_ema"] = ema
        feats = [tensor_features(g, p, st["momenta"], st["v"]) for p, g, st, _ in items]
        shared = torch.cat([time_features(t, hp["time_scales"]),
                            torch.tensor([float(t) / hp["num_steps"]], dtype=torch.float32),
                            loss_features(value, first, ema)])
        stats = torch.stack([torch.cat([feature_log_rms(f).float() / 10.0,
                                        torch.log(torch.tensor([float(g.numel())])) / 10.0, shared])
                             for f, (_, g, _, _) in zip(feats, items)])
        c = torch.stack([st["lstm_c"] for _, _, st, _ in items])
        h = torch.stack([st["lstm_h"] for _, _, st, _ in items])
        c, h = lstm_cell(W, stats, c, h)
        alpha = torch.softmax(h @ W["mix_w"] + W["mix_b"], dim=-1)
        log_lr = (h @ W["lr_w"] + W["lr_b"])[:, 0]
        w1 = torch.einsum("tk,kfh->tfh", alpha, W["bank_w1"])
        b1 = alpha @ W["bank_b1"] + h @ W["bias_w"]
        w_out = torch.einsum("tk,kho->tho", alpha, W["bank_w_out"])
        b_out = alpha @ W["bank_b_out"]
        for i, (f, (p, g, st, lr_mult)) in enumerate(zip(feats, items)):
            st["lstm_c"], st["lstm_h"] = c[i], h[i]
            u = apply_mlp(f, feature_norms(f), w1[i], b1[i], (), w_out[i], b_out[i], hp["exp_mult"],
                          hp["step_mult"] * torch.exp(log_lr[i]))
            p.add_(u, alpha=-lr_mult)
