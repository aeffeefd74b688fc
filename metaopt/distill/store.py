"""The imitation-data format: a :class:`Recording` of a teacher optimizer's trajectories, one ``.npz`` file.

A recording holds, per *trajectory* (one task trained from one seed by the teacher), a fixed random sample of
each parameter tensor's elements (see :func:`metaopt.distill.record.sample_leaf`) concatenated into one flat
vector of ``N`` elements, exactly as the batched interpreter lays leaves out (:class:`metaopt.interpret.Layout`)::

    g        float32 [T, N]     gradient at every step t = 1..T (the replay needs all of them)
    w        float32 [T, N]     parameters the step-t update was computed at (before it is applied)
    loss     float32 [T]        minibatch loss at w (what the teacher got as ``value=``)
    steps    int32   [K]        the recorded steps (1-based), every ``every``-th from t = 1
    u        float32 [K, N]     the teacher's update direction there: u = -(applied change) / learning rate,
                                the DSL's sign convention (a program returning u moves w by -lr * u)
    features F-dtype [K, F, N]  EMAs a program could keep (header ``features`` names them)
    idx      int32   [N]        each element's flat index inside its tensor

Arrays are stored under ``"<trajectory>/<name>"``; the JSON header (``header``, a uint8 array) names the teacher
(and its digest), tasks, seeds, steps, the per-leaf layout and the feature names. :func:`save` writes the zip
with fixed timestamps and a fixed entry order, so the same recording gives the same bytes.
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
import zipfile
from typing import Any

import numpy as np

from metaopt.io import atomic_write_bytes

FORMAT = "metaopt-distill-recording/1"
ARRAYS = ("g", "w", "loss", "steps", "u", "features", "idx")
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)    # the earliest time a zip entry can carry: no wall clock in the bytes


@dataclasses.dataclass(frozen=True)
class LeafSample:
    """Where one parameter tensor's sample lives in a trajectory's flat vector."""
    path: str                       # '/'-joined key path (metaopt.leaf_io.leaf_paths)
    shape: tuple[int, ...]          # the tensor's own shape
    sample_shape: tuple[int, ...]   # the sample's shape (same ndim; a sub-block for matrices)
    offset: int                     # first element in the flat vector
    io: bool                        # the leaf is under the task's io_paths (input/output layers)

    @property
    def size(self) -> int:
        return int(np.prod(self.sample_shape, dtype=np.int64))


@dataclasses.dataclass(frozen=True, eq=False)
class Trajectory:
    """One task trained from one seed by the teacher (arrays: see the module docstring)."""
    task: str
    seed: int
    leaves: tuple[LeafSample, ...]
    g: np.ndarray
    w: np.ndarray
    loss: np.ndarray
    steps: np.ndarray
    u: np.ndarray
    features: np.ndarray
    idx: np.ndarray

    @property
    def n(self) -> int:
        return int(self.g.shape[1])

    @property
    def num_steps(self) -> int:
        return int(self.g.shape[0])

    @property
    def sample_shapes(self) -> tuple[tuple[int, ...], ...]:
        return tuple(leaf.sample_shape for leaf in self.leaves)

    @property
    def segments(self) -> np.ndarray:
        """int32 [N]: the leaf each flat element belongs to."""
        return np.repeat(np.arange(len(self.leaves), dtype=np.int32), [leaf.size for leaf in self.leaves])

    def split(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """A flat ``[..., N]`` array as ``{path: [..., *sample_shape]}`` (the replay's parameter tree)."""
        return {leaf.path: flat[..., leaf.offset:leaf.offset + leaf.size].reshape(flat.shape[:-1] + leaf.sample_shape)
                for leaf in self.leaves}


@dataclasses.dataclass(frozen=True, eq=False)
class Recording:
    """A teacher's trajectories and the header describing how they were recorded."""
    header: dict[str, Any]
    trajectories: tuple[Trajectory, ...]

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(self.header["features"])

    @property
    def learning_rate(self) -> float:
        return float(self.header["learning_rate"])

    def feature(self, traj: Trajectory, name: str) -> np.ndarray:
        """``[K, N]`` float32 values of feature ``name`` (e.g. ``"m0.9"``) at the recorded steps."""
        if name not in self.features:
            raise KeyError(f"recording has no feature {name!r}; it has {', '.join(self.features)}")
        return np.asarray(traj.features[:, self.features.index(name)], np.float32)


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def _header_json(rec: Recording) -> dict[str, Any]:
    trajs = [{"task": t.task, "seed": t.seed, "steps": t.num_steps, "n": t.n,
              "leaves": [{"path": leaf.path, "shape": list(leaf.shape), "sample_shape": list(leaf.sample_shape),
                          "offset": leaf.offset, "io": leaf.io} for leaf in t.leaves]}
             for t in rec.trajectories]
    return {**rec.header, "format": FORMAT, "trajectories": trajs}


def save(rec: Recording, path: str | os.PathLike) -> None:
    """Write ``rec`` to ``path`` (an ``.npz`` numpy can ``np.load``), byte-identically for equal recordings."""
    header = json.dumps(_header_json(rec), sort_keys=True, indent=1).encode()
    entries = [("header", np.frombuffer(header, np.uint8))]
    for i, t in enumerate(rec.trajectories):
        entries += [(f"{i}/{name}", getattr(t, name)) for name in ARRAYS]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, arr in entries:
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_TIME)
            info.compress_type, info.external_attr = zipfile.ZIP_DEFLATED, 0o644 << 16
            zf.writestr(info, _npy_bytes(arr))
    atomic_write_bytes(path, buf.getvalue())


def load(path: str | os.PathLike) -> Recording:
    """Read a recording written by :func:`save`; a file of another kind raises ``ValueError`` naming it."""
    path = os.fspath(path)
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: not a distillation recording (expected an .npz written by "
                         f"metaopt.distill.record): {e}") from None
    with npz:
        if "header" not in npz.files:
            raise ValueError(f"{path}: no 'header' entry; expected a {FORMAT} recording")
        header = json.loads(bytes(npz["header"]).decode())
        if header.get("format") != FORMAT:
            raise ValueError(f"{path}: format {header.get('format')!r}, expected {FORMAT!r}")
        trajs = []
        for i, t in enumerate(header.pop("trajectories")):
            missing = [n for n in ARRAYS if f"{i}/{n}" not in npz.files]
            if missing:
                raise ValueError(f"{path}: trajectory {i} ({t['task']}) lacks array(s) {', '.join(missing)}")
            leaves = tuple(LeafSample(d["path"], tuple(d["shape"]), tuple(d["sample_shape"]), int(d["offset"]),
                                      bool(d["io"])) for d in t["leaves"])
            trajs.append(Trajectory(t["task"], int(t["seed"]), leaves, **{n: npz[f"{i}/{n}"] for n in ARRAYS}))
    return Recording(header, tuple(trajs))
