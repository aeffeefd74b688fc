"""metaopt.scoring on hand-built curves with known answers: speedup, clipping, the not-reaching scale,
divergence, the bootstrap interval, win/tie/loss, the performance profile and the search fitness."""
import math

import numpy as np
import pytest

from metaopt import scoring

STEPS = [0, 25, 50, 75, 100]
REF_CURVES = [[1.0, 0.8, 0.6, 0.4, 0.2]] * 3       # reaches its final loss 0.2 at step 100


def ref():
    return scoring.reference(REF_CURVES, STEPS)


def score(curve, r=None):
    return scoring.score_task([curve] * 3, r or ref())


def test_reference_target_is_the_median_final_loss_over_seeds():
    r = scoring.reference([[1.0, 0.5, 0.3], [1.0, 0.5, 0.1], [1.0, 0.5, 0.2]], [0, 50, 100])
    assert r.target == 0.2 and r.steps == 100 and r.horizon == 100
    even = scoring.reference([[1.0, 0.4], [1.0, 0.2]], [0, 10])
    assert even.target == pytest.approx(0.3)                        # the mean of the middle two
    assert scoring.reference([[1.0, np.nan], [1.0, np.inf]], [0, 10]) is None


def test_half_the_steps_scores_two_and_ten_times_faster_is_clipped_to_four():
    assert score([1.0, 0.6, 0.2, 0.1, 0.05]).score == pytest.approx(2.0)
    fast = score([1.0, 0.01, 0.01, 0.01, 0.01])   # crosses 0.2 at 25 * log 5 / log 100 ~ 8.7 steps: clipped
    assert fast.score == 4.0 and fast.steps_to_target == pytest.approx(25 * math.log(5) / math.log(100))
    tenfold = scoring.reference([np.linspace(1.0, 0.1, 101)], range(101))
    assert scoring.speedups(np.r_[np.linspace(1.0, 0.1, 11), np.full(90, 0.1)], tenfold)[0] == 4.0
    assert score(REF_CURVES[0]).score == pytest.approx(1.0)


def test_steps_to_target_interpolates_log_loss_between_evaluations():
    # 1.0 at step 0, 0.01 at step 100: 0.1 is crossed at step 50 (linear in log loss)
    assert scoring.steps_to_target([[1.0, 0.01]], [0, 100], 0.1)[0] == pytest.approx(50.0)
    assert scoring.steps_to_target([[2.0, 1.0, 0.5]], [0, 10, 20], 0.25 * 2 ** 1.5)[0] == pytest.approx(15.0)
    assert scoring.steps_to_target([[1.0, np.inf, 0.5]], [0, 10, 20], 0.75)[0] == 20.0   # no line through inf
    assert scoring.steps_to_target([[1.0, 0.9]], [0, 100], 0.75)[0] == math.inf
    assert scoring.steps_to_target([[0.5, 0.4]], [0, 100], 0.75)[0] == 1.0               # floored at one step


def test_never_reaching_scores_below_one_and_rises_with_progress():
    finals = [0.9, 0.6, 0.4, 0.25, 0.2001]
    scores = [score([1.0, 0.95, 0.93, 0.92, f]).score for f in finals]
    assert all(0.25 <= s < 1.0 for s in scores)
    assert scores == sorted(scores) and scores[0] == 0.25 and scores[-1] > 0.99
    # the not-reaching scale: fraction of the log-loss reduction achieved, times the reaching-at-H score
    assert scores[2] == pytest.approx(math.log(1 / 0.4) / math.log(1 / 0.2))
    assert not score([1.0, 0.95, 0.93, 0.92, 0.4]).reached
    # a loss that went up scores the floor, and the loss ratio is clipped the same way
    worse = score([1.0, 2.0, 3.0, 4.0, 5.0])
    assert worse.score == 0.25 and worse.loss_ratio == 0.25


def test_not_reaching_ranks_below_reaching_at_the_horizon():
    # The reference reaches its target at step 50 (its curve dips below at 50 and ends there).
    r = scoring.reference([[1.0, 0.5, 0.2, 0.2, 0.2]], STEPS)
    assert r.steps == 50
    at_horizon = score([1.0, 0.9, 0.8, 0.5, 0.2], r).score
    almost = score([1.0, 0.9, 0.8, 0.5, 0.20001], r).score
    assert at_horizon == pytest.approx(0.5) and almost < at_horizon and almost == pytest.approx(0.5, abs=1e-3)


def test_nan_and_diverged_runs_score_the_floor():
    assert score([1.0, np.nan, 0.1, 0.1, 0.1]).score == 0.25
    assert score([1.0, 0.5, np.inf, np.inf, np.inf]).score == 0.25
    assert scoring.speedups([[np.nan] * 5], ref())[0] == 0.25
    # the evaluation's own divergence flags (e.g. blew past 10x the initial loss) are honoured
    flagged = scoring.score_task([[1.0, 0.1, 0.1, 0.1, 0.1]] * 3, ref(), diverged=[True, True, False])
    assert flagged.score == 0.25 and flagged.seed_scores[:2] == (0.25, 0.25) and flagged.seed_scores[2] > 1
    # one diverged seed out of three: the median curve is the other seeds'
    one_bad = scoring.score_task([[1.0, 0.6, 0.2, 0.1, 0.05]] * 2 + [[1.0, np.nan, 1.0, 1.0, 1.0]], ref())
    assert one_bad.score == pytest.approx(2.0) and min(one_bad.seed_scores) == 0.25
    assert scoring.failed_task().score == scoring.failed_task().loss_ratio == 0.25


def test_loss_ratio_is_target_over_final_clipped():
    r = ref()
    assert scoring.loss_ratios([0.1, 0.2, 0.4, 0.001, 100.0, np.nan, 0.0], r).tolist() == \
        pytest.approx([2.0, 1.0, 0.5, 4.0, 0.25, 0.25, 4.0])


def _noisy_task(rng, speed):
    """Three seeds of a curve reaching the reference's target after 100 / speed steps (+ noise)."""
    reach = 100 / speed * np.exp(rng.normal(0, 0.2, 3))
    s = np.asarray(STEPS, float)
    return [np.clip(1.0 - 0.8 * s / r, 0.05, None) for r in reach]


def test_interval_contains_the_estimate_and_narrows_with_more_tasks():
    rng = np.random.default_rng(1)
    widths = []
    for n in (4, 32):
        tasks = [_noisy_task(rng, speed) for speed in np.exp(rng.normal(0.3, 0.5, n))]
        point = scoring.geomean([scoring.score_task(c, ref()).score for c in tasks])
        draws = np.stack([scoring.bootstrap_draws(c, ref(), rng=np.random.default_rng(i))[0]
                          for i, c in enumerate(tasks)])
        lo, hi = scoring.bootstrap_interval(draws)
        assert lo <= point <= hi
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2
    # a constant score has a zero-width interval; the interval is reproducible (seeded)
    assert scoring.bootstrap_interval(np.full((3, 50), 2.0)) == pytest.approx((2.0, 2.0))
    d = np.random.default_rng(0).uniform(0.5, 2, (5, 200))
    assert scoring.bootstrap_interval(d) == scoring.bootstrap_interval(d)


def test_win_tie_loss_needs_separated_seed_ranges():
    assert scoring.compare_seeds([1.5, 1.6, 2.0], [0.9, 1.0, 1.1]) == "win"
    assert scoring.compare_seeds([0.5, 0.6], [0.9, 1.1]) == "loss"
    assert scoring.compare_seeds([1.05, 2.0, 3.0], [0.9, 1.0, 1.1]) == "tie"   # better median, overlap
    assert scoring.compare_seeds([4.0, 4.0], [4.0, 4.0]) == "tie"
    assert scoring.compare_seeds([1.0001], [1.0]) == "tie"                      # float noise is no win


def test_one_extreme_task_moves_the_geomean_by_at_most_four_to_the_one_over_n():
    n = 8
    base = [1.0] * n
    for extreme in (1e6, 37.0, 0.022, 0.0, math.nan):
        moved = scoring.geomean(base[:-1] + [scoring.clip(extreme)])
        assert 4 ** (-1 / n) - 1e-12 <= moved <= 4 ** (1 / n) + 1e-12


def test_performance_profile_on_steps_to_target_up_to_four():
    steps = np.array([[10.0, 20.0, math.inf], [30.0, 15.0, 60.0]])
    prof = scoring.performance_profile(steps, ["a", "b", "c"])
    assert prof["ratios"] == [[1.0, 2.0, None], [2.0, 1.0, 4.0]]
    assert prof["tau"][0] == 1.0 and prof["tau"][-1] == pytest.approx(4.0)
    assert prof["rho"]["a"][0] == 0.5 and prof["rho"]["a"][-1] == 1.0
    assert prof["rho"]["c"][0] == 0.0 and prof["rho"]["c"][-1] == 0.5   # never reached on task 0


def test_search_fitness_is_lower_better_and_bounded():
    assert scoring.search_fitness([1.0, 1.0]) == pytest.approx(1.0)
    assert scoring.search_fitness([2.0, 2.0]) == pytest.approx(0.5)
    assert scoring.search_fitness([100.0]) == pytest.approx(0.25)
    assert scoring.search_fitness([None, 0.0]) == scoring.WORST_FITNESS == 4.0
    with pytest.raises(ValueError):
        scoring.search_fitness([])


def test_tuning_loss_is_the_median_with_diverged_seeds_infinite():
    finals = np.array([[0.3, 0.1, 0.2], [0.1, np.nan, 0.2], [0.1, np.nan, np.inf]])
    assert scoring.tuning_losses(finals).tolist() == pytest.approx([0.2, 0.2, math.inf])
    assert scoring.tuning_losses(np.array([[0.1, 0.3]]), np.array([[False, True]]))[0] == math.inf


def test_curves_of_another_horizon_are_refused():
    with pytest.raises(ValueError, match="same horizon"):
        scoring.speedups([[1.0, 0.5]], ref())
