"""metaopt: discover and learn optimizers."""
from metaopt import xla_env  # noqa: F401  (first: XLA flags must precede the backend)
from metaopt.train import train, TrainResult, eval_steps
from metaopt.dsl import DSLError, Program, parse
from metaopt.compile import optax_factory, static_hyperparams, to_optax
from metaopt.export import to_source
from metaopt.export_torch import to_torch_source
from metaopt.dsl.latex import to_latex
from metaopt import library

__all__ = ["train", "TrainResult", "eval_steps", "parse", "Program", "DSLError", "to_optax", "optax_factory",
           "static_hyperparams", "to_source", "to_torch_source",
           "to_latex", "library"]
__version__ = "0.1.0"
