"""``metaopt distill`` end to end: the smoke config (shrunk) on the shipped learned optimizer, stopped after the
search and resumed; config errors name the key; the fitness rewards imitation (adam as the teacher)."""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import yaml

from metaopt.cli import main
from metaopt.config import ConfigError
from metaopt.distill import store
from metaopt.distill.config import load_distill_config
from metaopt.dsl import parse
from metaopt.scoring import distill_fitness
from search.state import SearchState

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(ROOT, "configs", "distill", "smoke.yaml")
TEACHER = "lopt:" + os.path.join(ROOT, "checkpoints", "lopt", "mlp16-nominal-pes-valid")
# The smoke config shrunk to seconds: one tiny train task, one small validation task, 30 steps, 8 evaluations.
TINY = {"record": {"per_tensor": 16},
        "seeds": {"count": 2},
        "refit": {"top_k": 1, "iters": 10},
        "search": {"population": 4, "tournament": 2, "batch_size": 4, "checkpoint_every": 4, "top_programs": 2,
                   "budget": {"evaluations": 8},
                   "tasks": {"names": ["quadratic_c1e2"], "steps": 30, "eval_every": 10},
                   "funnel": {"tasks": ["rosenbrock_100d"], "steps": 30, "min_judged": 4}}}


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(base.get(k, {}), v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def _config(tmp_path, *overs: dict) -> str:
    with open(SMOKE) as fh:
        cfg = yaml.safe_load(fh)
    for o in overs:
        cfg = _merge(cfg, o)
    path = tmp_path / "distill.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _sgd_cos_error(rec: store.Recording) -> float:
    """sgd's imitation error from the raw recording, by hand: its direction at step t is g_t, so per
    (trajectory, tensor) it is mean_k (1 - cos(g_{t_k}, u_k)) over the steps where u != 0."""
    errs = []
    for traj in rec.trajectories:
        g = traj.g[traj.steps - 1].astype(np.float64)
        u = traj.u.astype(np.float64)
        for leaf in traj.leaves:
            sl = slice(leaf.offset, leaf.offset + leaf.size)
            per_step = [1 - gk @ uk / (np.linalg.norm(gk) * np.linalg.norm(uk))
                        for gk, uk in zip(g[:, sl], u[:, sl]) if np.any(uk != 0)]
            if per_step:
                errs.append(np.mean(per_step))
    return float(np.mean(errs))


class Stop(Exception):
    """Raised where the first process is "killed"."""


def test_smoke_end_to_end_stopped_after_the_search_and_resumed(tmp_path, monkeypatch, capsys):
    from metaopt.distill import refit
    cfg, run = _config(tmp_path, TINY), tmp_path / "run"
    args = ["distill", TEACHER, "--config", cfg, "--out", str(run), "--no-progress"]

    def stop(*a, **k):
        raise Stop
    monkeypatch.setattr(refit, "refit", stop)
    with pytest.raises(Stop):
        main(args)
    before = SearchState.load(run)
    assert before.finished and before.counters["evaluations"] == 8 and len(before.funnel) >= 2
    recorded = (run / "recording" / "train.npz").read_bytes()
    # The initial population: the library rules closest to the teacher, judged as initial programs.
    from metaopt import library
    from search import programs
    rows = [r for r in json.loads((run / "seeds.json").read_text())["rows"] if r["fits"]]
    assert [r["cos"] for r in rows] == sorted(r["cos"] for r in rows) and len(rows) > 10
    for r in rows[:2]:
        assert before.judged[programs.fingerprint(programs.simplify(library.get(r["name"])))]["mutation"] == "init"
    assert not (run / "report.json").exists() and not (run / "refit.json").exists()
    assert main(args) == 2 and "--resume" in capsys.readouterr().out          # refuses to start over it
    monkeypatch.undo()

    assert main(["distill", TEACHER, "--out", str(run), "--resume", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "resuming" in out and out.count("distill: reusing") == 2
    assert (run / "recording" / "train.npz").read_bytes() == recorded
    after = SearchState.load(run)
    assert after.judged == before.judged and after.counters == before.counters     # the search was not redone

    rep = json.loads((run / "report.json").read_text())
    sel = rep["selection"]
    chosen = sel["rows"][sel["chosen"]]
    assert chosen["validation"]["fitness"] == min(r["validation"]["fitness"] for r in sel["rows"])
    assert len(sel["rows"]) >= 2 and all(r["validation"]["fitness"] < 4 for r in sel["rows"])
    assert rep["refit"] and all(r["after"] <= r["before"] for r in rep["refit"].values())
    distilled = parse((run / "distilled.opt").read_text())
    assert distilled.name == "distilled" and str(distilled) == rep["program"]["text"]
    assert (run / "distilled.tex").read_text().startswith("\\begin{aligned}")
    assert "def " in (run / "distilled.py").read_text()
    # The report's numbers come from the recordings: sgd's error recomputed by hand from the raw arrays.
    rec = store.load(run / "recording" / "train.npz")
    assert rec.header["teacher"]["kind"] == "lopt" and rec.header["tasks"] == ["quadratic_c1e2"]
    assert rep["imitation"]["train"]["sgd"]["cos"] == pytest.approx(_sgd_cos_error(rec), rel=1e-4)
    valid = store.load(run / "recording" / "validation.npz")
    assert valid.header["tasks"] == ["rosenbrock_100d"] and valid.header["seeds"] == [1000]
    r2 = rep["imitation"]["validation"]["distilled"]["r2"]
    for bins in r2.values():      # every regime partitions the recorded elements
        assert sum(b["fraction"] for b in bins.values()) == pytest.approx(1.0)
    md = (run / "report.md").read_text()
    assert "## Fidelity per feature regime" in md and "\\|g\\|" in md and "**chosen**" in md
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(run / "tb"))
    prov = json.loads((run / "provenance.json").read_text())
    assert len(prov["earlier"]) == 1          # the resumed call added its record, keeping the first one


def test_malformed_config_names_the_key(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"distill.yaml:\d+:\d+: fitness.imitation: a weight must be >= 0"):
        load_distill_config(_config(tmp_path, {"fitness": {"imitation": -1}}))
    with pytest.raises(ConfigError, match=r"refit.iterations: unknown key.*did you mean iters"):
        load_distill_config(_config(tmp_path, {"refit": {"iterations": 3}}))
    with pytest.raises(ConfigError, match=r"search.hurdle.enabled: distill judges every candidate on one stage"):
        load_distill_config(_config(tmp_path, {"search": {"hurdle": {"enabled": True}}}))
    with pytest.raises(ConfigError, match=r"seeds.candidates\[1\]: unknown library rule 'adamm'"):
        load_distill_config(_config(tmp_path, {"seeds": {"candidates": ["sgd", "adamm"]}}))
    with pytest.raises(ConfigError, match=r"heldout.suite: suite 'validation' is not allowed"):
        load_distill_config(_config(tmp_path, {"heldout": {"suite": "validation", "tasks": []}}))
    bad = _config(tmp_path, {"search": {"funnel": {"enabled": False}}})
    assert main(["distill", TEACHER, "--config", bad, "--out", str(tmp_path / "r")]) == 2
    assert "search.funnel.enabled" in capsys.readouterr().out and not (tmp_path / "r").exists()


def test_distill_fitness_formula():
    # F = 4 (w_i E / E_max + w_t log(4 T) / log 16) / (w_i + w_t), against hand-computed values
    assert distill_fitness(0.0, 2.0, 0.25, 1, 1) == 0.0
    assert distill_fitness(2.0, 2.0, 4.0, 1, 1) == 4.0
    assert distill_fitness(0.5, 2.0, 1.0, 1, 1) == pytest.approx(4 * (0.25 + 0.5) / 2)
    assert distill_fitness(0.3, 1.0, None, 2, 0) == pytest.approx(1.2)
    assert distill_fitness(math.nan, 2.0, 2.0, 1, 3) == pytest.approx(4 * (1 + 3 * 0.75) / 4)


def test_the_search_rewards_imitation(tmp_path):
    """Adam (a DSL program) as the teacher, imitation only, evolution from `sgd` alone: the best imitation
    error found is below sgd's, and every fitness is 4 E / E_max (the formula with task weight 0)."""
    cfg = _config(tmp_path, TINY, {"fitness": {"task": 0.0}, "seeds": {"count": 1, "candidates": ["sgd"]},
                                   "search": {"population": 8, "tournament": 3, "budget": {"evaluations": 64},
                                              "batch_size": 8}})
    run = tmp_path / "run"
    assert main(["distill", "adam", "--config", cfg, "--out", str(run), "--no-progress"]) == 0
    st = SearchState.load(run)
    assert not (run / "baselines.json").exists()          # no task term: no tuned baselines
    imit = {fp: r["scores"]["imitation"] for fp, r in st.judged.items()}
    for fp, r in st.judged.items():
        if imit[fp] is not None:
            assert r["fitness"] == pytest.approx(4 * imit[fp] / 2)
    rep = json.loads((run / "report.json").read_text())
    sgd = rep["imitation"]["train"]["sgd"]["cos"]
    assert sgd > 0.05
    # Rescalings of g and weak momenta score within 0.001 of sgd; 5 % below it is a different direction.
    assert min(e for e in imit.values() if e is not None) < 0.95 * sgd


def test_heldout_frees_the_search_workers_before_evaluating(monkeypatch):
    """With Ray workers the search's actors hold every CPU of the local cluster; an evaluation started beside
    them waits for ever (this happened on the first full run). ``report.heldout`` shuts the pool down first."""
    import types

    import metaopt.evaluate as evaluate_pkg
    from metaopt.distill import report

    calls = []

    class Pool:
        def shutdown(self):
            calls.append("shutdown")

    class Stop(Exception):
        pass

    def fake_evaluate(cfg, **kw):
        calls.append("evaluate")
        raise Stop

    monkeypatch.setattr(evaluate_pkg, "evaluate", fake_evaluate)
    cfg = load_distill_config(SMOKE)
    cfg.search.workers = 2
    dist = types.SimpleNamespace(cfg=cfg, teacher="adam", run_dir="/nonexistent", driver=types.SimpleNamespace(pool=Pool()),
                                 log=lambda *a: None, progress=False)
    with pytest.raises(Stop):
        report.heldout(dist, {"program": {"files": {"opt": "momentum"}}})
    assert calls == ["shutdown", "evaluate"]
