"""The driver killed with SIGKILL mid-run resumes from its last checkpoint and completes."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from search.state import SearchState

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cli(*args):
    return [sys.executable, "-m", "metaopt.cli", "search", *args]


STAGED = {"islands": 2, "migrate_every": 10, "restart": {"enabled": True, "plateau": 30},
          "hurdle": {"enabled": True, "tasks": ["smoke_quadratic"], "steps": 20, "min_window": 4}}


@pytest.mark.slow
@pytest.mark.parametrize("staged", [False, True], ids=["one-population", "islands-hurdle-restarts"])
def test_sigkill_then_resume_loses_nothing_checkpointed(tmp_path, staged):
    with open(os.path.join(ROOT, "configs/search/smoke.yaml")) as fh:
        cfg = yaml.safe_load(fh)
    # In-process judging (no Ray start-up) and many small batches, so the run is still going when the
    # first checkpoint lands; the funnel is off to keep the test to one compile per process.
    cfg.update(workers=0, batch_size=2, checkpoint_every=6, budget={"evaluations": 48})
    cfg["funnel"]["enabled"] = False
    if staged:     # two islands with migration, the hurdle stage and plateau restarts, all checkpointed
        cfg.update(STAGED)
    cfg_path = tmp_path / "smoke.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    env = {**os.environ, "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"}

    # --no-polish: polishing and the novelty check (tests/test_polish_report.py) are not what this tests.
    proc = subprocess.Popen(_cli("--config", str(cfg_path), "--out", str(run), "--no-progress", "--no-polish"),
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state_file = run / "state.json"
    deadline = time.time() + 150
    try:
        while time.time() < deadline and proc.poll() is None:
            if state_file.exists():
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the search ended before its first checkpoint could be caught"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    before = SearchState.load(run)
    assert not before.finished and 6 <= before.counters["evaluations"] < 48

    done = subprocess.run(_cli("--resume", str(run), "--no-progress", "--no-polish"), cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "resuming" in done.stdout
    after = SearchState.load(run)
    assert after.finished and after.counters["evaluations"] >= 48
    for fp, rec in before.judged.items():               # nothing judged before the checkpoint is lost
        assert after.judged[fp] == rec
    assert after.counters["children"] > before.counters["children"]
    if staged:
        assert len(after.islands) == 2 and after.counters["migrations"] > before.counters["migrations"]
        assert after.counters["hurdle_evaluations"] > before.counters["hurdle_evaluations"] > 0
        assert len(after.hurdle_window) >= len(before.hurdle_window) > 0
        # resumed mid-run, not restarted: the second process continued the first one's islands
        assert {r["island"] for r in after.judged.values()} == {0, 1}
    summary = json.loads((run / "summary.json").read_text())
    assert summary["counters"]["evaluations"] == after.counters["evaluations"]
    best = (run / "best" / "found1.opt").read_text()
    from metaopt.dsl import parse
    assert parse(best).name == "found1"
