"""The helper functions an exported torch module carries (see ``metaopt.export_torch``), and their source.

An exported module needs only torch and math, so the helpers its statements call (``_store``, ``_mask``,
``_normal_like``, ...) are copied into it verbatim from ``metaopt/torch_runtime.py`` and
``metaopt/torch_inputs.py`` (random and objective inputs). Kept apart from the statement generator: this part
knows which helper calls which and reads their text with ``ast``, and knows nothing of programs' statements.
"""
from __future__ import annotations

import ast
import functools
import importlib.util

from metaopt.dsl import ops
from metaopt.dsl.program import Program

# Helpers that call other helpers (one level deep: none of the callees calls a further one).
_CALLS = {"_clip": {"_maximum", "_minimum"}, "_gt": {"_mask"}, "_lt": {"_mask"}, "_ge": {"_mask"},
          "_le": {"_mask"}, "_row_mean": {"_need_matrix"}, "_col_mean": {"_need_matrix"},
          "_row_max": {"_need_matrix"}, "_col_max": {"_need_matrix"}, "_grad_at": {"_closure_at"},
          "_loss_at": {"_closure_at"}}
_MATRIX_VIEW = ("_orthogonalize", "_whiten", "_svd_basis", "_project", "_unproject", "_row_normalize",
                "_col_normalize")   # these work on the parameter seen as a matrix (_as_matrix)


def helper_sources(called: set[str], chain: list[Program]) -> list[str]:
    """The source of every helper the generated statements of ``chain`` call (``called``) or need besides,
    in file order: torch_runtime's, then torch_inputs'."""
    helpers = {"_const", "_grad"} | called
    for h in list(helpers):
        helpers |= _CALLS.get(h, set())
    if any(h in helpers for h in _MATRIX_VIEW):
        helpers.add("_as_matrix")
    if any(ops.get(o).sig for q in chain for o in q.ops_used()):   # major/minor ops: tall view, rank mask
        helpers |= {"_as_matrix", "_tall", "_first_columns", "_sign_fixed"}
    out = []
    for module in ("metaopt.torch_runtime", "metaopt.torch_inputs"):   # torch_inputs: random and objective inputs
        out += [src for name, src in _private_functions(module).items() if name in helpers]
    return out


@functools.lru_cache(maxsize=None)
def _private_functions(module: str) -> dict[str, str]:
    """The source of each top-level ``_name`` function of ``module``, in file order, read from its file.

    Read with ``ast`` rather than imported: those modules import torch, and exporting a program (or importing
    metaopt) must not need the ``torch`` extra (nor pay torch's ~1.5 s import in every worker process).
    """
    path = importlib.util.find_spec(module).origin
    with open(path) as fh:
        text = fh.read()
    return {node.name: ast.get_source_segment(text, node) + "\n"
            for node in ast.parse(text).body
            if isinstance(node, ast.FunctionDef) and node.name.startswith("_")}
