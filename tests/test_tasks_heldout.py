"""The suites are pairwise disjoint; docs/tasks.md states each task's parameter count and horizon correctly;
the held-out generators hold their promises (fixed valid sets, no guessable ground truth, splits that do not
overlap).

Fast by design (no training): shapes come from ``jax.eval_shape``. That every registered task builds and gives
finite losses and gradients (and a non-zero first gradient) is tests/test_tasks.py's short AdamW run, one
compile per task; a separate loss+gradient probe here would compile every task a second time.
"""
import functools
import itertools
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tasks
from tasks import synthetic, transformer

DOC = Path(__file__).resolve().parents[1] / "docs" / "tasks.md"
SUITE_TASKS = sorted({name for names in tasks.SUITES.values() for name in names})


@functools.cache
def _params(name: str) -> int:
    return tasks.get(name).param_count()


def _doc_rows() -> dict[str, dict]:
    """The task table of docs/tasks.md: ``| suite | task | kind | params | steps | batch | ... |``."""
    rows = {}
    text = DOC.read_text()
    section = text.split("## Every suite's tasks", 1)[1].split("\n## ", 1)[0]
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 6 and re.fullmatch(r"`[\w-]+`", cells[1]) and re.fullmatch(r"[\d,]+", cells[3]):
            rows[cells[1].strip("`")] = {"suite": cells[0], "params": int(cells[3].replace(",", "")),
                                         "steps": int(cells[4].replace(",", ""))}
    return rows


def test_suites_pairwise_disjoint_and_sized():
    for a, b in itertools.combinations(tasks.SUITES, 2):
        assert not set(tasks.SUITES[a]) & set(tasks.SUITES[b]), (a, b, set(tasks.SUITES[a]) & set(tasks.SUITES[b]))
    for name, names in tasks.SUITES.items():
        assert len(names) == len(set(names)), f"suite {name!r} lists a task twice"
    assert len(tasks.SUITES["heldout"]) >= 12 and len(tasks.SUITES["validation"]) >= 5
    # every held-out kind has a cheaper quick twin (fewer steps or fewer parameters, never more of either)
    for name in tasks.SUITES["heldout"]:
        full, quick = tasks.get(name), tasks.get(f"{name}_quick")
        assert f"{name}_quick" in tasks.SUITES["heldout-quick"]
        assert quick.steps <= full.steps and _params(quick.name) <= _params(name), name
        assert (quick.steps, _params(quick.name)) != (full.steps, _params(name)), name


def test_transformer_lm_is_not_a_toy():
    lm = tasks.get("lm_transformer_stdlib")
    assert _params(lm.name) >= 200_000 and lm.steps >= 1000


def test_docs_table_matches_every_suite_task():
    rows = _doc_rows()
    missing = [n for n in SUITE_TASKS if n not in rows]
    assert not missing, f"{DOC}: no table row for {missing}"
    for suite, names in tasks.SUITES.items():
        for name in names:
            task, row = tasks.get(name), rows[name]
            assert row["suite"] == suite, (name, row["suite"], suite)
            assert row["params"] == _params(name), (name, row["params"], _params(name))
            assert row["steps"] == task.steps, (name, row["steps"], task.steps)


@pytest.mark.parametrize("name", tasks.SUITES["heldout-quick"])
def test_valid_batch_fixed_train_batches_vary(name):
    task = tasks.get(name)
    k1, k2 = jax.random.PRNGKey(1), jax.random.PRNGKey(2)
    for a, b in zip(jax.tree_util.tree_leaves(task.batch(k1, "valid")),
                    jax.tree_util.tree_leaves(task.batch(k2, "valid"))):
        np.testing.assert_array_equal(a, b)
    differ = [not np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(task.batch(k1, "train")),
                                                       jax.tree_util.tree_leaves(task.batch(k2, "train")))]
    assert any(differ)
    with pytest.raises(ValueError):
        task.batch(k1, "test")


def test_sparse_parity_labels_are_the_secret_product():
    x, y = tasks.get("sparse_parity_quick").batch(jax.random.PRNGKey(0), "train")
    x, y = np.asarray(x), np.asarray(y)
    assert set(np.unique(x)) == {-1.0, 1.0}
    products = [np.prod(x[:, list(s)], axis=1) for s in itertools.combinations(range(x.shape[1]), 3)]
    matches = [s for s, p in zip(itertools.combinations(range(x.shape[1]), 3), products) if np.array_equal(p, y)]
    assert len(matches) == 1                      # exactly one 3-subset explains the labels
    assert np.abs(x.mean(0)).max() < 0.4          # balanced bits: no single bit predicts the label
    assert synthetic.PARITY_DATA_SEED == 0


def test_matrix_completion_validates_on_unobserved_entries():
    task = tasks.get("matrix_completion_quick")
    i, j, _ = (np.asarray(a) for a in task.batch(jax.random.PRNGKey(0), "train"))
    vi, vj, vv = (np.asarray(a) for a in task.batch(jax.random.PRNGKey(0), "valid"))
    assert not {(a, b) for a, b in zip(i, j)} & {(a, b) for a, b in zip(vi, vj)}
    assert 0.5 < float(np.var(vv)) < 2.0                     # unit-variance entries, as documented
    # a zero factorisation (what a rule ignoring the gradient converges to from w -> 0) is no solution
    zero = jax.tree_util.tree_map(jnp.zeros_like, task.init(jax.random.PRNGKey(0)))
    assert float(task.loss(zero, task.batch(jax.random.PRNGKey(0), "valid"))) > 0.5
    # M* is drawn per run: two runs complete different matrices
    a, b = (task.for_run(jax.random.PRNGKey(s)).batch(jax.random.PRNGKey(0), "valid") for s in (1, 2))
    assert not np.array_equal(np.asarray(a[2]), np.asarray(b[2]))


def test_icl_regression_draws_a_fresh_teacher_per_sequence():
    task = tasks.get("icl_linreg_quick")
    seq, y = (np.asarray(a) for a in task.batch(jax.random.PRNGKey(0), "train"))
    dim = seq.shape[-1] - 1
    x = seq[:, ::2, :dim]
    np.testing.assert_allclose(seq[:, 1::2, dim], y)        # y tokens carry the targets
    assert np.all(seq[:, ::2, dim] == 0)                     # x tokens never leak the target
    teachers = [np.linalg.lstsq(xs, ys * np.sqrt(dim), rcond=None)[0] for xs, ys in zip(x, y)]
    assert np.std([t[0] for t in teachers]) > 0.3            # w differs between sequences
    assert transformer.ICL_VALID_SEED == 0


def test_modular_addition_split_is_disjoint_and_complete():
    task = tasks.get("modular_addition_quick")
    xv, yv = (np.asarray(a) for a in task.batch(jax.random.PRNGKey(0), "valid"))
    xt, yt = (np.asarray(a) for a in task.batch(jax.random.PRNGKey(0), "train"))
    p = int(xv[0, 2])
    np.testing.assert_array_equal(yv, (xv[:, 0] + xv[:, 1]) % p)
    np.testing.assert_array_equal(yt, (xt[:, 0] + xt[:, 1]) % p)
    assert not {tuple(r) for r in xt} & {tuple(r) for r in xv}
    assert abs(len(xv) - 0.2 * p * p) <= 1
