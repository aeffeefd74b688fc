"""``metaopt run``: the main job behind ``make run``.

On its embedded default it runs the whole pipeline on this machine: a short evolutionary search from
``return g`` (configs/search/quick.yaml, local Ray; its funnel on the validation suite), the fair evaluation of
the best program against tuned AdamW and SGD on `heldout-quick` tasks neither the search nor the funnel saw, and the export of that program as a
standalone optax module. ``--baseline`` instead trains AdamW once on every task of a suite.
"""
from __future__ import annotations

import argparse
import os
import time

NAME = "run"
HELP = "the main job on its embedded default: search -> held-out evaluation -> export (what `make run` runs)"
ORDER = 0

# The embedded default: cheap workloads of the `heldout-quick` suite on which Adam and SGD separate (kinds the
# search never saw: a ConvNet, an MLP-Mixer, sparse parity, low-rank matrix completion) so the whole job stays within
# ~15 minutes on 2 cores. `metaopt eval --suite heldout-quick` covers the whole tier.
HELDOUT_SUITE = "heldout-quick"
HELDOUT_TASKS = ["digits_convnet_quick", "digits_mixer_quick", "sparse_parity_quick", "matrix_completion_quick"]
DEFAULT_CONFIG = "configs/search/quick.yaml"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=DEFAULT_CONFIG, help="search config (default: %(default)s)")
    p.add_argument("--out", help="run directory (default: runs/main-<time>)")
    p.add_argument("--address", help="join this Ray cluster instead of starting a local one")
    p.add_argument("--heldout-tasks", default=",".join(HELDOUT_TASKS),
                   help="comma-separated held-out tasks for the final evaluation")
    p.add_argument("--baseline", action="store_true",
                   help="instead: train AdamW once on every task of --suite and print the loss table")
    p.add_argument("--suite", default="train", help="suite for --baseline")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate for --baseline")


def run(args: argparse.Namespace) -> int:
    if args.baseline:
        return _adamw_table(args.suite, args.lr)
    from metaopt.commands import search as search_cmd

    if not os.path.exists(args.config):
        print(f"metaopt run: no search config at {args.config} (run from the repository root, or pass --config)")
        return 2
    out = args.out or os.path.join("runs", time.strftime("main-%Y%m%d-%H%M%S"))
    heldout = {"enabled": True, "suite": HELDOUT_SUITE, "tasks": args.heldout_tasks.split(","), "top_k": 1,
               "baselines": ["sgd"]}
    ns = search_namespace(args.config, out, args.address)
    start = time.time()
    code = search_cmd._run(ns, {"init": "minimal", "heldout": heldout})
    if code:
        return code
    best = os.path.join(out, "best", "found1")
    print(f"\nmain job done in {time.time() - start:.0f} s")
    _print_heldout_scores(out)
    print(f"  best program:        {best}.opt")
    print(f"  exported optimizer:  {best}.py   (def found1(learning_rate, ...) -> optax transformation)")
    print(f"  held-out table:      {os.path.join(out, 'heldout.md')}")
    print(f"  search summary:      {os.path.join(out, 'summary.md')}; TensorBoard: tensorboard --logdir {out}")
    print(f"  what made it:        {os.path.join(out, 'provenance.json')} (commit, package versions, machine, "
          f"command line; printed under 'Made by' above)")
    return 0


def search_namespace(config: str, out: str, address: str | None) -> argparse.Namespace:
    """The arguments ``metaopt search`` would parse for the main job (every attribute its parser sets)."""
    return argparse.Namespace(config=config, out=out, init="minimal", address=address, resume=None,
                              workers=None, no_progress=False, no_heldout=False,
                              # polish is off in the main job: its 1% acceptance tolerance is below the
                              # funnel's measured seed noise (search/polish.py), so it could ship a worse rule
                              no_polish=True, novelty_scores=False, seed=None)


def _print_heldout_scores(out: str) -> None:
    """The held-out headline: each optimizer's geometric-mean speedup over tuned AdamW with its 90% interval."""
    import json
    path = os.path.join(out, "heldout", "results.json")
    if not os.path.exists(path):
        print("  held-out evaluation: none (no program was found, or the evaluation was skipped)")
        return
    with open(path) as fh:
        summary = json.load(fh)["aggregate"]["summary"]
    print("  held-out score (geometric-mean speedup over tuned AdamW, 90% bootstrap interval; > 1 is faster):")
    for name, agg in summary.items():
        if agg.get("score") is None:
            print(f"    {name:<28} not scored")
            continue
        lo, hi = agg["score_ci"]
        print(f"    {name:<28} {agg['score']:.3f}  [{lo:.3f}, {hi:.3f}]  "
              f"win/tie/loss {agg['win']}/{agg['tie']}/{agg['loss']} over {agg['scored']} tasks")


def _adamw_table(suite: str, lr: float) -> int:
    import jax
    import optax

    import tasks
    from metaopt.train import train

    print(f"AdamW (lr={lr:g}) on every task of the {suite!r} suite")
    print(f"{'task':<30} {'steps':>6} {'init valid':>11} {'final valid':>12}")
    for task in tasks.suite(suite):
        res = train(task, optax.adamw, jax.random.PRNGKey(0), task.steps, task.eval_every, learning_rate=lr)
        print(f"{task.name:<30} {task.steps:>6} {float(res.valid_loss[0]):>11.4f} {float(res.valid_loss[-1]):>12.4f}")
    return 0
