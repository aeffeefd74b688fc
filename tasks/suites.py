"""The one place the suites are declared (DESIGN.md, "Fair evaluation"). They are pairwise disjoint
(tests/test_tasks_heldout.py checks every pair):

* ``train``: all search and meta-training may see. Cheap (~300 steps, batch <= 128) because search
  trains every candidate on every one of them.
* ``validation``: model selection (the search funnel, meta-training checkpoint choice). Cheap toy
  tasks of kinds and shapes the train suite never draws (the former held-out suite).
* ``heldout``: final reports only, never seen by search or model selection. Workloads of the kinds
  optimizer papers report (transformer and LSTM LMs, ConvNet, ViT, MLP-Mixer, VAE, grokking, sparse
  parity, in-context regression, matrix completion, real tabular data) at horizons where optimizers
  separate; <= 45 minutes per optimizer on 2 cores, tuning included (docs/tasks.md).
* ``heldout-quick``: the same kinds, narrower and shorter (the ``_quick`` twins): <= 5 minutes per
  optimizer on 2 cores, tuning included.
* ``smoke``: tiny tasks for tests.
"""
from __future__ import annotations

# One heldout task per kind; each has a cheaper twin named ``<name>_quick`` in ``heldout-quick``.
HELDOUT_KINDS: tuple[str, ...] = (
    "lm_transformer_stdlib",     # tasks/transformer.py
    "modular_addition",
    "icl_linreg",
    "lm_lstm_stdlib",            # tasks/recurrent.py
    "digits_convnet",            # tasks/vision.py
    "digits_vit",
    "digits_mixer",
    "digits_resmlp",
    "digits_vae",
    "sparse_parity",             # tasks/synthetic.py
    "matrix_completion",
    "diabetes_mlp",              # tasks/tables.py
)

SUITES: dict[str, tuple[str, ...]] = {
    "train": (
        "quadratic_c1e2",
        "quadratic_c1e4",
        "rosenbrock_2d",
        "rosenbrock_2d_noisy",
        "linreg_d32_c1e2",
        "logreg_d32_k4_c1e2",
        "digits_mlp_w32_d1_relu",
        "digits_mlp_w64_d2_relu",
        "digits_mlp_w32_d2_tanh",
        "digits_autoencoder",
    ),
    "validation": (
        "char_lm_stdlib",
        "digits_cnn",
        "digits_mlp_w128_d3_gelu",
        "digits_mlp_w16_d4_elu",
        "breast_cancer_mlp_w32_d2_relu",
        "wine_mlp_w16_d1_tanh",
        "iris_mlp_w16_d2_gelu",
        "linreg_d256_c1e4",          # teacher drawn per run (tasks/regression.py)
        "rosenbrock_100d",           # centre and scale drawn per run (tasks/rosenbrock.py)
    ),
    "heldout": HELDOUT_KINDS,
    "heldout-quick": tuple(f"{name}_quick" for name in HELDOUT_KINDS),
    "smoke": (
        "smoke_quadratic",
        "smoke_rosenbrock",
        "smoke_linreg",
        "smoke_digits_mlp",
        "smoke_digits_cnn",
        "smoke_char_lm",
    ),
}
# Families meta-training samples from (all drawn from train-like distributions, never producing a
# validation or held-out task: see each family's docstring and tests/test_families.py). The last three
# give meta-training the held-out suite's shapes (transformer LM, CNN, recurrent LM) at toy sizes.
TRAIN_FAMILIES: tuple[str, ...] = ("quadratic", "regression", "digits_mlp", "rosenbrock", "char_lm",
                                   "digits_cnn", "char_rnn")
