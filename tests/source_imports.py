"""The top-level modules a generated source file imports (exported optax and torch modules must stay standalone)."""
from __future__ import annotations

import ast


def imported_modules(src: str) -> set[str]:
    mods: set[str] = set()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Import):
            mods |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            mods.add(node.module.split(".")[0])
    return mods
