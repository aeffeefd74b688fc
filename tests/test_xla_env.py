"""The XLA:CPU workaround of ``metaopt.xla_env`` (a scheduler deadlock on LSTM scans under vmap)."""
from __future__ import annotations

import os
import subprocess
import sys

from metaopt.xla_env import REQUIRED_XLA_FLAGS, with_required_flags

# The shape that deadlocked before the flag (3 of 3 repeats hung without it): adamw, vmap over 2 runs,
# 40 steps evaluated every 10, the quick LSTM LM (every thread
# parked on a futex, forever). A hang here fails the test through the subprocess timeout, which is
# ~50x the run's normal length (compile included) so a slow machine does not fail it.
HANG_REPRO = """
import jax, jax.numpy as jnp, tasks, metaopt
from metaopt.specs import resolve
task, spec = tasks.get("lm_lstm_stdlib_quick"), resolve("adamw")
one = lambda k, lr: metaopt.train(task, spec.factory, k, 40, 10, learning_rate=lr).valid_loss
out = jax.jit(jax.vmap(one))(jnp.stack([jax.random.PRNGKey(0), jax.random.PRNGKey(1)]), jnp.full((2,), 1e-3))
print(float(out[0, -1]), float(out[1, -1]))
"""


def test_required_flags_are_added_once_and_user_flags_kept():
    flags = with_required_flags("--xla_cpu_multi_thread_eigen=false")
    assert flags.startswith("--xla_cpu_multi_thread_eigen=false")
    assert all(f in flags.split() for f in REQUIRED_XLA_FLAGS)
    assert with_required_flags(flags) == flags
    # a user who sets the flag themselves keeps their value
    name = REQUIRED_XLA_FLAGS[0].split("=")[0]
    assert with_required_flags(f"{name}=true") == f"{name}=true"


def test_importing_metaopt_sets_the_flags_for_this_process_and_children():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = subprocess.run([sys.executable, "-c", "import tasks, os; print(os.environ['XLA_FLAGS'])"],
                         env=env, capture_output=True, text=True, timeout=120, check=True).stdout
    assert all(f in out.split() for f in REQUIRED_XLA_FLAGS)


def test_vmapped_lstm_training_returns():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    done = subprocess.run([sys.executable, "-c", HANG_REPRO], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    a, b = map(float, done.stdout.split())
    assert 0 < a < 10 and 0 < b < 10 and a != b   # two seeds, two finite, different losses


# Two processes compile the same function: the first writes the cache, the second loads it (JAX logs a
# cache hit). JAX is imported *before* metaopt, the order a user's script may take.
CACHE_PROBE = """
import logging, jax, jax.numpy as jnp
import metaopt
logging.basicConfig(level=logging.DEBUG, format="%(message)s")
logging.getLogger("jax._src.compilation_cache").setLevel(logging.DEBUG)
logging.getLogger("jax._src.compiler").setLevel(logging.DEBUG)
f = jax.jit(lambda x: jnp.tanh(x @ x.T).sum() * 3.0)
print("value", float(f(jnp.arange(12.0).reshape(3, 4))))
"""


def _probe(env):
    return subprocess.run([sys.executable, "-c", CACHE_PROBE], env=env, capture_output=True, text=True,
                          timeout=240, check=True)


def test_compilation_cache_is_written_then_read_by_the_next_process(tmp_path):
    cache = tmp_path / "xla"
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    env.update({"METAOPT_XLA_CACHE": str(cache), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"})
    first = _probe(env)
    entries = sorted(p.name for p in cache.rglob("*") if p.is_file())
    assert entries, first.stderr[-2000:]
    second = _probe(env)
    assert first.stdout == second.stdout
    assert "cache hit" in second.stderr.lower(), second.stderr[-2000:]
    assert "cache hit" not in first.stderr.lower()


def test_compilation_cache_off_writes_nothing(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    env.update({"METAOPT_XLA_CACHE": "off", "HOME": str(tmp_path), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"})
    out = subprocess.run([sys.executable, "-c", "import metaopt, os, jax; print(os.environ.get("
                          "'JAX_COMPILATION_CACHE_DIR'), jax.config.jax_compilation_cache_dir)"],
                         env=env, capture_output=True, text=True, timeout=120, check=True).stdout.split()
    assert out == ["None", "None"]
    assert not (tmp_path / ".cache" / "metaopt").exists()
