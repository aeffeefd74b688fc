"""XLA settings every metaopt process needs, applied before JAX creates its CPU backend.

XLA reads ``XLA_FLAGS`` once, when the first computation creates the backend, so setting it when
``metaopt`` (or ``tasks``) is imported is early enough even if ``jax`` itself was imported before.

Why the flag: with jax/jaxlib 0.10.2, XLA:CPU's concurrency-optimized scheduler deadlocks on some
programs that nest an LSTM scan (``flax.linen.RNN``) in the training loop under ``vmap``: every thread
parks on a futex and the run never returns (seen on ``lm_lstm_stdlib*`` with lion, adabelief and
adamw at batch 2; batch 1 and SGD ran). Disabling that scheduler removed the hang in every repeat we
tried and changes no result (a scheduling choice, not a numerical one).
"""
from __future__ import annotations

import os

REQUIRED_XLA_FLAGS = ("--xla_cpu_enable_concurrency_optimized_scheduler=false",)


def with_required_flags(flags: str) -> str:
    """``flags`` (an ``XLA_FLAGS`` string) plus every required flag whose name it does not set."""
    present = {f.split("=")[0] for f in flags.split()}
    extra = [f for f in REQUIRED_XLA_FLAGS if f.split("=")[0] not in present]
    return " ".join([flags.strip(), *extra]).strip()


def apply() -> None:
    """Add the required flags to this process's ``XLA_FLAGS`` (inherited by its child processes)."""
    os.environ["XLA_FLAGS"] = with_required_flags(os.environ.get("XLA_FLAGS", ""))


apply()
