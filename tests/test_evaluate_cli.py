"""The `metaopt eval` command: help, a config-driven run, and (slow) the smoke suite end to end."""
import json
import os
import subprocess
import sys

import pytest

from metaopt.cli import main


def test_eval_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["eval", "--help"])
    assert e.value.code == 0
    assert "--suite" in capsys.readouterr().out


def test_eval_bad_spec_is_a_clean_error(capsys):
    assert main(["eval", "optax:not_an_optimizer", "--suite", "smoke", "--no-ray", "--out", "/nonexistent/x"]) == 2
    assert "optax has no optimizer" in capsys.readouterr().out


def test_baselines_config_loads():
    from metaopt.commands.eval import add_arguments, build_config
    import argparse

    p = argparse.ArgumentParser()
    add_arguments(p)
    full = build_config(p.parse_args(["--config", "configs/eval/baselines.yaml"]))
    assert {"adamw", "adam", "lion", "muon", "momentum"} <= set(full.optimizers) and full.suite == "heldout"
    cfg = build_config(p.parse_args(["--config", "configs/eval/heldout-quick.yaml", "--tasks",
                                     "smoke_quadratic,smoke_linreg", "--steps", "50"]))
    assert len(cfg.optimizers) >= 12 and {"adamw", "muon", "dog"} <= set(cfg.optimizers)
    assert cfg.suite == "heldout-quick"
    assert cfg.tasks == ["smoke_quadratic", "smoke_linreg"] and cfg.steps == 50 and cfg.grid_points >= 9 and cfg.tune_seeds >= 2
    # the library's table shares heldout-quick's run directory: the same protocol, its 12 baselines and 18 more
    lib = build_config(p.parse_args(["--config", "configs/eval/library-quick.yaml"]))
    protocol = lambda c: (c.suite, c.seeds, c.tune_seeds, c.grid_points, c.grid_factor, c.max_widen, c.reference)
    assert protocol(lib) == protocol(build_config(p.parse_args(["--config", "configs/eval/heldout-quick.yaml"])))
    assert len(set(lib.optimizers)) == len(lib.optimizers) >= 30 and set(cfg.optimizers) <= set(lib.optimizers)


@pytest.mark.slow
def test_eval_smoke_end_to_end(tmp_path):
    """`metaopt eval adamw lion --suite smoke` (one small task, short horizon) prints the summary table."""
    out = tmp_path / "smoke"
    cmd = [sys.executable, "-m", "metaopt.cli", "eval", "adamw", "lion", "--suite", "smoke",
           "--tasks", "smoke_quadratic", "--steps", "40", "--no-ray", "--no-progress",
           "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=os.getcwd())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| optimizer | smoke_quadratic |" in proc.stdout and "| adamw | 1.000 |" in proc.stdout
    data = json.loads((out / "results.json").read_text())
    assert {c["optimizer"] for c in data["cells"]} == {"adamw", "lion"}
    assert (out / "profile.png").exists() and (out / "curves_smoke_quadratic.png").exists()
