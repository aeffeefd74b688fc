"""The seed catalog's 127 update rules (shared/seed_catalog.md, section 1.A-1.J) and how the library covers them.

``ROWS`` is the catalog's row id, name and primary class; ``PROGRAMS`` maps a library program to the catalog row
it implements (``None``: not a catalog row); ``UNCOVERED`` gives, for every row no program implements, why.
Used by benchmarks/library_table.py to write docs/library.md.
"""
from __future__ import annotations

_ROWS = """
A1|SGD|E
A2|SGD with momentum|E
A3|Nesterov momentum|E
A4|AdaGrad|E
A5|AdaGrad-Norm|E+S(n)
A6|RMSProp|E
A7|AdaDelta|E
A8|Adam|E+S(t)
A9|AdaMax|E+S(t)
A10|Nadam|E+S(t)
A11|AMSGrad|E
A12|AdamW, SGDW|E+S(t)
A13|RAdam|E+S(t)
A14|AdaBelief|E+S(t)
A15|Adan|E+S(t)
A16|Yogi|E
A17|FedAdagrad / FedAdam / FedYogi|E
A18|AdaShift|E
A19|AdamNC|E+S(t)
A20|LARS|E+S(n)
A21|LAMB|E+S(n)
B1|diffGrad|E+S(t)
B2|AdamP / SGDP|E+S(n)
B3|AdaBound / AMSBound|E+S(t)
B4|AdaMod|E+S(t)
B5|AdaMomentum|E+S(t)
B6|Adam + Critical Momenta|E+S(n)
B7|EXAdam|E+S(t)
B8|FAdam|E+S(n)
B9|ADOPT|E+S(t)
B10|AdEMAMix|E+S(t)
B11|Adam-atan2|E+S(t)
B12|Coordinate-wise clipping|E
B13|SPAM|E+S(t)
B14|Stable-SPAM|E+S(n)
B15|ScaledAdam|E+S(n)
B16|AdamR (delta-regularized AdamW)|E
B17|CoRe|E
B18|RPROP (iRprop-)|E
B19|Gravity|E+S(n)
B20|MARS|E+S(n)
C1|Lion|E
C2|Lion-kappa family|E
C3|signSGD / Signum|E
C4|Ano / Anolog|E+S(t)
C5|Grams|E+S(t)
D1|Adafactor|F
D2|CAME|F
D3|SM3|F
D4|AdaLomo|F
D5|LOMO|E+S(n)
D6|SMMF|F
D7|Adam-mini|F
D8|Blockwise Adam|F
D9|SlimAdam|F
D10|Coupled Adam|F
D11|Subset-Norm|F
D12|SCALE|F
D13|SinkGD|F
D14|REG (RACS)|F
D15|AdaFisher|F
E1|Muon|M
E2|AdaMuon|M
E3|NorMuon|M
E4|AdaGO|M
E5|MARS-M|M
E6|Conda|M
E7|Shampoo|M
E8|SOAP|M
E9|COSMOS|M
E10|SWAN|M
E11|GaLore|M
E12|Fira|M
E13|APOLLO / APOLLO-Mini|M
E14|Subspace-Momentum|M
E15|K-FAC|M
E16|Riemannian Adam / AMSGrad / Adagrad|M
E17|Natural-gradient / Hessian-Riemannian GD|M
F1|D-Adaptation|E+S(n)
F2|Prodigy|E+S(n)
F3|DoG / LDoG|E+S(n)
F4|Delta-SGD|E+S(n)
F5|Polyak step size (SPS)|L
F6|ALR-SMAG|L
F7|Polyak step for policy gradient|L
F8|PSPS|L
F9|SANIA|L
F10|MoMo / MoMo-Adam|L
F11|SMB|L
F12|AEGD|L
F13|Safe-step controller|H
F14|SLQ-based LR & momentum learner|H
F15|L-BFGS|L
F16|Stochastic Armijo line search|L
G1|Sophia|H
G2|AdaHessian|H
G3|OASIS|H
G4|FOSI|H
G5|SAM|H
G6|FAD|H
G7|Damped Newton|H
H1|Lookahead|W
H2|Cautious optimizers|W
H3|Ranger21|W
H4|SWATS|W
H5|XGrad|W
H6|BAdam|W
H7|LISA|W
H8|SGG|W
H9|Blockwise LR|W
H10|LAWN|W
H11|AGVM|W
H12|AdAdaGrad|W
H13|Local adaptive methods|W
H14|STEP|W
I1|8-bit optimizers|Q
I2|1-bit Adam|Q
I3|MicroAdam|Q
I4|Distributed Lion|Q
I5|FP8 Adam moments|Q
I6|Compressed-communication baselines|Q
J1|ZO-SGD / MeZO|L
J2|ZO-AdaMU|L
J3|IVON|E
J4|SGLD|E
J5|pSGLD|E
J6|SA-SGLD|E+S(n)
"""

# row id -> (name, class), in catalog order
ROWS: dict[str, tuple[str, str]] = {r: (n, c) for r, n, c in (line.split("|") for line in _ROWS.split("\n") if line)}

# library program -> the catalog row it implements (None: not one of the 127 rows)
PROGRAMS: dict[str, str | None] = {
    "sgd": "A1", "momentum": "A2", "nesterov": "A3", "adagrad": "A4", "adagrad_norm": "A5", "rmsprop": "A6",
    "adadelta": "A7", "adam": "A8", "adamax": "A9", "adamaxw": "A9", "nadam": "A10", "nadamw": "A10",
    "amsgrad": "A11", "adamw": "A12", "sgdw": "A12", "radam": "A13", "adabelief": "A14", "adan": "A15",
    "yogi": "A16", "adamnc": "A19", "lars": "A20", "lamb": "A21",
    "diffgrad": "B1", "adamp": "B2", "adamp_conv": "B2", "sgdp": "B2", "sgdp_conv": "B2", "adabound": "B3",
    "amsbound": "B3", "adamod": "B4", "adamomentum": "B5", "exadam": "B7", "fadam": "B8", "adopt": "B9",
    "ademamix": "B10", "clip_sgd": "B12", "spam": "B13", "stable_spam": "B14", "adamr": "B16", "rprop": "B18",
    "mars": "B20",
    "lion": "C1", "sign_sgd": "C3", "signum": "C3", "ano": "C4", "anolog": "C4", "grams": "C5",
    "adafactor": "D1", "adafactor_unfactored": "D1", "came": "D2", "came_unfactored": "D2", "adam_mini": "D7",
    "blockwise_adam": "D8", "coupled_adam": "D10", "sinkgd": "D13", "racs": "D14", "racs_vector": "D14",
    "muon": "E1", "adamuon": "E2", "normuon": "E3", "adago": "E4", "conda": "E6", "swan": "E10",
    "dadapt_adamw": "F1", "dadapt_sgd": "F1", "dadapt_lion": "F1", "prodigy": "F2", "dog": "F3", "ldog": "F3",
    "dowg": "F3", "delta_sgd": "F4", "polyak_sgd": "F5", "alr_smag": "F6", "momo": "F10", "momo_adam": "F10",
    "aegd": "F12",
    "lookahead_adam": "H1", "cautious_adamw": "H2", "cautious_lion": "H2",
    # not catalog rows (rules users reach for, or the library's own composites)
    "novograd": None, "fromage": None, "qhadam": None, "qhm": None, "aggmo": None, "pid": None, "tiger": None,
    "kate": None, "msvag": None, "laprop": None, "padam": None, "pnm": None, "adapnm": None, "adai": None,
    "madgrad": None, "schedule_free_sgd": None, "schedule_free_adamw": None, "ranger": None, "ranger_conv": None,
    "ranger_vector": None,
}

# D5 (LOMO) is SGD applied per tensor during the backward pass: the update rule is sgd.opt's; the fusion is a
# memory layout the DSL does not need to express.
ALSO_COVERED: dict[str, str] = {"D5": "sgd (LOMO's fusion into the backward pass is a memory trick, not a rule)"}

_H = "needs Hessian-vector products or extra gradient evaluations (the DSL's inputs are g, w, t, loss, lr)"
_Q = "quantized state / compressed communication (class Q): out of scope"
_RNG = "needs random numbers (the DSL has no random input)"
UNCOVERED: dict[str, str] = {
    "A17": "a federated loop (server update on client deltas); the server rules are adagrad/adam/yogi on -delta",
    "A18": "expressible (a queue of n past gradients as n states) but not written yet; details marked unsure",
    "B6": "a buffer of C momenta replaced by priority; details marked unsure in the catalog",
    "B11": "needs atan2 (no such op in the registry)",
    "B15": "learns each tensor's scale along theta with an Eden schedule; details marked unsure",
    "B17": "the catalog has only a sketch (importance-based freezing); not written",
    "B19": "v is initialised from N(0, (alpha/lr)^2): " + _RNG,
    "C2": "a family over a convex kappa; lion is kappa = l1 norm, other elementwise members are one-line edits",
    "D3": "needs row/column max reductions (the registry has row/column means only)",
    "D4": "fused into the backward pass; pytorch_optimizer's AdaLOMO needs a model; not written",
    "D6": "1-bit sign matrix plus rank-1 NNMF of the moments: compressed state (close to class Q)",
    "D9": "chooses the compressed axis per layer from the SNR of v: a data-dependent state layout",
    "D11": "expressible with row statistics; not written yet",
    "D12": "expressible (col_normalize, io fallback for the head); not written yet",
    "D15": "needs layer activations and backpropagated pre-activation gradients",
    "E5": "expressible (mars + orthogonalize); not written yet",
    "E7": "needs (m x m) and (n x n) statistics and their inverse 4th roots: state not shaped like the parameter",
    "E8": "needs eigenbases of (m x m)/(n x n) statistics (QR power iteration): state not shaped like the parameter",
    "E9": "needs a rank-r eigensubspace of EMA(G G^T) by power iteration",
    "E11": "needs a rank-r SVD projector (the registry's svd_basis is full-rank)",
    "E12": "needs GaLore's rank-r projector",
    "E13": "needs random projections: " + _RNG,
    "E14": "needs a rank-r projector (SVD or random)",
    "E15": "needs layer activations and backpropagated signals",
    "E16": "needs manifold exponential maps and parallel transport",
    "E17": "needs the metric (Fisher or Hessian of a mirror map) and its inverse; the diagonal case is Adam-like",
    "F7": "policy-gradient ascent with an online estimate of J*; details marked unsure",
    "F8": "expressible with the Adam/AdaGrad preconditioner (not written yet); the Hutchinson variant " + _H,
    "F9": "expressible with the AdaGrad-SQR/Adam-SQR preconditioner; not written yet",
    "F11": "needs the loss and gradient at a trial point: " + _H,
    "F13": "needs a JVP of the logits through the model: " + _H,
    "F14": "needs stochastic Lanczos quadrature: " + _H,
    "F15": "needs a line search (extra loss evaluations)",
    "F16": "needs backtracking (extra loss evaluations at trial points)",
    "G1": _H, "G2": _H, "G3": _H, "G4": _H, "G5": _H, "G6": _H, "G7": _H,
    "H3": "Ranger21's eight components (PNM, norm loss, stable decay, warm-down ...) not written; ranger.opt is its "
          "predecessor Ranger (RAdam + Lookahead + centralization)",
    "H4": "a group-wide switch to SGD chosen by the last parameter that passes the test: order-dependent",
    "H5": "needs the gradient at an extrapolated point: " + _H,
    "H6": "block-coordinate cycling over layers with state resets: a partition across leaves",
    "H7": "samples layers to unfreeze: " + _RNG,
    "H8": "online clustering of gradient statistics; details marked unsure",
    "H9": "per-block-type learning rates: a parameter partition (optax.multi_transform around a program)",
    "H10": "a phase switch plus a projection of chosen layers: a wrapper, not a rule",
    "H11": "needs sub-batch gradients (gradient variance across sub-batches)",
    "H12": "a batch-size controller (needs per-example gradients)",
    "H13": "a distributed loop (local steps, then averaging)",
    "H14": "learns N:M sparsity masks (SR-STE) around a frozen-variance Adam",
    "I1": _Q, "I2": _Q, "I3": _Q, "I4": _Q, "I5": _Q, "I6": _Q,
    "J1": "needs loss values at perturbed points: " + _RNG,
    "J2": "needs loss values at perturbed points: " + _RNG,
    "J3": "needs the gradient at a sampled point: " + _RNG,
    "J4": _RNG, "J5": _RNG, "J6": _RNG + "; details marked unsure",
}


def covered_rows(programs: list[str]) -> dict[str, list[str]]:
    """Catalog row -> the library programs implementing it (plus ALSO_COVERED rows, as their note)."""
    out: dict[str, list[str]] = {}
    for p in programs:
        if PROGRAMS.get(p):
            out.setdefault(PROGRAMS[p], []).append(p)
    for row, note in ALSO_COVERED.items():
        out.setdefault(row, []).append(note)
    return out


def check(programs: list[str]) -> None:
    """Every library program is classified and every catalog row is either covered or has a reason."""
    missing = sorted(set(programs) - set(PROGRAMS))
    if missing:
        raise ValueError(f"benchmarks/library_catalog.py: PROGRAMS lacks {missing} (map each to its row or None)")
    rows = covered_rows(programs)
    unexplained = [r for r in ROWS if r not in rows and r not in UNCOVERED]
    both = [r for r in UNCOVERED if r in rows]
    if unexplained or both:
        raise ValueError(f"benchmarks/library_catalog.py: rows without a program or a reason {unexplained}; rows "
                         f"both covered and listed as uncovered {both}")
    assert len(ROWS) == 127, len(ROWS)
