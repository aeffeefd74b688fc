"""Search machinery without training: evolution, fitness, state, and the driver on a synthetic judge."""
import hashlib
import json
import math

import numpy as np
import pytest

from search.config import load_search_config
from search.driver import SearchDriver
from search.evolution import Individual, RegularizedEvolution
from search.fitness import WORST_FITNESS, best_over_grid, candidate_fitness, references
from search.state import SearchState

SMOKE = "configs/search/smoke.yaml"


def test_tournament_and_aging():
    evo = RegularizedEvolution(3, 3)
    for i, f in enumerate([5.0, 1.0, 3.0]):
        evo.add(Individual(f"p{i}", f"fp{i}", f, i))
    rng = np.random.default_rng(0)
    assert evo.select_parent(rng).fitness == 1.0          # T = P: the tournament sees everyone
    removed = evo.add(Individual("p3", "fp3", 9.0, 3))
    assert removed.text == "p0"                            # the oldest leaves, not the worst
    assert [m.text for m in evo] == ["p1", "p2", "p3"]
    evo.add(Individual("p4", "fp4", 9.0, 4))
    assert evo.best().fitness == 3.0                       # the best one aged out
    small = RegularizedEvolution(10, 2, [Individual(f"p{i}", f"f{i}", float(i), i) for i in range(10)])
    picks = [small.select_parent(rng).fitness for _ in range(300)]
    assert np.mean(picks) < 4.0 and max(picks) <= 8.0     # tournament pressure: better than uniform (4.5)


STEPS = [0, 50, 100]
REF = [[1.0, 0.5, 0.25]]          # reaches its own final loss 0.25 at step 100


def test_candidate_fitness_is_inverse_geomean_speedup_and_bounded():
    refs = references({"a": {"curves": REF, "eval_steps": STEPS}, "b": {"curves": REF, "eval_steps": STEPS}})
    twice = [[1.0, 0.25, 0.1]]                                    # reaches 0.25 at step 50: speedup 2
    assert candidate_fitness({"a": REF, "b": REF}, refs)[0] == pytest.approx(1.0)
    fit, scores = candidate_fitness({"a": twice, "b": REF}, refs)
    assert scores == {"a": pytest.approx(2.0), "b": pytest.approx(1.0)} and fit == pytest.approx(1 / math.sqrt(2))
    clipped = candidate_fitness({"a": [[1.0, 0.0, 0.0]], "b": REF}, refs)[0]      # 100x faster, counted as 4x
    assert clipped == pytest.approx(1 / math.sqrt(4.0))
    assert candidate_fitness({"a": None, "b": REF}, refs)[0] == pytest.approx(1 / math.sqrt(0.25))
    assert candidate_fitness({"a": [[1.0, np.nan, 0.1]], "b": None}, refs)[0] == WORST_FITNESS == 4.0
    assert candidate_fitness({"b": REF}, refs)[1]["a"] == 0.25       # a missing task failed


def test_best_over_grid_skips_diverged_rates():
    curves = np.ones((2, 3, 2, 2))
    curves[0, :, :, -1] = [[3.0, 3.0], [1.0, np.nan], [2.0, 2.0]]   # rate 1 diverged on one seed: median inf
    curves[1, :, :, -1] = np.inf
    best, lr, at = best_over_grid(curves, [0.1, 0.2, 0.3])
    assert best[0] == 2.0 and lr[0] == 0.3 and at[0].tolist() == [[1.0, 2.0], [1.0, 2.0]]
    assert np.isnan(best[1]) and np.isnan(lr[1]) and np.isnan(at[1]).all()


class SyntheticPool:
    """In-process pool with a deterministic fake judge: loss is a hash of the program text; programs
    using `log` "diverge". Lets the driver's bookkeeping be tested in milliseconds."""

    def __init__(self, capacity=3):
        self.queue, self.cap, self.restarts, self.workers = [], capacity, 0, []
        self.seen = []

    def capacity(self):
        return self.cap - len(self.queue)

    def inflight(self):
        return list(self.queue)

    def submit(self, job):
        self.queue.append(job)

    @staticmethod
    def _curve(stage, final):
        """A straight line from 3.0 to ``final`` on the stage's eval steps (smoke: every 10 or 30 steps)."""
        return [list(np.linspace(3.0, final, 7))]

    def wait(self, timeout=None):
        job = self.queue.pop(0)
        if job.stage == "baseline":
            stage = job.texts[0].split("/")[0]
            steps = list(range(0, 61 if stage == "search" else 181, 10 if stage == "search" else 30))
            return [(job, [{"loss": 1.0, "lr": 0.1, "grid": {}, "eval_steps": steps,
                            "curves": self._curve(stage, 1.0)} for _ in job.texts])]
        self.seen.extend((job.stage, t) for t in job.texts)
        out = []
        for t in job.texts:
            h = int(hashlib.sha256((job.stage + t).encode()).hexdigest()[:8], 16) / 2**32
            bad = "log(" in t
            out.append({"losses": {"smoke_quadratic": None if bad else 0.2 + 2 * h},
                        "curves": {"smoke_quadratic": None if bad else self._curve(job.stage, 0.2 + 2 * h)},
                        "lrs": {"smoke_quadratic": 0.1}, "error": None})
        return [(job, out)]

    def shutdown(self):
        pass


def _cfg(**over):
    return load_search_config(SMOKE, {"workers": 0, **over})


def test_driver_judges_budget_caches_and_funnels(tmp_path):
    cfg = _cfg(budget={"evaluations": 60}, population=10, tournament=4)
    pool = SyntheticPool()
    driver = SearchDriver(cfg, str(tmp_path / "run"), pool=pool)
    st = driver.run()
    c = st.counters
    assert c["evaluations"] == 60 == len(st.judged)                    # every candidate judged once
    search_texts = [t for s, t in pool.seen if s == "search"]
    assert len(search_texts) == len(set(search_texts)) == 60           # the cache: nothing judged twice
    assert c["children"] == c["evaluations"] + c["cache_hits"] - 1      # (the initial program is not a child)
    assert all(0 < r["fitness"] <= WORST_FITNESS for r in st.judged.values())
    assert any(r["fitness"] == WORST_FITNESS for r in st.judged.values()) == ("log(" in "".join(search_texts))
    # Funnel: only candidates that were in the top fraction when judged, each re-judged once.
    assert 0 < len(st.funnel) == c["funnel_evaluations"] < 60
    assert all(st.judged[fp]["fitness"] < WORST_FITNESS for fp in st.funnel)
    best_fp, best = st.best_funnel()
    assert st.ranked(1)[0][0] == best_fp
    assert driver._pending == {} and driver._funnel_queue == []
    saved = SearchState.load(tmp_path / "run")
    assert saved.finished and saved.judged == st.judged and saved.counters == st.counters
    assert json.loads((tmp_path / "run" / "baselines.json").read_text())["baselines"]["search"]["adamw"]


def test_resume_continues_where_the_checkpoint_left(tmp_path):
    first = SearchDriver(_cfg(budget={"evaluations": 24}), str(tmp_path / "run"), pool=SyntheticPool()).run()
    before = dict(first.judged)
    rng_state = first.rng.bit_generator.state
    resumed = SearchDriver(_cfg(budget={"evaluations": 48}), str(tmp_path / "run"), pool=SyntheticPool())
    assert resumed.state.rng.bit_generator.state == rng_state
    assert [m.fingerprint for m in resumed.evolution] == [m.fingerprint for m in first.population]
    st = resumed.run()
    assert st.counters["evaluations"] == 48
    assert set(before) <= set(st.judged)
    assert all(st.judged[fp] == rec for fp, rec in before.items())


def test_seconds_budget_stops(tmp_path):
    st = SearchDriver(_cfg(budget={"seconds": 0.5}), str(tmp_path / "run"), pool=SyntheticPool()).run()
    assert st.finished and st.counters["evaluations"] > 0


def test_config_errors_name_the_key(tmp_path):
    from metaopt.config import ConfigError
    p = tmp_path / "bad.yaml"
    p.write_text("population: 4\ntournament: 9\nbudget: {evaluations: 3}\n")
    with pytest.raises(ConfigError, match="tournament"):
        load_search_config(str(p))
    p.write_text("population: 4\ntournament: 2\nbudget: {}\n")
    with pytest.raises(ConfigError, match="budget"):
        load_search_config(str(p))


def test_baselines_are_tuned_like_candidates():
    """`return g` judged by the search (interpreter) and optax.sgd tuned as a baseline are the same rule on
    the same grid and seeds, so they pick the same rate, record the same curves and score 1.0."""
    from search.judge import Judge, tune_baseline
    cfg = _cfg(tasks={"names": ["smoke_quadratic"], "steps": 60, "eval_every": 10, "seeds": 2,
                      "lr_grid": [1e-3, 1e-2, 1e-1, 1.0]})
    base = tune_baseline(cfg, "search/sgd/smoke_quadratic")
    judged = Judge(cfg, "search")(["optimizer minimal()\nreturn g\n"])[0]
    assert judged["lrs"]["smoke_quadratic"] == pytest.approx(base["lr"])
    np.testing.assert_allclose(judged["curves"]["smoke_quadratic"], base["curves"], rtol=1e-4)
    fit, scores = candidate_fitness(judged["curves"], references({"smoke_quadratic": base}))
    assert fit == pytest.approx(1.0, abs=1e-3) and len(base["curves"]) == 2 and len(base["eval_steps"]) == 7


def test_cli_refuses_to_overwrite_and_to_resume_nothing(tmp_path, capsys):
    from metaopt.cli import main
    assert main(["search", "--resume", str(tmp_path / "nothing")]) == 2
    run = tmp_path / "run"
    SearchState(seed=0).save(run)
    assert main(["search", "--config", SMOKE, "--out", str(run)]) == 2
    assert "--resume" in capsys.readouterr().out


def test_cli_seed_override_is_recorded_and_refused_on_resume(tmp_path, monkeypatch, capsys):
    """--seed starts an independent search: the run directory's config.yaml records it (what a resume
    reads), and a resume refuses it rather than silently mixing two seeds in one run."""
    import yaml

    import search.driver
    from metaopt.cli import main

    def stop(*a, **k):      # stop right after the config is written: no search needed to check it
        raise ValueError("stopped by the test")
    monkeypatch.setattr(search.driver, "SearchDriver", stop)
    run = tmp_path / "run"
    assert main(["search", "--config", SMOKE, "--out", str(run), "--seed", "7"]) == 2
    assert yaml.safe_load((run / "config.yaml").read_text())["seed"] == 7
    assert main(["search", "--resume", str(run), "--seed", "8"]) == 2
    assert "--seed" in capsys.readouterr().out


def test_hurdle_judges_a_batch_in_one_call_per_task_without_retracing():
    """Children with different centre rates share one interpreter call (rates are data): one compiled
    shape per hurdle task for any centres, and each child's rate comes from its own ``centre x factors``
    grid, with the loss it gets when judged alone on that grid."""
    from search.judge import Judge
    cfg = _cfg(hurdle={"enabled": True, "tasks": ["smoke_quadratic"], "steps": 20})
    judge = Judge(cfg, "hurdle")
    texts = ["optimizer minimal()\nreturn g\n", "optimizer s()\nreturn sign(g)\n",
             "optimizer m()\nreturn 0.5 * g\n", "optimizer bad()\nreturn log(-abs(g) - 1)\n"]
    # Grouped by centre these would be calls of 1 and 3 (then 2 and 2) programs: three padded shapes.
    centres = [{"smoke_quadratic": c} for c in (1e-3, 1e-2, 1e-2, 1e-2)]
    first = judge(texts, centres)
    trainer = judge._trainers["smoke_quadratic"].trainer
    judge(texts[::-1], [{"smoke_quadratic": c} for c in (0.1, 0.1, 3e-2, 3e-2)])
    assert trainer._run._cache_size() == 1          # a new batch of new centres: no new trace
    factors = cfg.hurdle.grid_factors
    for text, c, res in zip(texts, centres, first):
        lr = res["lrs"]["smoke_quadratic"]
        if "log(" in text:
            assert lr is None and res["losses"]["smoke_quadratic"] is None
            continue
        assert any(lr == pytest.approx(c["smoke_quadratic"] * f) for f in factors)
        alone = Judge(cfg, "hurdle")([text], [c])[0]
        assert alone["lrs"] == res["lrs"]
        assert alone["losses"]["smoke_quadratic"] == pytest.approx(res["losses"]["smoke_quadratic"], rel=1e-6)
