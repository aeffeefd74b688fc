"""Distil a learned optimizer into a readable program (docs/distillation.md).

    rec = metaopt.distill.record.record("lopt:checkpoints/lopt/hyper-pes-valid", ["digits_mlp_w32_d1_relu"],
                                        None, 0, "runs/hyper.npz")              # imitation data (record.py, store.py)
    results = metaopt.distill.fit.imitation(["adam", "lion", "sgd"], rec)     # 1 - cos and scaled NMSE (fit.py)
    best = metaopt.distill.refit.refit("adam", rec)                            # constants fitted (refit.py)
    print(best.text)

Modules: ``store`` (the recording format), ``record`` (running the teacher), ``replay`` (teacher-forced replay of
programs: compiled and batched-interpreter back ends), ``fit`` (imitation errors, regime R^2), ``refit`` (constant
refit by gradient descent through the replay). ``metaopt distill`` puts them together: ``config`` (its YAML
schema), ``evolve`` (the search's judge variant, fitness hook and initial population), ``pipeline`` (the
resumable phases), ``report`` (the distilled program and report.md/report.json).
"""
from metaopt.distill.store import Recording, Trajectory, load, save

__all__ = ["Recording", "Trajectory", "load", "save"]
