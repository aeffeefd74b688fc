"""Distillation, imitation data and fitness: the recorder reproduces metaopt.train's run and optax's moments,
is deterministic to the byte, and the teacher-forced replay scores optax.adam's own updates as Adam."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import metaopt
import tasks
from metaopt.distill import fit, record, store
from metaopt.distill.fit import imitation, tensor_errors
from metaopt.distill.record import sample_leaf
from metaopt.leaf_io import leaf_paths

LR, STEPS, EVERY, PER = 1e-2, 20, 4, 32
TASKS = ["smoke_digits_mlp", "smoke_quadratic"]     # sub-sampled matrices; a task kept whole


@pytest.fixture(scope="module")
def adam_rec(tmp_path_factory):
    path = tmp_path_factory.mktemp("rec") / "adam.npz"
    rec = record.record("optax:adam", TASKS, STEPS, 0, path, learning_rate=LR, every=EVERY, per_tensor=PER)
    return rec, path


def test_record_is_byte_identical_and_loads_back(adam_rec, tmp_path):
    rec, path = adam_rec
    again = tmp_path / "again.npz"
    record.record("optax:adam", TASKS, STEPS, 0, again, learning_rate=LR, every=EVERY, per_tensor=PER)
    assert path.read_bytes() == again.read_bytes()
    back = store.load(path)
    assert back.header == {**rec.header, "format": store.FORMAT}
    for a, b in zip(rec.trajectories, back.trajectories):
        assert a.leaves == b.leaves
        for name in store.ARRAYS:
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    other = record.record("optax:adam", TASKS[:1], STEPS, 1, None, learning_rate=LR, every=EVERY, per_tensor=PER)
    assert not np.array_equal(other.trajectories[0].g, rec.trajectories[0].g)     # the seed matters


def test_header_and_shapes(adam_rec):
    rec, _ = adam_rec
    h = rec.header
    assert h["teacher"]["spec"] == "optax:adam" and h["teacher"]["kind"] == "optax"
    assert len(h["teacher"]["digest"]) == 16
    assert h["tasks"] == TASKS and h["seeds"] == [0] and h["steps"] == [STEPS, STEPS]
    assert h["features"] == ["m0.5", "m0.9", "m0.99", "m0.999", "v0.5", "v0.9", "v0.99", "v0.999"]
    assert h["learning_rate"] == LR
    K = len(range(0, STEPS, EVERY))
    for traj, name in zip(rec.trajectories, TASKS):
        assert traj.task == name
        shapes = jax.eval_shape(tasks.get(name).init, jax.random.PRNGKey(0))
        assert sorted(leaf.shape for leaf in traj.leaves) == sorted(tuple(x.shape) for x in jax.tree.leaves(shapes))
        N = sum(leaf.size for leaf in traj.leaves)
        assert traj.g.shape == traj.w.shape == (STEPS, N) and traj.loss.shape == (STEPS,)
        assert traj.u.shape == (K, N) and traj.features.shape == (K, 8, N) and traj.idx.shape == (N,)
        np.testing.assert_array_equal(traj.steps, np.arange(1, STEPS + 1, EVERY))
        for leaf in traj.leaves:
            assert len(leaf.sample_shape) == len(leaf.shape) and leaf.size <= PER
            mine = traj.idx[leaf.offset:leaf.offset + leaf.size]
            assert len(set(mine.tolist())) == leaf.size and mine.max() < np.prod(leaf.shape)
    digits = rec.trajectories[0]
    kernel = next(leaf for leaf in digits.leaves if leaf.shape == (64, 8))
    assert kernel.sample_shape == (6, 5) and kernel.io            # 6 of 64 rows x 5 of 8 columns; first layer


def test_sample_leaf_shapes():
    rng = np.random.default_rng(0)
    idx, shape = sample_leaf((3, 3, 4, 16), 64, rng)
    assert shape == (1, 1, 8, 8) and idx.size == 64
    rows, cols = np.unravel_index(idx, (36, 16))
    assert len(set(rows.tolist())) == 8 and len(set(cols.tolist())) == 8   # a sub-block of the matrix view
    assert sample_leaf((100,), 10, rng)[1] == (10,)
    assert sample_leaf((5, 2), 64, rng)[1] == (5, 2)                        # small tensors kept whole
    assert sample_leaf((), 64, rng)[1] == ()


def test_trajectory_is_metaopt_train_run(adam_rec):
    """The recorder's losses are metaopt.train's with the same key (the training loop is the reference), and
    its first w is the task's initialization at the sampled indices."""
    rec, _ = adam_rec
    for traj in rec.trajectories:
        task, key = tasks.get(traj.task), jax.random.PRNGKey(traj.seed)
        ref = metaopt.train(task, optax.adam, key, STEPS, eval_every=STEPS, learning_rate=LR)
        np.testing.assert_allclose(traj.loss, np.asarray(ref.train_loss), rtol=2e-5)
        init = task.for_run(key).init(jax.random.split(key, 3)[0])
        leaves = dict(zip(leaf_paths(init), jax.tree.leaves(init)))
        for leaf in traj.leaves:
            want = np.ravel(leaves[leaf.path])[traj.idx[leaf.offset:leaf.offset + leaf.size]]
            np.testing.assert_array_equal(traj.w[0, leaf.offset:leaf.offset + leaf.size], want)


def test_features_are_optax_moments(adam_rec):
    """m_b and v_b are the first and second moments optax.scale_by_adam keeps (no bias correction)."""
    rec, _ = adam_rec
    traj = rec.trajectories[0]
    for b1, b2 in ((0.9, 0.999), (0.5, 0.99)):
        tx = optax.scale_by_adam(b1=b1, b2=b2)
        state, mus, nus = tx.init(jnp.zeros(traj.n)), [], []
        for g in traj.g:
            _, state = tx.update(jnp.asarray(g), state)
            mus.append(state.mu)
            nus.append(state.nu)
        pos = traj.steps - 1
        mu, nu = np.stack(mus)[pos], np.stack(nus)[pos]
        # the EMA's two terms can cancel, so rounding is relative to the moment's scale, not each element
        np.testing.assert_allclose(rec.feature(traj, f"m{b1:g}"), mu, rtol=1e-6, atol=1e-6 * np.abs(mu).max())
        np.testing.assert_allclose(rec.feature(traj, f"v{b2:g}"), nu, rtol=1e-6, atol=1e-6 * np.abs(nu).max())


def test_u_is_minus_the_applied_change_over_lr():
    """With optax.sgd as teacher u is the gradient, and w moves by -lr * u between recorded steps."""
    rec = record.record("optax:sgd", ["smoke_linreg"], 12, 0, None, learning_rate=0.1, every=3)
    traj = rec.trajectories[0]
    np.testing.assert_allclose(traj.u, traj.g[traj.steps - 1], rtol=1e-6)
    np.testing.assert_allclose(traj.w[traj.steps] - traj.w[traj.steps - 1], -0.1 * traj.u, rtol=1e-4, atol=1e-7)


def test_program_teacher():
    """A DSL program as teacher: its own replay imitates it exactly, another rule does not."""
    rec = record.record(metaopt.library.get("lion"), ["smoke_linreg"], 16, 0, None, learning_rate=1e-3, every=2)
    assert rec.header["teacher"]["kind"] == "program" and rec.header["teacher"]["spec"] == "lion"
    lion, adam = imitation(["lion", "adam"], rec)
    assert lion.cos_error < 1e-6 and adam.cos_error > 0.01


def test_tensor_errors_equations():
    rng = np.random.default_rng(0)
    u = rng.standard_normal((3, 10)).astype(np.float32)
    seg = jnp.asarray([0] * 4 + [1] * 6)
    f = lambda p: [np.asarray(x) for x in tensor_errors(jnp.asarray(p, jnp.float32), jnp.asarray(u), seg, 2)]
    c, m, w, s = f(2 * u)
    np.testing.assert_allclose(c, 0, atol=1e-6)
    np.testing.assert_allclose(m, 0, atol=1e-6)
    np.testing.assert_allclose(s, 0.5, rtol=1e-6)
    c, m, _, s = f(-u)
    np.testing.assert_allclose(c, 2, rtol=1e-6)
    np.testing.assert_allclose(m, 1, rtol=1e-6)
    assert s == 0
    c, m, _, s = f(np.full_like(u, np.nan))
    np.testing.assert_array_equal(c, 2.0)
    np.testing.assert_array_equal(m, 1.0)
    p = rng.standard_normal(u.shape).astype(np.float32)
    c, m, w, s = f(p)
    parts = [slice(0, 4), slice(4, 10)]
    cos = np.array([[p[k, j] @ u[k, j] / np.linalg.norm(p[k, j]) / np.linalg.norm(u[k, j]) for k in range(3)]
                    for j in parts])
    np.testing.assert_allclose(c, (1 - cos).mean(1), rtol=1e-5)
    scale = max(0.0, float((p * u).sum() / (p * p).sum()))
    np.testing.assert_allclose(s, scale, rtol=1e-5)
    np.testing.assert_allclose(m, [((scale * p[:, j] - u[:, j]) ** 2).sum() / (u[:, j] ** 2).sum() for j in parts],
                               rtol=1e-5)
    np.testing.assert_array_equal(w, 1)


@pytest.mark.parametrize("engine", ["auto", "compiled"])
def test_adam_imitates_optax_adam_and_others_do_not(adam_rec, engine):
    rec, path = adam_rec
    res = {r.name: r for r in imitation(["adam", "sgd", "momentum", "signum", "lion"], path, engine=engine)}
    assert res["adam"].cos_error < 1e-5 and res["adam"].nmse < 1e-5
    np.testing.assert_allclose(res["adam"].scales, 1.0, rtol=1e-4)
    for name in ("sgd", "momentum", "signum", "lion"):
        assert res[name].cos_error > 0.05, name
        assert res[name].nmse > 0.05, name
    assert set(res["adam"].per_task) == set(TASKS)
    if engine == "auto":
        assert res["adam"].engine == "interpreter"


def test_engines_agree(adam_rec):
    rec, _ = adam_rec
    names = ["adam", "rmsprop", "momentum", "lion", "adabelief"]
    a = imitation(names, rec, engine="interpreter")
    b = imitation(names, rec, engine="compiled")
    for x, y in zip(a, b):
        assert x.engine == "interpreter" and y.engine == "compiled"
        np.testing.assert_allclose([x.cos_error, x.nmse], [y.cos_error, y.nmse], rtol=1e-4, atol=1e-6)


def test_regime_r2(adam_rec):
    rec, _ = adam_rec
    adam, sgd = imitation(["adam", "sgd"], rec, regimes=True)
    for regime, bins in adam.r2.items():
        if regime.startswith("|g|") or regime.startswith("phase"):   # these bins cover every element
            assert sum(b["fraction"] for b in bins.values()) == pytest.approx(1.0)
        for label, b in bins.items():
            if b["fraction"] > 0.01:
                assert b["r2"] > 0.9999, (regime, label)
    worst = min(b["r2"] for bins in sgd.r2.values() for b in bins.values() if b["fraction"] > 0.01)
    assert worst < 0.9


def test_unrunnable_program_gets_worst_values(adam_rec):
    rec, _ = adam_rec
    prog = metaopt.parse("optimizer o()\nreturn orthogonalize(g)\n")   # no fallback: fails on 1-D leaves
    (r,) = imitation([prog], rec)
    assert r.error and "fallback" in r.error and r.cos_error == 2.0 and r.nmse == 1.0


def test_lopt_checkpoint_end_to_end(tmp_path):
    """A shipped learned optimizer records and scores; the header names its checkpoint and digest."""
    from metaopt.evaluate.store import optimizer_digest
    ckpt = "checkpoints/lopt/hyper-pes-valid"
    rec = record.record(ckpt, ["smoke_digits_mlp"], 20, 0, tmp_path / "lopt.npz", every=2)
    assert rec.header["teacher"] == {"spec": "lopt:" + ckpt, "kind": "lopt", "digest": optimizer_digest("lopt:" + ckpt)}
    assert rec.learning_rate == 1.0 and np.abs(rec.trajectories[0].u).max() > 0
    res = imitation(["adam", "lion", "momentum", "signum"], tmp_path / "lopt.npz")
    for r in res:
        assert r.error is None and 0 < r.cos_error < 2 and 0 < r.nmse <= 1


def test_bad_inputs_are_named(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_text("not a zip")
    with pytest.raises(ValueError, match="bad.npz: not a distillation recording"):
        store.load(bad)
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(ValueError, match="no 'header' entry"):
        store.load(other)
    with pytest.raises(ValueError, match="needs learning_rate"):
        record.record(optax.adam(1e-3), ["smoke_quadratic"], 4, 0, None)
    with pytest.raises(ValueError, match="per_tensor"):
        record.record("optax:sgd", ["smoke_quadratic"], 4, 0, None, learning_rate=0.1, per_tensor=0)
    with pytest.raises(KeyError):
        record.record("optax:sgd", ["no_such_task"], 4, 0, None, learning_rate=0.1)
    with pytest.raises(ValueError, match="engine"):
        fit.replay([], store.Recording({"learning_rate": 1.0}, ()), engine="fast")
