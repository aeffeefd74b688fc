"""Export a learned optimizer as a standalone PyTorch module plus a safetensors weights file.

The module is the text of :mod:`metaopt.learned.torch_kernels` (torch + math only) plus constants and a
``load_weights`` reading the ``.safetensors`` file beside it (tensors only, no pickled code)::

    write_torch_export("checkpoints/lopt/mlp16-pes-full", "my_lopt.py")   # my_lopt.py + my_lopt.safetensors

    from my_lopt import optimizer
    opt = optimizer(model.parameters(), lr_multiplier=1.0)
"""
from __future__ import annotations

import inspect
import os

import numpy as np

from metaopt.io import atomic_write_bytes
from metaopt.learned import torch_kernels
from metaopt.learned.export import load_lopt
from metaopt.learned.source import write_beside

_TEMPLATE = '''

# ---------------------------------------------------------------- exported by metaopt
# Learned optimizer {arch!r} exported from {origin!r}.
ARCHITECTURE = {arch!r}
HYPERPARAMS = {hp!r}
WEIGHTS_FILE = {weights!r}


def load_weights(path=None):
    """The meta-trained weights (name -> float32 tensor) from the .safetensors file beside this module."""
    import os as _os
    from safetensors.torch import load_file
    return load_file(path or _os.path.join(_os.path.dirname(_os.path.abspath(__file__)), WEIGHTS_FILE))


def optimizer(params, lr_multiplier=1.0, weights_path=None):
    """The learned optimizer as a torch.optim.Optimizer over ``params``."""
    return LearnedOptimizer(params, load_weights(weights_path), ARCHITECTURE, HYPERPARAMS, lr_multiplier)
'''


def torch_export_source(path: str | os.PathLike, weights_file: str = "lopt_weights.safetensors") -> str:
    """The standalone torch module's source; it loads ``weights_file`` from its own directory."""
    lopt, _ = load_lopt(path)
    body = inspect.getsource(torch_kernels).replace(
        '"""PyTorch port', f'"""Learned optimizer {lopt.name!r} exported by metaopt. PyTorch port', 1)
    hp = {k: (list(v) if isinstance(v, tuple) else v) for k, v in lopt.hyperparams().items()}
    return body + _TEMPLATE.format(arch=lopt.name, origin=os.fspath(path), hp=hp, weights=weights_file)


def export_safetensors(path: str | os.PathLike, out: str | os.PathLike) -> None:
    """θ as a flat safetensors file (float32 tensors named as in θ["params"])."""
    import torch
    from safetensors.torch import save
    _, theta = load_lopt(path)
    tensors = {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in theta["params"].items()}
    atomic_write_bytes(out, save(tensors, metadata={"format": "metaopt-lopt-torch/1"}))


def write_torch_export(path: str | os.PathLike, out_py: str | os.PathLike) -> tuple[str, str]:
    """Write ``out_py`` and its weights ``<stem>.safetensors`` beside it; returns both paths."""
    return write_beside(path, out_py, ".safetensors", export_safetensors, torch_export_source)
