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
    "shampoo": "E7", "soap": "E8", "cosmos": "E9", "galore": "E11", "fira": "E12", "subspace_momentum": "E14",
    "dadapt_adamw": "F1", "dadapt_sgd": "F1", "dadapt_lion": "F1", "prodigy": "F2", "dog": "F3", "ldog": "F3",
    "dowg": "F3", "delta_sgd": "F4", "polyak_sgd": "F5", "alr_smag": "F6", "momo": "F10", "momo_adam": "F10",
    "aegd": "F12",
    "lookahead_adam": "H1", "cautious_adamw": "H2", "cautious_lion": "H2",
    "adashift": "A18", "adam_atan2": "B11", "lion_huber": "C2", "sm3": "D3", "sm3_diag": "D3", "adamw_sn": "D11",
    "scale": "D12", "scale_head": "D12", "mars_m": "E5", "psps_adam": "F8", "sania_adam_sqr": "F9",
    "ranger21": "H3", "ranger21_conv": "H3", "ranger21_vector": "H3", "blockwise_lr": "H9", "blockwise_lr_io": "H9",
    # the random input noise and the objective (h, grad_at; update(..., obj_fn=)), metaopt/dsl/inputs.py
    "sgld": "J4", "psgld": "J5", "gravity": "B19", "lisa": "H7", "ivon": "J3", "sophia": "G1", "adahessian": "G2",
    "oasis": "G3", "sam": "G5", "xgrad": "H5", "psps_hutchinson": "F8",
    # function values at other points (the op loss_at) and quasi-Newton memory as states
    "mezo": "J1", "sls": "F16", "damped_newton": "G7", "lbfgs": "F15", "swats": "H4", "apollo_mini": "E13",
    # not catalog rows (rules users reach for, or the library's own composites)
    "novograd": None, "fromage": None, "qhadam": None, "qhm": None, "aggmo": None, "pid": None, "tiger": None,
    "kate": None, "msvag": None, "laprop": None, "padam": None, "pnm": None, "adapnm": None, "adai": None,
    "madgrad": None, "schedule_free_sgd": None, "schedule_free_adamw": None, "ranger": None, "ranger_conv": None,
    "ranger_vector": None, "adamw_hf": None,
    # PSGD Kron (Li, arXiv:1512.04202; kron_torch's form): no catalog row (seed_catalog.md names Kron only among
    # the optimizers of a benchmark study)
    "kron": None, "kron_diag": None,
}

# D5 (LOMO) is SGD applied per tensor during the backward pass: the update rule is sgd.opt's; the fusion is a
# memory layout the DSL does not need to express.
ALSO_COVERED: dict[str, str] = {"D5": "sgd (LOMO's fusion into the backward pass is a memory trick, not a rule)"}

_H = ("needs Hessian-vector products with chosen vectors (the DSL has Hutchinson's diagonal estimate h and "
      "gradients at a point, grad_at, only)")
_Q = "quantized state / compressed communication (class Q): out of scope"
UNCOVERED: dict[str, str] = {
    "A17": "a federated loop (clients' local SGD, then a server step on the pseudo-gradient -delta): the loop is the "
           "method; the server step alone (Adam/AdaGrad/Yogi without bias correction, tau inside) is not written",
    "B6": "a buffer of C momenta replaced by priority (C fixed states and a where would carry it), but the "
          "insertion and priority-decay details are marked unsure in the catalog and no reference code was checked",
    "B15": "learns each tensor's scale along theta with an Eden schedule; details marked unsure",
    "B17": "the catalog has only a sketch (importance-based freezing); not written",
    "D4": "fused into the backward pass; pytorch_optimizer's AdaLOMO needs a model; not written",
    "D6": "1-bit sign matrix plus rank-1 NNMF of the moments: compressed state (close to class Q)",
    "D9": "chooses the compressed axis per layer from the SNR of v: a data-dependent state layout",
    "D15": "needs layer activations and backpropagated pre-activation gradients",
    "E15": "needs layer activations and backpropagated signals",
    "E16": "needs manifold exponential maps and parallel transport",
    "E17": "needs the metric (Fisher or Hessian of a mirror map) and its inverse; the diagonal case is Adam-like",
    "F7": "policy-gradient ascent with an online estimate of J*; details marked unsure",
    "F11": "the catalog marks the model's fit and acceptance test unsure (loss_at and grad_at would carry the "
           "trial point's evaluations)",
    "F13": "needs a JVP of the logits through the model (the model's outputs, not only the scalar objective)",
    "F14": "needs stochastic Lanczos quadrature: " + _H,
    "G4": "needs the top-k Hessian eigenpairs by Lanczos: " + _H,
    "G6": "its first-order flatness term needs a Hessian-vector product at a perturbed point, and the catalog marks "
          "the combination unsure",
    "H6": "block-coordinate cycling over layers with state resets: a partition across leaves",
    "H8": "online clustering of gradient statistics; details marked unsure",
    "H10": "a phase switch plus a projection of chosen layers: a wrapper, not a rule",
    "H11": "needs sub-batch gradients (gradient variance across sub-batches)",
    "H12": "a batch-size controller (needs per-example gradients)",
    "H13": "a distributed loop (local steps, then averaging)",
    "H14": "learns N:M sparsity masks (SR-STE) around a frozen-variance Adam",
    "I1": _Q, "I2": _Q, "I3": _Q, "I4": _Q, "I5": _Q, "I6": _Q,
    "J2": "the catalog marks the perturbation's alpha_t schedule and covariance update unsure (noise and loss_at "
          "would carry the SPSA estimate)",
    "J6": "the monitored quantity's auxiliary ODE, psi and the invariant-measure correction are marked unsure in the "
          "catalog (noise and the gradient norm would carry them)",
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
