"""The end of a search: the best program polished, its novelty checked, both in polish.json and summary.md;
a resumed (or repeated) finish judges nothing again."""
import json
import os

import pytest

from metaopt.dsl import parse
from search import programs
from search.config import load_search_config
from search.driver import SearchDriver
from search.report import POLISH_FILE, POLISH_SCORES, finish, polish_best
from tests.test_search import SMOKE, SyntheticPool

NAMES = ["adam", "momentum", "sgd", "signum"]


class StartLosesPool(SyntheticPool):
    """The synthetic judge, judging the funnel's task too, with the start program (the control the selection
    stage funnel-judges) worst there, so that the best program is a found one: what these tests polish."""

    start_text = None

    def wait(self, timeout=None):
        out = super().wait(timeout)
        job, results = out[0]
        for text, res in zip(job.texts, results):
            if job.stage == "funnel":
                final = 2.9 if text == self.start_text else next(iter(res["losses"].values())) or 2.9
                res.update(losses={"smoke_linreg": final}, curves={"smoke_linreg": self._curve("funnel", final)},
                           lrs={"smoke_linreg": 0.1})
        return out


@pytest.fixture
def driver(tmp_path):
    cfg = load_search_config(SMOKE, {"workers": 0, "budget": {"evaluations": 40}})
    pool = StartLosesPool()
    d = SearchDriver(cfg, str(tmp_path / "run"), pool=pool, log=lambda s: None, progress=False)
    pool.start_text = programs.text(d.init_program)
    d.run()
    return d


def test_finish_polishes_the_best_program_and_a_second_finish_reuses_it(driver):
    judged = []

    def score(progs):                       # a constant fitness: every edit is acceptable
        judged.extend(programs.text(p) for p in progs)
        return [1.0] * len(progs)

    logs = []
    summary = finish(driver, log=logs.append, scorer=score, novelty_names=NAMES)
    run = driver.run_dir
    saved = json.loads(open(f"{run}/{POLISH_FILE}").read())
    best = parse(open(f"{run}/best/found1.opt").read())
    assert saved["polish"]["raw"] == str(best) and saved["key"]["fingerprint"] == summary["best"][0]["fingerprint"]
    simplified = parse(open(f"{run}/best/found1_simplified.opt").read())
    assert programs.text(simplified) == programs.text(parse(saved["polish"]["simplified"]))
    assert saved["novelty"]["verdict"] and saved["novelty"]["closest"] in NAMES
    assert len(judged) == saved["polish"]["scored"] and not os.path.exists(f"{run}/{POLISH_SCORES}")
    md = open(f"{run}/summary.md").read()
    assert "## Best program, polished" in md and "## Novelty against the library" in md
    assert saved["novelty"]["verdict"] in md and md.index("## Novelty") < md.index("## Made by")
    assert json.loads(open(f"{run}/summary.json").read())["polish"]["novelty"]["verdict"] == saved["novelty"]["verdict"]

    before = len(judged)
    finish(driver, log=logs.append, scorer=score, novelty_names=NAMES)
    assert len(judged) == before and any("not redone" in line for line in logs)


def test_an_interrupted_polish_resumes_from_its_judged_candidates(driver):
    first_calls = []

    def failing(progs):
        if first_calls:
            raise KeyboardInterrupt("killed mid-polish")
        first_calls.append([programs.text(p) for p in progs])
        return [1.0] * len(progs)

    with pytest.raises(KeyboardInterrupt):
        polish_best(driver, _rows(driver), log=lambda s: None, scorer=failing, novelty_names=NAMES)
    partial = json.loads(open(f"{driver.run_dir}/{POLISH_SCORES}").read())
    assert set(partial["scores"]) == set(first_calls[0])

    judged = []

    def failing(progs):                     # same name: the same scorer, resumed
        judged.extend(programs.text(p) for p in progs)
        return [1.0] * len(progs)

    out = polish_best(driver, _rows(driver), log=lambda s: None, scorer=failing, novelty_names=NAMES)
    n = len(out["polish"]["edits"]) + 1                     # the final re-judging: start and each edit
    assert not set(judged[:-n]) & set(first_calls[0])
    assert out["polish"]["scored"] == len(judged)


def _rows(driver):
    from search.report import export_best
    return export_best(driver.state, driver.run_dir, 1)
