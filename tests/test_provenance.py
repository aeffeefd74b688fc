"""Every run directory says what made it (provenance.json, the "made by" block), and long phases show
progress on stderr instead of waiting silently."""
import datetime
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import time

import jax
import yaml

from metaopt import provenance
from metaopt.cli import main
from metaopt.progress import Ticker, progress_bar

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORE = ("jax", "jaxlib", "flax", "optax", "numpy", "ray", "tensorboard")


def assert_complete(record: dict, argv: list[str]) -> None:
    """Every field the issue asks for, checked against an independent source where one exists."""
    assert record["argv"] == argv
    started = datetime.datetime.fromisoformat(record["started"])
    assert started.tzinfo is not None
    assert abs((datetime.datetime.now(datetime.timezone.utc) - started).total_seconds()) < 600
    versions = record["packages"]
    assert versions["python"] == platform.python_version()
    for name in CORE:
        assert versions[name] == importlib.metadata.version(name), name
    m = record["machine"]
    assert m["cpu_count"] == os.cpu_count() and 1 <= m["cpus_usable"] <= m["cpu_count"]
    assert m["platform"] == platform.platform()
    assert m["jax_backend"] == jax.default_backend()
    assert len(m["jax_devices"]) == len(jax.devices())
    head = _git_head()
    if head is None:            # not run from a git checkout: the record says so instead of failing
        assert record["git"]["commit"] is None and record["git"]["note"]
    else:
        assert record["git"]["commit"] == head and isinstance(record["git"]["dirty"], bool)


def _git_head():
    if shutil.which("git") is None:
        return None
    done = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def test_write_provenance_records_every_field_and_keeps_earlier_calls(tmp_path):
    first = provenance.write_provenance(tmp_path, argv=["metaopt", "search", "--out", "x"])
    assert_complete(first, ["metaopt", "search", "--out", "x"])
    provenance.write_provenance(tmp_path, argv=["metaopt", "search", "--resume", "x"])
    again = provenance.load_provenance(tmp_path)
    assert again["argv"][-2:] == ["--resume", "x"]
    assert [r["argv"][-2:] for r in again["earlier"]] == [["--out", "x"]]
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]    # written atomically
    block = provenance.made_by(again)
    assert "metaopt search --resume x" in block and f"jax {jax.__version__}" in block
    assert "1 earlier call(s)" in block and "metaopt search --out x" in block
    if again["git"]["commit"]:
        assert again["git"]["commit"][:12] in block


def test_git_degrades_gracefully(tmp_path, monkeypatch):
    monkeypatch.setattr(provenance, "_REPO_ROOT", tmp_path)          # a directory that is no checkout
    assert provenance.git_state() == {"commit": None, "dirty": None, "root": str(tmp_path),
                                      "note": "not a git checkout"}
    monkeypatch.setenv("PATH", str(tmp_path))                          # no git program at all
    assert provenance.git_state()["commit"] is None
    record = provenance.collect(["metaopt", "eval"])
    assert "not a git checkout" in provenance.made_by(record)


def test_ticker_redraws_a_waiting_bar(capsys):
    """A bar blocked on one long step still redraws (its clock moves); a disabled bar stays silent."""
    bar = progress_bar(3, "waiting", postfix="compiling")
    before = capsys.readouterr().err.count("\r")
    with Ticker(bar, interval=0.05):
        time.sleep(0.5)
    redraws = capsys.readouterr().err.count("\r")
    bar.close()
    capsys.readouterr()
    assert redraws >= 4, redraws
    quiet = progress_bar(3, "quiet", enabled=False)
    with Ticker(quiet, interval=0.01):
        time.sleep(0.1)
    assert capsys.readouterr().err == "" and before >= 1


def _tiny_search_config(tmp_path) -> str:
    with open(os.path.join(ROOT, "configs", "search", "smoke.yaml")) as fh:
        cfg = yaml.safe_load(fh)
    cfg.update(workers=0, population=4, tournament=2, batch_size=4, checkpoint_every=4,
               budget={"evaluations": 4})
    cfg["tasks"].update(steps=20, eval_every=20, lr_grid=[1e-2, 1e-1, 1.0])
    cfg["funnel"] = {"enabled": False}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_search_records_provenance_and_shows_baseline_progress(tmp_path, monkeypatch, capsys):
    """`metaopt search` in-process (no Ray): baselines tune under their own bar before the search bar,
    and the run directory's provenance.json and summary.md say what made it."""
    out = str(tmp_path / "run")
    argv = ["metaopt", "search", "--config", _tiny_search_config(tmp_path), "--out", out, "--no-polish"]
    monkeypatch.setattr(sys, "argv", argv)
    assert main(argv[1:]) == 0
    captured = capsys.readouterr()
    err = captured.err.replace("\r", "\n")
    assert "baselines: 100%" in err and "2/2" in err and "search/adamw/smoke_quadratic: lr" in err
    assert err.index("baselines: 100%") < err.index("search:")      # the search bar starts after them
    assert_complete(provenance.load_provenance(out), argv)
    summary = open(os.path.join(out, "summary.md")).read()
    assert "## Made by" in summary and "`metaopt search --config" in summary
    assert "## Made by" in captured.out                                  # printed, not only written
    with open(os.path.join(out, "summary.json")) as fh:
        assert json.load(fh)["provenance"]["argv"] == argv


def test_eval_and_meta_train_record_provenance(tmp_path, monkeypatch, capsys):
    """The other two commands with run directories, each on its smallest setting (meta-training
    stops before its first step: its provenance is written before the workers compile anything)."""
    out = str(tmp_path / "eval")
    argv = ["metaopt", "eval", "sgd", "--tasks", "smoke_quadratic", "--steps", "20", "--no-ray", "--out", out]
    monkeypatch.setattr(sys, "argv", argv)
    assert main(argv[1:]) == 0
    captured = capsys.readouterr()
    assert "made by:" in captured.out and "eval cells: 100%" in captured.err.replace("\r", "\n")
    assert "running sgd on smoke_quadratic" in captured.err             # the cell in flight is named
    assert_complete(provenance.load_provenance(out), argv)
    assert "## Made by" in open(os.path.join(out, "summary.md")).read()
    with open(os.path.join(out, "results.json")) as fh:
        assert json.load(fh)["provenance"]["argv"] == argv

    from metaopt.meta.config import EstimatorConfig, LOptConfig, MetaConfig
    from metaopt.meta.trainer import meta_train, summary
    cfg = MetaConfig(name="t", steps=2, task_pool=1, families=["quadratic"], lopt=LOptConfig("mlp", {"hidden_size": 4}),
                     estimator=EstimatorConfig(kind="pes", num_particles=2, unroll_length=5, reset_every=2))
    run_dir = str(tmp_path / "meta")
    monkeypatch.setattr(sys, "argv", ["metaopt", "meta-train", "--out", run_dir])
    result = meta_train(cfg, run_dir, progress=False, log=False, stop_after=0)
    assert_complete(provenance.load_provenance(run_dir), ["metaopt", "meta-train", "--out", run_dir])
    assert "made by:" in summary(result) and "metaopt meta-train --out" in summary(result)


def test_main_job_passes_every_argument_metaopt_search_reads():
    """`metaopt run` calls the search command with a hand-built namespace: it must carry every option
    the search parser defines (a new search flag once crashed the main job with AttributeError)."""
    import argparse
    from metaopt.commands import run as run_cmd, search as search_cmd

    parser = argparse.ArgumentParser()
    search_cmd.add_arguments(parser)
    expected = set(vars(parser.parse_args(["--config", "c.yaml"])))
    built = set(vars(run_cmd.search_namespace("c.yaml", "out", None)))
    assert expected <= built, f"missing in the main job's search arguments: {sorted(expected - built)}"
