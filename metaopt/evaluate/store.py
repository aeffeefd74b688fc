"""Per-cell persistence: each finished cell is its own JSON file, written atomically the moment it
finishes, so a killed evaluation loses only the cells in flight and a re-run skips the rest."""
from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Optional

from metaopt.io import atomic_write_json


def cell_path(out: str, optimizer: str, task: str) -> str:
    """``out/cells/<optimizer>__<task>.json``; a short hash keeps specs that slug alike apart."""
    slug = re.sub(r"[^A-Za-z0-9._=-]+", "_", optimizer).strip("_")[:60]
    digest = hashlib.sha256(f"{optimizer}\0{task}".encode()).hexdigest()[:8]
    return os.path.join(out, "cells", f"{slug}__{task}__{digest}.json")


def save_cell(out: str, record: dict) -> str:
    path = cell_path(out, record["optimizer"], record["task"])
    atomic_write_json(path, record)
    return path


def optimizer_digest(spec: str) -> str:
    """A digest of what ``spec`` trains with: the program source (and its fallbacks' sources), the
    learned optimizer's checkpoint files, or optax's version; keyword overrides are part of ``spec``.

    Cells keep it so that editing a library program (say muon's routing) invalidates its old cells
    instead of a re-run silently reusing numbers of the previous rule.
    """
    from metaopt import library
    from metaopt.dsl import parse
    from metaopt.specs import split_kwargs

    head, _ = split_kwargs(spec)
    h = hashlib.sha256(spec.encode())
    if head.startswith("optax:"):
        import optax
        h.update(f"optax {optax.__version__}".encode())
        return h.hexdigest()[:16]
    if head.startswith("lopt:"):
        root = head[len("lopt:"):]
        files = ([os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs] if os.path.isdir(root)
                 else [root])
        for name in sorted(files):
            with open(name, "rb") as fh:
                h.update(os.path.relpath(name, root).encode() + b"\0" + fh.read())
        return h.hexdigest()[:16]
    if os.path.isfile(head):
        with open(head) as fh:
            text = fh.read()
    elif head in library.names():
        text = library.source(head)
    else:   # a custom spec object (tests, the search's funnel): its name is all there is
        return h.hexdigest()[:16]
    seen = set()
    while text is not None:   # the program, then its chain of fallbacks (library programs)
        h.update(text.encode())
        program = parse(text)
        nxt = program.fallback.name if program.fallback is not None else None
        text = library.source(nxt) if nxt is not None and nxt not in seen else None
        seen.add(nxt)
    return h.hexdigest()[:16]


def load_cell(out: str, optimizer: str, task: str, protocol: str, digest: str) -> Optional[dict]:
    """The saved record of a finished cell computed under the same protocol, else ``None``.

    A file from different settings (other steps, seeds, grid) or of a different optimizer (``digest``
    from :func:`optimizer_digest` differs) is not reused: it is recomputed and overwritten, so a
    results table never mixes protocols or versions of a rule.
    """
    path = cell_path(out, optimizer, task)
    try:
        with open(path) as fh:
            record = json.load(fh)
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if (record.get("protocol") != protocol or record.get("optimizer") != optimizer or record.get("task") != task
            or record.get("optimizer_digest") != digest):
        return None
    return record
