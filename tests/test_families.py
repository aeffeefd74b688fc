"""The meta-training families: every sampled task differs from every validation and held-out task in
name, description and configuration (parameter and batch shapes), and the new families (transformer
LM, CNN, LSTM/GRU LM) vary what their docstrings say they vary and stay cheap."""
import functools

import jax
import pytest

import tasks

PROTECTED = sorted({n for s in ("validation", "heldout", "heldout-quick") for n in tasks.SUITES[s]})
NEW_FAMILIES = ("char_lm", "digits_cnn", "char_rnn")
SAMPLES = 16


def signature(task) -> tuple:
    """A task's configuration as shapes: its parameter tree and its train batch (what the model and
    the data pipeline are); two tasks with equal signatures train the same model on the same batches."""
    key = jax.random.PRNGKey(0)
    params = jax.eval_shape(task.init, key)
    batch = jax.eval_shape(lambda k: task.batch(k, "train"), key)
    shapes = lambda tree: tuple((tuple(x.shape), str(x.dtype)) for x in jax.tree_util.tree_leaves(tree))
    return jax.tree_util.tree_structure(params), shapes(params), shapes(batch)


@functools.cache
def protected() -> dict:
    return {n: (tasks.get(n).description, signature(tasks.get(n))) for n in PROTECTED}


def samples(family: str, n: int = SAMPLES) -> list:
    fam = tasks.get_family(family)
    return [fam.sample(k) for k in jax.random.split(jax.random.PRNGKey(31), n)]


def test_train_families_include_the_heldout_shapes():
    assert set(NEW_FAMILIES) <= set(tasks.TRAIN_FAMILIES)


@pytest.mark.parametrize("family", tasks.TRAIN_FAMILIES)
def test_no_sampled_task_is_a_validation_or_heldout_task(family):
    guard = protected()
    descriptions = {d: n for n, (d, _) in guard.items()}
    signatures = {s: n for n, (_, s) in guard.items()}
    for task in samples(family, SAMPLES if family in NEW_FAMILIES else 4):
        assert task.name not in guard, task.name
        assert task.description not in descriptions, (task.name, descriptions.get(task.description))
        assert signature(task) not in signatures, (task.name, signatures.get(signature(task)))


def test_the_signature_check_can_fail():
    """The guard above would catch a family that re-created a protected task under a new name."""
    from tasks.lm import char_lm
    clone = char_lm("renamed", d_model=32, layers=2, heads=4, context=32, batch_size=16)
    assert signature(clone) == protected()["lm_transformer_stdlib_quick"][1]


@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_new_family_varies_width_depth_batch_and_horizon_and_stays_small(family):
    drawn = samples(family)
    assert len({t.name for t in drawn}) >= SAMPLES // 2
    assert len({t.steps for t in drawn}) >= 2 and all(t.steps % t.eval_every == 0 for t in drawn)
    assert len({signature(t)[1] for t in drawn}) >= 4            # widths / depths really vary
    assert len({signature(t)[2] for t in drawn}) >= 2            # batch sizes (and contexts) too
    assert max(t.param_count() for t in drawn) <= 20_000       # a PES inner step stays in milliseconds
