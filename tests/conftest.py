"""Suite-wide settings, applied before any test module imports JAX.

XLA compiles with most optimizations off (``jax_disable_most_optimizations``). The suite's programs are tiny
(100 steps on trees of a few hundred numbers, smoke tasks), so compiling is most of every test's time, and an
unoptimized compile is about half the CPU time (measured: the Adam-family reference cases of
test_library_paper.py 118 -> 66 CPU-s; the cheat and meta-training cases 66 -> 42) while running the result
stays cheap. Tolerances are unchanged: every comparison runs both sides under the same flags. Subprocesses and
Ray workers the tests start inherit the variable. A run that wants the production compiler sets
``JAX_DISABLE_MOST_OPTIMIZATIONS=0``.

XLA:CPU also emits its fusions through the older elemental emitter (``--xla_cpu_use_fusion_emitters=false``): the
MLIR fusion emitters (the jaxlib 0.10 default) spend most of a small program's compile in their own pipeline.
Measured under the flag above on this 2-core machine: a library reference case (100-step scan of adamp, came,
muon) compiles in 1.7-2.0 s instead of 3.9-5.4 s; a full-horizon adamw run (metaopt.train) of
digits_convnet_quick, lm_transformer_stdlib_quick and icl_linreg_quick in 4.4/5.4/6.3 s instead of 8.0/15.4/9.5 s,
with the same final losses to 5 digits. XLA_FLAGS is read once, when the CPU backend is created, so it is set here
before any test imports JAX (metaopt.xla_env keeps it and adds its own); subprocesses and Ray workers inherit it.
A run that sets ``--xla_cpu_use_fusion_emitters`` itself keeps its choice.

The persistent compilation cache (``metaopt.xla_env``) is off for tests: a test must not pass or fail by what an
earlier run left in ``~/.cache``. Tests that need it name their own directory.
"""
import os

os.environ.setdefault("METAOPT_XLA_CACHE", "off")

os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
if "xla_cpu_use_fusion_emitters" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_use_fusion_emitters=false").strip()

if "jax" in __import__("sys").modules:      # a plugin imported JAX first: its flags are already read
    import jax

    jax.config.update("jax_disable_most_optimizations", os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] == "1")
