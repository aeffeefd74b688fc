"""Export a learned optimizer as a standalone Python module (jax + optax + numpy only).

The module is the text of :mod:`metaopt.learned.kernels` — the very code the package runs — plus
a loader for a ``.npz`` weights file that sits beside it and an ``optimizer(lr_multiplier=1.0)``
function returning the ``optax.GradientTransformation``::

    source = export_source("runs/quick")          # text of the module
    write_export("runs/quick", "my_lopt.py")      # writes my_lopt.py and my_lopt.npz
"""
from __future__ import annotations

import inspect
import io
import os
from typing import Callable

import numpy as np

from metaopt.io import atomic_write_bytes, atomic_write_text
from metaopt.learned import kernels
from metaopt.learned.export import load_lopt, read_spec

_TEMPLATE = '''

# ---------------------------------------------------------------- exported by metaopt
# Learned optimizer {arch!r} exported from {origin!r}.
ARCHITECTURE = {arch!r}
HYPERPARAMS = {hp!r}
WEIGHTS_FILE = {weights!r}


def load_weights(path=None):
    """The meta-trained weights θ from the .npz beside this module (or ``path``)."""
    import os as _os
    path = path or _os.path.join(_os.path.dirname(_os.path.abspath(__file__)), WEIGHTS_FILE)
    with np.load(path) as data:
        return {{k: jnp.asarray(data[k]) for k in data.files}}


def optimizer(lr_multiplier=1.0, weights_path=None):
    """The learned optimizer as an optax.GradientTransformationExtraArgs (pass params to update;
    the minibatch loss as ``value=`` if the rule reads it)."""
    return TRANSFORMS[ARCHITECTURE](load_weights(weights_path), lr_multiplier, **HYPERPARAMS)
'''


def export_source(path: str | os.PathLike, weights_file: str = "lopt_weights.npz") -> str:
    """The standalone module's source; it loads ``weights_file`` from its own directory."""
    lopt, _ = load_lopt(path)
    header = f'"""Standalone learned optimizer exported by metaopt (architecture {lopt.name!r}).\n\n'
    body = inspect.getsource(kernels)
    body = body.replace('"""', header, 1)    # replace the opening of kernels' docstring
    hp = {k: (list(v) if isinstance(v, tuple) else v) for k, v in lopt.hyperparams().items()}
    return body + _TEMPLATE.format(arch=lopt.name, origin=os.fspath(path), hp=hp, weights=weights_file)


def export_weights(path: str | os.PathLike, out_npz: str | os.PathLike) -> None:
    """θ as a flat .npz (numpy only is needed to read it)."""
    _, theta = load_lopt(path)
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in theta["params"].items()})
    atomic_write_bytes(out_npz, buf.getvalue())


def write_beside(path: str | os.PathLike, out_py: str | os.PathLike, suffix: str,
                 write_weights: Callable[[str, str], None], source: Callable[[str, str], str]) -> tuple[str, str]:
    """Write the module ``out_py`` and its weights ``<stem><suffix>`` beside it (the module loads them by that
    file name); returns both paths. Shared by the JAX (``.npz``) and PyTorch (``.safetensors``) exports."""
    out_py = os.fspath(out_py)
    out_w = os.path.splitext(out_py)[0] + suffix
    read_spec(path)          # a bad checkpoint fails before anything is written
    write_weights(path, out_w)
    atomic_write_text(out_py, source(path, os.path.basename(out_w)))
    return out_py, out_w


def write_export(path: str | os.PathLike, out_py: str | os.PathLike) -> tuple[str, str]:
    """Write ``out_py`` and its weights ``<stem>.npz`` beside it; returns both paths."""
    return write_beside(path, out_py, ".npz", export_weights, export_source)
