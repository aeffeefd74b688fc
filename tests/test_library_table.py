"""docs/library.md / docs/library.json (benchmarks/library_table.py) and ``metaopt list --verified``.

The committed table must be current: every library program is in it with the digest of its present source and
passed its references when the table was generated (re-run ``python -m benchmarks.library_table`` after adding or
editing a program). The measuring itself is the reference suites' job (tests/test_library_*.py); here one cheap
program is measured end to end through the script.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys

import pytest

from metaopt import library
from metaopt.cli import main as cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from benchmarks import library_catalog, library_table  # noqa: E402

TABLE = os.path.join(ROOT, "docs", "library.json")


def _table() -> dict:
    with open(TABLE) as f:
        return json.load(f)


def test_catalog_classifies_every_program_and_explains_every_row():
    library_catalog.check(library.names())
    assert len(library_catalog.ROWS) == 127
    with pytest.raises(ValueError, match="PROGRAMS lacks"):
        library_catalog.check(library.names() + ["not_a_program"])


def test_committed_table_is_current_and_passing():
    data = _table()
    rows = {p["program"]: p for p in data["programs"]}
    assert set(rows) == set(library.names()), "re-run python -m benchmarks.library_table"
    stale = [n for n, p in rows.items()
             if p["source_sha256"] != hashlib.sha256(library.source(n).encode()).hexdigest()]
    assert not stale, f"edited since docs/library.json was generated (re-run the generator): {stale}"
    failing = [n for n, p in rows.items() if not p["ok"]]
    assert not failing, f"programs without a passing outside reference: {failing}"
    for p in rows.values():   # a number and a reference for every row
        assert p["references"] and p["worst_error"] is not None, p["program"]
    with open(os.path.join(ROOT, "docs", "library.md")) as f:
        md = f.read()
    assert all(f"| {n} |" in md for n in rows)


def test_list_verified_prints_the_table(capsys):
    assert cli(["list", "--verified"]) == 0
    out = capsys.readouterr().out
    data = _table()
    for p in data["programs"]:
        assert p["program"] in out
    assert f"{len(data['programs'])} optimizers" in out and "of 127" in out


def test_list_verified_without_the_file_says_how_to_make_it(tmp_path, capsys):
    from metaopt.commands import list as list_cmd
    import argparse
    assert list_cmd.run_verified(argparse.Namespace(kind=None), tmp_path / "missing.json") == 1
    assert "benchmarks.library_table" in capsys.readouterr().out


def test_optax_reference_is_read_from_the_header():
    assert library_table.optax_call("clip_sgd") == "optax.chain(optax.clip(c), optax.sgd(lr))"
    assert library_table.optax_call("dowg").startswith("optax.contrib.dowg")


def test_script_measures_a_program(capsys):
    assert library_table.main(["--only", "sign_sgd"]) == 0
    assert "sign_sgd" in capsys.readouterr().out
