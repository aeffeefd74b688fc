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
