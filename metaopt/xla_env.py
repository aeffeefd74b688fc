"""XLA settings every metaopt process needs, applied before JAX creates its CPU backend.

XLA reads ``XLA_FLAGS`` once, when the first computation creates the backend, so setting it when
``metaopt`` (or ``tasks``) is imported is early enough even if ``jax`` itself was imported before.

Why the flag: with jax/jaxlib 0.10.2, XLA:CPU's concurrency-optimized scheduler deadlocks on some
programs that nest an LSTM scan (``flax.linen.RNN``) in the training loop under ``vmap``: every thread
parks on a futex and the run never returns (seen on ``lm_lstm_stdlib*`` with lion, adabelief and
adamw at batch 2; batch 1 and SGD ran). Disabling that scheduler removed the hang in every repeat we
tried and changes no result (a scheduling choice, not a numerical one).

The persistent compilation cache: a search worker, an evaluation worker and a meta-training worker each
compile the same trainers (12-25 s per task on this CPU), every worker of a run compiles them again, and
so does the next run. JAX can keep compiled executables on disk keyed by the program, the compile options
and the versions, so a second compile of the same trainer becomes a file read; results are the same
executable. ``METAOPT_XLA_CACHE`` names the directory (default ``~/.cache/metaopt/xla``; ``off`` turns it
off; an explicit ``JAX_COMPILATION_CACHE_DIR`` wins). Child processes and Ray workers inherit it.
"""
from __future__ import annotations

import os
import sys

REQUIRED_XLA_FLAGS = ("--xla_cpu_enable_concurrency_optimized_scheduler=false",)


def with_required_flags(flags: str) -> str:
    """``flags`` (an ``XLA_FLAGS`` string) plus every required flag whose name it does not set."""
    present = {f.split("=")[0] for f in flags.split()}
    extra = [f for f in REQUIRED_XLA_FLAGS if f.split("=")[0] not in present]
    return " ".join([flags.strip(), *extra]).strip()


CACHE_ENV = "METAOPT_XLA_CACHE"
CACHE_MIN_COMPILE_SECS = "1"            # cheaper compiles are not worth a file
CACHE_MAX_BYTES = str(4 * 2**30)        # JAX evicts least recently used entries beyond this


def compilation_cache_dir() -> str | None:
    """The persistent compilation cache directory ``METAOPT_XLA_CACHE`` asks for, or None when off."""
    value = os.environ.get(CACHE_ENV)
    if value is None:
        return os.path.join(os.path.expanduser("~"), ".cache", "metaopt", "xla")
    return None if value.strip().lower() in ("", "0", "off", "none", "false") else value


def apply() -> None:
    """Add the required flags to this process's ``XLA_FLAGS`` and turn the compilation cache on (both
    inherited by its child processes)."""
    os.environ["XLA_FLAGS"] = with_required_flags(os.environ.get("XLA_FLAGS", ""))
    cache = compilation_cache_dir()
    if cache is None or "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return
    os.environ["JAX_COMPILATION_CACHE_DIR"] = cache
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", CACHE_MIN_COMPILE_SECS)
    os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", CACHE_MAX_BYTES)
    if "jax" in sys.modules:      # JAX read its environment when it was imported: tell it directly
        import jax
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs",
                          float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))
        jax.config.update("jax_compilation_cache_max_size", int(os.environ["JAX_COMPILATION_CACHE_MAX_SIZE"]))


apply()
