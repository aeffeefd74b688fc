"""``metaopt export NAME|FILE [--format optax|torch] -o out.py``: a standalone module for a program.

``--format optax`` (default): jax + optax only; ``--format torch``: a ``torch.optim.Optimizer`` (torch only).
"""
from __future__ import annotations

import argparse

NAME = "export"
HELP = "export a library optimizer, .opt file or learned optimizer (lopt:PATH) as a standalone module"
ORDER = 22


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="NAME|FILE|lopt:PATH",
                   help="library name, path to a .opt file, or lopt:PATH (a meta-training run or checkpoint dir)")
    p.add_argument("-o", "--output", help="write here (default: stdout; required for lopt:, whose weights "
                                          "are written beside it as <stem>.npz, or <stem>.safetensors for torch)")
    p.add_argument("--format", choices=("optax", "torch"), default="optax",
                   help="optax: a function returning an optax transformation (jax + optax); torch: a "
                        "torch.optim.Optimizer subclass (torch only)")


def run(args: argparse.Namespace) -> int:
    if args.target.startswith("lopt:"):
        return _export_learned(args.target[len("lopt:"):], args.output, getattr(args, "format", "optax"))
    from metaopt import DSLError, to_source, to_torch_source
    from metaopt.export_torch import class_name
    from metaopt.commands.show import load
    from metaopt.io import atomic_write_text
    try:
        program = load(args.target)
    except (DSLError, KeyError, OSError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}")
        return 1
    torch_format = getattr(args, "format", "optax") == "torch"
    try:
        src = to_torch_source(program) if torch_format else to_source(program)
    except NotImplementedError as e:
        print(f"error: {e}")
        return 1
    if args.output:
        atomic_write_text(args.output, src)
        if torch_format:
            print(f"wrote {args.output}: class {class_name(program)}(torch.optim.Optimizer)")
        else:
            print(f"wrote {args.output}: def {program.name}(learning_rate, ...) -> optax.GradientTransformationExtraArgs")
    else:
        print(src, end="")
    return 0


def _export_learned(path: str, output: str | None, fmt: str = "optax") -> int:
    from metaopt.learned.source import write_export
    from metaopt.learned.torch_source import write_torch_export
    if not output:
        print("error: exporting lopt:PATH needs -o out.py (the weights file is written beside it)")
        return 2
    try:
        py, weights = (write_torch_export if fmt == "torch" else write_export)(path, output)
    except (OSError, ValueError, KeyError) as e:
        print(f"error: cannot export learned optimizer at {path!r}: {e}")
        return 1
    made = ("optimizer(params, lr_multiplier=1.0) -> torch.optim.Optimizer" if fmt == "torch"
            else "optimizer(lr_multiplier=1.0) -> optax.GradientTransformation")
    print(f"wrote {py} and its weights {weights}: {made}")
    return 0
