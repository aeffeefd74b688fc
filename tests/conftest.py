"""Suite-wide settings, applied before any test module imports JAX.

XLA compiles with most optimizations off (``jax_disable_most_optimizations``). The suite's programs are tiny
(100 steps on trees of a few hundred numbers, smoke tasks), so compiling is most of every test's time, and an
unoptimized compile is about half the CPU time (measured: the Adam-family reference cases of
test_library_paper.py 118 -> 66 CPU-s; the cheat and meta-training cases 66 -> 42) while running the result
stays cheap. Tolerances are unchanged: every comparison runs both sides under the same flags. Subprocesses and
Ray workers the tests start inherit the variable. A run that wants the production compiler sets
``JAX_DISABLE_MOST_OPTIMIZATIONS=0``.
"""
import os

os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

if "jax" in __import__("sys").modules:      # a plugin imported JAX first: its flags are already read
    import jax

    jax.config.update("jax_disable_most_optimizations", os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] == "1")
