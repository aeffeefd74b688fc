"""Which leaves of a parameter tree belong to the model's input and output layers: the ``io`` leaf quantity
of fallback predicates (``fallback nadam(...) when ndim != 2 or io == 1``, as in muon.opt).

Muon's authors orthogonalize only the hidden weight matrices and train the embeddings, the first layer and
the classifier head with AdamW (K. Jordan et al. 2024, "Muon: An optimizer for hidden layers in neural
networks"). Nothing in a leaf's shape tells an embedding or a head from a hidden matrix, so the optimizer is
told: ``metaopt.to_optax(..., io_paths=...)``, which ``metaopt.train`` fills from ``Task.io_paths``.

A leaf's path is its pytree key path with the keys joined by ``/`` (flax ``{"Dense_0": {"kernel": ...}}``
gives ``"Dense_0/kernel"``). An io path is a prefix of whole keys: ``"Dense_0"`` covers ``Dense_0/kernel`` and
``Dense_0/bias``, but neither ``Dense_01/kernel`` nor ``Block_0/Dense_0/kernel``.

The functions are copied verbatim into modules exported by ``metaopt.export.to_source`` (as
``metaopt/dsl/pyhelpers.py`` is), so only ``jax`` and the standard library may be used here.
"""
import jax


def io_prefixes(io_paths):
    """``io_paths`` checked and normalised to a tuple of ``/``-joined key paths (outer slashes dropped)."""
    if isinstance(io_paths, str):
        raise TypeError(f"io_paths takes a sequence of key-path prefixes such as ('Embed_0', 'head'), "
                        f"not the string {io_paths!r}")
    out = tuple(io_paths)
    for q in out:
        if not isinstance(q, str) or not q.strip("/"):
            raise TypeError(f"io_paths entries must be non-empty '/'-joined key paths (str), got {q!r}")
    return tuple(q.strip("/") for q in out)


def leaf_paths(tree):
    """The ``/``-joined key path of every leaf of ``tree``, in ``jax.tree.leaves`` order."""
    paths = []
    for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]:
        # DictKey (dicts, flax params) and FlattenedIndexKey carry .key, GetAttrKey (NamedTuples) .name,
        # SequenceKey (lists, tuples) .idx
        keys = [getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))) for k in path]
        paths.append("/".join(str(k) for k in keys))
    return paths


def io_leaves(tree, io_paths):
    """Per leaf of ``tree`` (``jax.tree.leaves`` order): whether it lies under one of ``io_paths`` (checked by
    ``io_prefixes``). A path that matches no leaf raises ``ValueError``: a misspelled layer name would
    otherwise silently leave that layer to the main rule."""
    if not io_paths:
        return [False] * len(jax.tree_util.tree_leaves(tree))
    paths = leaf_paths(tree)
    under = lambda p, q: p == q or p.startswith(q + "/")
    for q in io_paths:
        if not any(under(p, q) for p in paths):
            shown = ", ".join(paths[:12]) + (", ..." if len(paths) > 12 else "")
            raise ValueError(f"io path {q!r} matches no parameter (the parameters: {shown or 'none'})")
    return [any(under(p, q) for q in io_paths) for p in paths]
