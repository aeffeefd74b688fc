"""Staged judging and the Lion recipe: hurdles, initial programs, plateau restarts, islands and migration,
multiplicative constant mutation, and the selection stage. The driver runs on a synthetic judge (fitness
from a hash of the program text), so the bookkeeping is tested in seconds; the hurdle's batched judging
is checked once against optax."""
import hashlib
import json
import math
import os

import numpy as np
import pytest

from metaopt.config import ConfigError
from search import programs
from search.config import load_search_config
from search.driver import SearchDriver
from search.evolution import Individual, Island, RegularizedEvolution, migrate
from search.fitness import WORST_FITNESS, HurdleGate
from search.judge import centre_key, stage_specs
from search.mutate import default_space, mutate, perturb_constant
from search.state import SearchState

SMOKE = "configs/search/smoke.yaml"
HURDLE = {"enabled": True, "tasks": ["smoke_quadratic"], "steps": 20, "percentile": 75, "window": 20,
          "min_window": 5}


def _cfg(**over):
    return load_search_config(SMOKE, {"workers": 0, **over})


def _u(*parts) -> float:
    return int(hashlib.sha256("|".join(parts).encode()).hexdigest()[:8], 16) / 2**32


class StagedPool:
    """In-process pool with a deterministic fake judge for every stage (hurdle, search, funnel, baselines).
    Curves run straight from 3.0 to a final loss drawn from a hash of (stage, text) on the stage's eval
    steps; tuned AdamW ends at 1.0. ``flat``: every program but ``best_text`` ends at 2.0 (worse than it)."""

    def __init__(self, cfg, flat=False, best_text=None):
        self.specs = stage_specs(cfg)
        self.factors = cfg.hurdle.grid_factors
        self.queue, self.restarts, self.workers, self.seen = [], 0, [], []
        self.flat, self.best_text = flat, best_text

    def capacity(self):
        return 2 - len(self.queue)

    def inflight(self):
        return list(self.queue)

    def submit(self, job):
        self.queue.append(job)

    def _curves(self, stage, task, final):
        spec = self.specs[stage]
        i = spec.tasks.index(task)
        return [list(np.linspace(3.0, final, spec.steps[i] // spec.eval_every[i] + 1))]

    def wait(self, timeout=None):
        job = self.queue.pop(0)
        if job.stage == "baseline":
            stage, _, task = job.texts[0].split("/")
            spec = self.specs[stage]
            i = spec.tasks.index(task)
            return [(job, [{"loss": 1.0, "lr": 0.1, "grid": {}, "curves": self._curves(stage, task, 1.0),
                            "eval_steps": list(range(0, spec.steps[i] + 1, spec.eval_every[i]))}])]
        out = []
        for k, text in enumerate(job.texts):
            centre = job.centres[k] if job.centres else None
            self.seen.append((job.stage, text, centre))
            res = {"losses": {}, "lrs": {}, "curves": {}, "error": None,
                   "seconds": getattr(self, "stage_seconds", {}).get(job.stage, 0.01)}
            for task in self.specs[job.stage].tasks:
                h = _u(job.stage, task, text)
                final = None if "log(" in text else 0.2 + 2 * h
                if self.flat and final is not None:
                    final = 0.5 if text == self.best_text else 2.0
                lr = centre[task] * self.factors[int(h * len(self.factors))] if centre else 0.1
                res["losses"][task] = final
                res["lrs"][task] = None if final is None else lr
                res["curves"][task] = None if final is None else self._curves(job.stage, task, final)
            out.append(res)
        return [(job, out)]

    def shutdown(self):
        pass


# --- hurdles -------------------------------------------------------------------------------------------
def test_gate_percentile_is_over_a_rolling_window():
    gate = HurdleGate(percentile=75, window=4, min_window=4)
    assert gate.judge(3.9) == (True, None)                   # warm-up: everyone passes ...
    assert gate.judge(WORST_FITNESS) == (False, None)        # ... except a program that diverged everywhere
    for v in (1.0, 1.0):
        gate.judge(v)
    # window [3.9, 4.0, 1.0, 1.0]: better than 75% of it = at or below its 25th percentile (numpy: 1.0)
    assert gate.threshold() == pytest.approx(np.percentile([3.9, 4.0, 1.0, 1.0], 25)) == 1.0
    assert gate.judge(1.0)[0] and not gate.judge(1.01)[0]
    for v in (3.0, 3.0, 3.0, 3.0):                           # the old values leave the window
        gate.judge(v)
    assert list(gate.values) == [3.0] * 4 and gate.threshold() == 3.0
    assert gate.judge(2.9)[0]                                # a cumulative window (25th pct 1.0) would fail it
    gate2 = HurdleGate(percentile=50, window=100, min_window=1, history=[1.0, 2.0, 3.0])
    assert gate2.threshold() == 2.0                          # the median: better than half of them


def test_hurdle_accounting_and_failures_never_outrank_passers(tmp_path):
    cfg = _cfg(budget={"evaluations": 80}, population=10, tournament=4, hurdle=HURDLE,
               funnel={"min_judged": 4, "fraction": 0.25, "suite": "smoke", "tasks": ["smoke_linreg"]})
    pool = StagedPool(cfg)
    driver = SearchDriver(cfg, str(tmp_path / "run"), pool=pool, progress=False, log=lambda m: None)
    st = driver.run()
    c = st.counters
    hurdle = [t for s, t, _ in pool.seen if s == "hurdle"]
    search = [t for s, t, _ in pool.seen if s == "search"]
    # Every candidate is judged once per stage; equal fingerprints never reach the pool twice.
    fps = [programs.fingerprint(programs.parse(t)) for t in hurdle]
    assert len(fps) == len(set(fps)) == c["hurdle_evaluations"] and len(search) == len(set(search))
    passed = [fp for fp, r in st.judged.items() if r["hurdle"] and r["hurdle"]["passed"]]
    failed = [fp for fp, r in st.judged.items() if r["hurdle"] and not r["hurdle"]["passed"]]
    assert len(passed) == c["hurdle_passed"] and len(passed) + len(failed) == c["hurdle_evaluations"]
    init = [fp for fp, r in st.judged.items() if r["mutation"] == "init"]
    assert len(init) == 1 and st.judged[init[0]]["hurdle"] is None        # the initial program skips it
    assert c["search_evaluations"] == len(search) == len(passed) + 1
    assert c["evaluations"] == 80 == len(failed) + c["search_evaluations"] == len(st.judged)
    assert 0 < len(failed) and 0 < len(passed)
    assert 0.1 < c["hurdle_passed"] / c["hurdle_evaluations"] < 0.6         # ~25% after the warm-up
    # Each decision: passed iff h < 4 and h <= the threshold it was held to (None during the warm-up).
    for fp in passed + failed:
        h = st.judged[fp]["hurdle"]
        assert h["passed"] == (h["fitness"] < WORST_FITNESS and (h["threshold"] is None or h["fitness"] <= h["threshold"]))
    # Failures keep 4 + their hurdle fitness: worse than every full-stage fitness, ordered among themselves.
    for fp in failed:
        assert st.judged[fp]["fitness"] == pytest.approx(WORST_FITNESS + st.judged[fp]["hurdle"]["fitness"])
    worst_passer = max(st.judged[fp]["fitness"] for fp in passed + init)
    assert min(st.judged[fp]["fitness"] for fp in failed) > WORST_FITNESS >= worst_passer
    ranking = sorted(st.judged, key=lambda fp: st.judged[fp]["fitness"])
    assert set(ranking[:len(passed) + 1]) == set(passed + init)
    assert not set(failed) & set(st.funnel)
    # The funnel's fraction is of the full-stage judgings: hurdle failures neither qualify nor dilute it.
    assert 1 <= len(st.funnel) <= max(cfg.top_programs, math.ceil(0.25 * c["search_evaluations"]))
    # Costs: trainings = candidates x tasks x rates x seeds; worker seconds summed per stage.
    f = st.stage_figures()
    assert f["hurdle"]["trainings"] == c["hurdle_evaluations"] * 1 * 3 * 1
    assert f["search"]["trainings"] == c["search_evaluations"] * 1 * 4 * 1
    assert f["hurdle"]["seconds"] == pytest.approx(0.01 * c["hurdle_evaluations"], abs=0.01)
    assert driver.stats()["hurdle_pass_rate"] == f["hurdle"]["pass_rate"]
    assert driver._pending == {} and driver._full_queue == []
    assert json.loads((tmp_path / "run" / "baselines.json").read_text())["baselines"]["hurdle"]["adamw"]


def test_baselines_are_shared_per_stage_between_runs(tmp_path):
    """A second run beside the first that only adds a hurdle tunes the hurdle's baselines, no others."""
    tuned = []

    class Recording(StagedPool):
        def submit(self, job):
            if job.stage == "baseline":
                tuned.append(job.texts[0])
            super().submit(job)
    SearchDriver(_cfg(budget={"evaluations": 4}), str(tmp_path / "a"), pool=Recording(_cfg()),
                 progress=False, log=lambda m: None).run()
    assert sorted(tuned) == sorted(f"{s}/{o}/{t}" for s, t in (("search", "smoke_quadratic"), ("funnel", "smoke_linreg"))
                                   for o in ("adamw", "sgd"))
    tuned.clear()
    cfg = _cfg(budget={"evaluations": 4}, hurdle=HURDLE)
    SearchDriver(cfg, str(tmp_path / "b"), pool=Recording(cfg), progress=False, log=lambda m: None).run()
    assert sorted(tuned) == ["hurdle/adamw/smoke_quadratic", "hurdle/sgd/smoke_quadratic"]


def test_hurdle_rates_centre_on_the_parents_best_rate(tmp_path):
    cfg = _cfg(budget={"evaluations": 40}, population=6, tournament=3, hurdle=HURDLE)
    pool = StagedPool(cfg)
    st = SearchDriver(cfg, str(tmp_path / "run"), pool=pool, progress=False, log=lambda m: None).run()
    centres = {t: c for s, t, c in pool.seen if s == "hurdle"}
    checked = 0
    for rec in st.judged.values():
        if rec["mutation"] == "init":
            continue
        parent = st.judged[rec["parent"]]
        centre = centres[rec["text"]]["smoke_quadratic"]
        # From the parent's own hurdle rate, else its search-stage rate; tuned AdamW's (0.1 here) while the
        # parent is not judged yet (only the initial program can be a parent then: it waits for a full batch).
        expect = (parent["hurdle"] or {}).get("lrs", {}).get("smoke_quadratic") or parent["lrs"]["smoke_quadratic"]
        if parent["mutation"] == "init":
            assert centre in (0.1, centre_key(expect))
            continue
        assert centre == centre_key(expect)
        assert any(rec["hurdle"]["lrs"]["smoke_quadratic"] == pytest.approx(centre * f) for f in (1 / 3, 1, 3))
        checked += 1
    assert checked > 10
    assert len({c["smoke_quadratic"] for c in centres.values()}) > 2        # rates move over generations


@pytest.mark.slow
def test_hurdle_judge_matches_optax_sgd_at_centred_rates():
    """The hurdle stage, batched by centre on the interpreter, judges `return g` exactly as optax.sgd tuned
    on centre x {1/3, 1, 3}; candidates with other centres in the same batch do not disturb it, and
    the trainer compiles at most one shape per hurdle batch size."""
    import optax
    import tasks
    from search.fitness import tune_reference
    from search.judge import Judge, hurdle_sizes
    cfg = _cfg(hurdle=HURDLE, batch_size=2)
    judge = Judge(cfg, "hurdle")
    minimal = "optimizer minimal()\nreturn g\n"
    texts = [minimal, "optimizer m()\nstate s0 = 0\ns0 = interp(s0, g, 0.9)\nreturn s0\n", minimal]
    centres = [{"smoke_quadratic": 0.03}, {"smoke_quadratic": 0.03}, {"smoke_quadratic": 0.3}]
    out = judge(texts, centres)                 # groups of 2 (centre 0.03) and 1 (centre 0.3)
    ref = tune_reference(tasks.get("smoke_quadratic"), optax.sgd, [0.01, 0.03, 0.09], 20, 2, 1, cfg.seed)
    assert out[0]["lrs"]["smoke_quadratic"] == pytest.approx(ref["lr"])
    np.testing.assert_allclose(out[0]["curves"]["smoke_quadratic"], ref["curves"], rtol=1e-4)
    assert any(out[2]["lrs"]["smoke_quadratic"] == pytest.approx(0.3 * f) for f in (1 / 3, 1, 3))
    assert hurdle_sizes(2) == (1, 2) and hurdle_sizes(16) == (4, 8, 16)
    judge(texts[:1], centres[:1])               # a group of one again: no new shape
    assert judge._trainers["smoke_quadratic"].trainer._run._cache_size() == 2


# --- initial programs -----------------------------------------------------------------------------------
def _first_text(tmp_path, init):
    cfg = _cfg(budget={"evaluations": 8}, init=init, n_registers=16)
    pool = StagedPool(cfg)
    st = SearchDriver(cfg, str(tmp_path / init.replace("/", "_")), pool=pool, progress=False,
                      log=lambda m: None).run()
    rec = next(r for r in st.judged.values() if r["mutation"] == "init")
    return rec, st


def test_init_from_lion_and_from_an_opt_file(tmp_path):
    import metaopt.library
    rec, st = _first_text(tmp_path, "lion")
    assert rec["text"] == programs.text(programs.simplify(metaopt.library.get("lion")))
    assert any(r["parent"] and st.judged.get(r["parent"], {}).get("mutation") == "init" for r in st.judged.values())
    path = tmp_path / "rule.opt"
    path.write_text("optimizer mine(b = 0.8)\nstate m = 0\nm = interp(m, g, b)\nreturn sign(m)\n")
    rec, _ = _first_text(tmp_path, str(path))
    assert rec["text"] == programs.text(programs.simplify(programs.parse(path.read_text())))


def test_init_errors_name_the_file(tmp_path, capsys):
    from metaopt.cli import main
    missing = str(tmp_path / "nope.opt")
    assert main(["search", "--config", SMOKE, "--init", missing, "--out", str(tmp_path / "r")]) == 2
    assert missing in capsys.readouterr().out
    bad = tmp_path / "bad.opt"
    bad.write_text("optimizer bad()\nreturn frob(g)\n")
    with pytest.raises(ConfigError, match=rf"{bad}:2:.*unknown op 'frob'"):
        _cfg(init=str(bad))


@pytest.mark.parametrize("config", ["quick", "full"])
@pytest.mark.parametrize("init", ["adamw", "lion"])
def test_adamw_and_lion_fit_the_interpreter_in_quick_and_full(config, init):
    import metaopt.library
    from metaopt.interpret import encode
    cfg = load_search_config(f"configs/search/{config}.yaml", {"init": init})
    p = programs.simplify(metaopt.library.get(init))
    encode(p, cfg.max_len, cfg.n_registers)                  # raises EncodingError when it does not fit
    assert programs.length(p) < cfg.max_len                  # and children may still grow by a row
    assert cfg.hurdle.enabled and cfg.restart.enabled


# --- restarts and islands -------------------------------------------------------------------------------
def test_plateau_restart_reseeds_from_the_best(tmp_path):
    cfg = _cfg(budget={"evaluations": 40}, population=6, tournament=3, restart={"enabled": True, "plateau": 8})
    init_text = programs.text(programs.simplify(programs.initial_program("minimal")))
    pool = StagedPool(cfg, flat=True, best_text=init_text)   # nothing ever beats the initial program
    seen = []
    holder = {}

    def log(msg):
        if "re-seeded" in msg:
            isl = holder["d"].islands[0]
            seen.append([m.text for m in isl.evolution.members])
    driver = holder["d"] = SearchDriver(cfg, str(tmp_path / "run"), pool=pool, progress=False, log=log)
    st = driver.run()
    assert st.counters["restarts"] == len(seen) >= 3        # 39 non-improving evaluations / 8, minus refills
    assert all(members == [init_text] * 6 for members in seen)
    assert st.islands[0].restarts == st.counters["restarts"]
    assert st.islands[0].best.text == init_text


def test_migrate_moves_each_best_to_the_next_island():
    rng = np.random.default_rng(0)
    isl = [Island(RegularizedEvolution(3, 2, [Individual(f"i{k}p{j}", f"i{k}p{j}", 1.0 + j + k / 10, j)
                                              for j in range(3)])) for k in range(3)]
    moves = migrate(isl, rng)
    assert moves == [(0, 1), (1, 2), (2, 0)]
    for k in range(3):
        texts = [m.text for m in isl[k].evolution]
        src = (k - 1) % 3
        assert len(texts) == 3 and f"i{src}p0" in texts     # the previous island's best arrived ...
        assert sum(t.startswith(f"i{k}") for t in texts) == 2    # ... in place of one of its own
    assert migrate(isl[:1], rng) == []


def test_islands_migrate_and_resume_mid_run(tmp_path):
    over = dict(population=6, tournament=3, islands=2, migrate_every=10, checkpoint_every=5, hurdle=HURDLE)
    run = str(tmp_path / "run")
    first = SearchDriver(_cfg(budget={"evaluations": 30}, **over), run, pool=StagedPool(_cfg(**over)),
                         progress=False, log=lambda m: None).run()
    assert first.counters["migrations"] >= 2 and len(first.islands) == 2
    assert {r["island"] for r in first.judged.values()} == {0, 1}
    saved = SearchState.load(run)
    assert [[m.fingerprint for m in i.evolution] for i in saved.islands] == \
        [[m.fingerprint for m in i.evolution] for i in first.islands]
    assert saved.hurdle_window == first.hurdle_window and len(saved.hurdle_window) > 5
    resumed = SearchDriver(_cfg(budget={"evaluations": 60}, **over), run, pool=StagedPool(_cfg(**over)),
                           progress=False, log=lambda m: None)
    assert resumed.state.rng.bit_generator.state == first.rng.bit_generator.state
    assert list(resumed.gate.values) == first.hurdle_window
    assert resumed.islands[1].best.fingerprint == first.islands[1].best.fingerprint
    st = resumed.run()
    assert st.counters["evaluations"] == 60 and st.counters["migrations"] >= 5
    assert all(st.judged[fp] == rec for fp, rec in first.judged.items())


def test_version_1_checkpoint_loads_as_one_island(tmp_path):
    run = tmp_path / "run"
    first = SearchDriver(_cfg(budget={"evaluations": 16}), str(run), pool=StagedPool(_cfg()),
                         progress=False, log=lambda m: None).run()
    d = json.loads((run / "state.json").read_text())
    v1 = {k: v for k, v in d.items() if k not in ("islands", "hurdle_window", "selection")}
    v1.update(version=1, population=[m.to_json() for m in first.population])
    (run / "state.json").write_text(json.dumps(v1))
    resumed = SearchDriver(_cfg(budget={"evaluations": 32}), str(run), pool=StagedPool(_cfg()),
                           progress=False, log=lambda m: None)
    assert [m.fingerprint for m in resumed.evolution] == [m.fingerprint for m in first.population]
    assert resumed.islands[0].best is not None
    assert resumed.run().counters["evaluations"] == 32


# --- constants ----------------------------------------------------------------------------------------
def test_constants_are_perturbed_by_a_log_normal_power_of_two():
    rng = np.random.default_rng(0)
    for x in (0.37, 3.0, -2.5, 1e-8):
        r = np.log2([perturb_constant(x, rng) / x for _ in range(4000)])
        assert abs(r.mean()) < 0.05 and abs(r.std() - 1.0) < 0.05, (x, r.mean(), r.std())
    ema = np.array([perturb_constant(0.9, rng, ema=True) for _ in range(4000)])
    assert ((0 < ema) & (ema < 1)).all()
    r = np.log2((1 - ema) / 0.1)
    assert abs(r.mean()) < 0.05 and abs(r.std() - 1.0) < 0.05


def test_mutation_perturbs_constants_multiplicatively():
    """Through ``mutate``: the constant of `0.37 * g` (not an EMA weight) moves by 2^N(0,1)."""
    rng = np.random.default_rng(1)
    p = programs.simplify(programs.parse("optimizer c()\nreturn 0.37 * g\n"))
    space = default_space(max_len=4, max_states=1)
    ratios = []
    while len(ratios) < 400:
        child, kind = mutate(p, rng, space)
        if kind == "perturb_const":
            ratios.append(math.log2(float(child.output.args[0].value) / 0.37))
    r = np.array(ratios)
    assert abs(r.mean()) < 0.15 and abs(r.std() - 1.0) < 0.12


# --- selection --------------------------------------------------------------------------------------
def test_reported_best_is_only_ever_funnel_judged(tmp_path):
    # min_judged above the budget: the search itself funnels nothing; the selection stage must.
    cfg = _cfg(budget={"evaluations": 24}, top_programs=3, funnel={"min_judged": 1000, "suite": "smoke",
                                                                    "tasks": ["smoke_linreg"]})
    pool = StagedPool(cfg)
    driver = SearchDriver(cfg, str(tmp_path / "run"), pool=pool, progress=False, log=lambda m: None)
    st = driver.run()
    best3 = sorted((r["fitness"], r["order"], fp) for fp, r in st.judged.items() if r["fitness"] < WORST_FITNESS)[:3]
    expected = {fp for _, _, fp in best3} | {driver.init_fp}        # the 3 best, and the start as the control
    assert set(st.funnel) == expected and len(expected) == st.counters["funnel_evaluations"]
    ranked = st.ranked(5)
    assert len(ranked) == len(expected) and all(fp in st.funnel for fp, _ in ranked)
    assert [fp for fp, _ in ranked] == sorted(st.funnel, key=lambda fp: st.funnel[fp]["fitness"])


def test_funnel_keeps_within_its_share_of_worker_time(tmp_path):
    # A funnel judging costs 50x a search-stage one (as in a full search). Capped at 20 % of the worker
    # time, the funnel only sends a batch while it is within its share; uncapped, it takes most of it.
    def run(share, name):
        cfg = _cfg(budget={"evaluations": 200}, batch_size=4, top_programs=1,
                   funnel={"min_judged": 4, "fraction": 0.5, "max_share": share, "suite": "smoke",
                           "tasks": ["smoke_linreg"]})
        pool = StagedPool(cfg)
        pool.stage_seconds = {"funnel": 0.5, "search": 0.01, "hurdle": 0.01}
        sent, submit = [], pool.submit

        def watch(job):
            if job.stage == "funnel":
                c = driver.state.counters
                done = sum(c.get(f"seconds_{k}", 0.0) for k in ("hurdle", "search", "funnel"))
                sent.append((c["evaluations"], c.get("seconds_funnel", 0.0), done))
            submit(job)

        pool.submit = watch
        driver = SearchDriver(cfg, str(tmp_path / name), pool=pool, progress=False, log=lambda m: None)
        return driver.run(), sent

    capped, sent = run(0.2, "capped")
    uncapped, _ = run(1.0, "uncapped")
    assert 0 < capped.counters["funnel_evaluations"] < uncapped.counters["funnel_evaluations"]
    during = [(f, total) for n, f, total in sent if n < 200]          # before the budget was spent
    assert during and all(f <= 0.2 * total + 1e-9 for f, total in during)
    with pytest.raises(ConfigError, match="funnel.max_share"):
        _cfg(funnel={"max_share": 0.0})


def test_selection_funnels_the_best_search_programs_even_when_enough_were_funnel_judged(tmp_path):
    # The funnel judges the first few full-stage programs, then (capped) almost nothing: the best programs of
    # the end of the search were never funnel-judged. The selection stage must judge all top_programs of them.
    cfg = _cfg(budget={"evaluations": 150}, batch_size=4, top_programs=3,
               funnel={"min_judged": 1, "fraction": 1.0, "max_share": 0.01, "suite": "smoke",
                       "tasks": ["smoke_linreg"]})
    pool = StagedPool(cfg)
    pool.stage_seconds = {"funnel": 5.0, "search": 0.01, "hurdle": 0.01}
    st = SearchDriver(cfg, str(tmp_path / "run"), pool=pool, progress=False, log=lambda m: None).run()
    top = st.best_by_search(3)
    assert len(top) == 3 and set(top) <= set(st.funnel)
    early = [fp for fp in st.funnel if fp not in top]
    assert early, "the capped funnel judged some early programs during the search"
    ranked = [fp for fp, _ in st.ranked(10)]
    assert ranked and set(ranked) <= set(st.funnel)


@pytest.mark.parametrize("config", ["smoke", "quick", "full"])
def test_no_stage_reads_heldout_and_fitness_never_reads_validation(config, monkeypatch):
    import types

    import tasks
    cfg = load_search_config(f"configs/search/{config}.yaml")
    monkeypatch.setattr(tasks, "get", lambda name: types.SimpleNamespace(steps=100))   # names only: no data
    specs = stage_specs(cfg)
    assert set(specs) == {"search", "funnel"} | ({"hurdle"} if cfg.hurdle.enabled else set())
    final = {t for s in ("heldout", "heldout-quick") for t in tasks.SUITES.get(s, ())}
    validation = set(tasks.SUITES["validation"])
    for name, spec in specs.items():
        assert not final & set(spec.tasks), name
        assert name == "funnel" or not validation & set(spec.tasks), name


def test_hurdle_refuses_validation_and_heldout_tasks():
    import tasks
    for suite in ("validation", "heldout"):
        with pytest.raises(ConfigError, match="hurdle.tasks"):
            _cfg(hurdle={**HURDLE, "tasks": [tasks.SUITES[suite][0]]})
    assert os.path.exists(SMOKE)


class StartWinsFunnelPool(StagedPool):
    """Found programs win the search stage (hash losses, some below AdamW) but every one of them ends at 2.0
    on the funnel, where the start program ends at 0.5: the search's winner is worse than where it began."""

    start_text = None

    def wait(self, timeout=None):
        out = super().wait(timeout)
        job, results = out[0]
        if job.stage == "funnel":
            for text, res in zip(job.texts, results):
                final = 0.5 if text == self.start_text else 2.0
                res["losses"] = {t: final for t in res["losses"]}
                res["curves"] = {t: self._curves("funnel", t, final) for t in res["curves"]}
        return out


def test_selection_judges_the_start_program_as_the_control(tmp_path):
    from search import report
    cfg = _cfg(budget={"evaluations": 60}, batch_size=4, top_programs=3,
               funnel={"min_judged": 1, "fraction": 1.0, "suite": "smoke", "tasks": ["smoke_linreg"]})
    pool = StartWinsFunnelPool(cfg)
    run = str(tmp_path / "run")
    driver = SearchDriver(cfg, run, pool=pool, progress=False, log=lambda m: None)
    pool.start_text = programs.text(driver.init_program)
    st = driver.run()
    assert driver.init_fp in st.funnel, "the selection stage funnel-judges the start program"
    assert len([fp for fp in st.funnel if fp != driver.init_fp]) >= 3
    assert st.ranked(1)[0][0] == driver.init_fp          # nothing found beat it on the funnel
    best = report.export_best(st, run, 3, driver.init_fps)
    assert [r["start"] for r in best] == [True, False, False]
    assert "start program" in open(best[0]["opt"]).read()
    md = report.summary_markdown(report.summarize(driver, best), cfg)
    assert "is not better than its start" in md and "| 1 | " in md and "start program: `" in md
    logs = []
    assert report.polish_best(driver, best, logs.append) is None and "nothing to polish" in logs[0]


def test_end_to_end_benchmark_reads_the_stage_counts_off_the_drivers_log_line():
    # benchmarks/search_end_to_end.py's same-work ratio reads each stage's candidates off SearchState.stage_line.
    import importlib.util
    spec = importlib.util.spec_from_file_location("e2e", "benchmarks/search_end_to_end.py")
    e2e = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(e2e)
    st = SearchState(seed=0)
    st.counters.update(evaluations=1234, hurdle_evaluations=1200, hurdle_passed=150, search_evaluations=151,
                       funnel_evaluations=7, trainings_hurdle=7200, trainings_search=7550, trainings_funnel=560,
                       seconds_hurdle=9.0, seconds_search=300.0, seconds_funnel=120.0)
    line = st.stage_line()
    assert e2e.STAGE_LINE.match(line)
    assert e2e.loop_counts(line) == {"hurdle": 1200, "search": 151, "funnel": 7}
    ceil = {"batch_size": 16, "stages": {s: {"sizes": [{"population": 16, "cpu_s_per_candidate": c}]}
                                         for s, c in (("hurdle", 0.01), ("search", 1.0), ("funnel", 10.0))}}
    mix = e2e.mix_ratio(ceil, e2e.loop_counts(line), 642.0)
    assert mix["ideal_cpu_s_total"] == pytest.approx(12 + 151 + 70) and mix["ratio"] == pytest.approx(233 / 642)
