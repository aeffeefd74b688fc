"""Worker pools that judge batches of candidate programs: Ray actors, or in-process for tests.

Both pools have one interface, so the driver does not care where batches run::

    pool.capacity()        # how many more batches may be submitted right now
    pool.submit(job)       # queue a Job (a stage name and a list of program texts)
    pool.wait()            # block until >= 1 job finishes; -> [(job, results)]
    pool.inflight()        # jobs submitted and not yet returned

:class:`RayPool` holds ``workers`` actors; each builds its :class:`~search.judge.Judge` per stage once
(one interpreter compile per task) and then judges batch after batch. The pool keeps
``inflight_per_worker`` batches queued on every actor, so an actor starts its next batch the moment it
returns one, while the driver breeds replacements: no worker idles waiting for the driver.

A worker that dies mid-batch (OOM, segfault, ``ray.kill``) is replaced by a fresh actor and every batch
it held is resubmitted; a batch that has killed ``max_retries`` workers is returned as failed (its
candidates get the worst fitness) rather than taking the search down with it.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

from metaopt.xla_env import with_required_flags

# (search config, stage) -> a callable judging program texts (``search.judge.Judge`` or a variant of it)
JudgeFactory = Callable[[Any, str], Callable]

# Every actor gets one CPU thread for XLA: with two workers on two cores, XLA's default thread pools
# would otherwise oversubscribe the machine and two workers would run slower than one.
SINGLE_THREAD_ENV = {
    "XLA_FLAGS": with_required_flags("--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"),
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "JAX_PLATFORMS": "cpu",
}


@dataclasses.dataclass
class Job:
    """A batch of candidates for one stage, or of baseline tunings."""

    id: int
    stage: str                 # "hurdle", "search", "funnel" or "baseline"
    texts: list                # program texts (or baseline items)
    keys: list = dataclasses.field(default_factory=list)   # the driver's fingerprints for `texts`
    attempts: int = 0
    centres: list = dataclasses.field(default_factory=list)  # hurdle: per text, {task: centre rate}


def failed_results(job: Job, error: str) -> list[dict]:
    """Results that judge every candidate of ``job`` as failed (worst fitness downstream)."""
    return [{"losses": {}, "lrs": {}, "error": error} for _ in job.texts]


class LocalPool:
    """Judges jobs in the driver's own process, one at a time (``workers: 0``; unit tests). ``judge``: the
    judge factory (``search.judge.run_job``; default :class:`~search.judge.Judge`)."""

    def __init__(self, cfg: Any, judge: JudgeFactory | None = None):
        self._cfg = cfg
        self._judge = judge
        self._judges: dict[str, Any] = {}
        self._queue: list[Job] = []
        self.restarts = 0
        self.workers: list = []

    def capacity(self) -> int:
        return 1 - len(self._queue)

    def inflight(self) -> list[Job]:
        return list(self._queue)

    def submit(self, job: Job) -> None:
        self._queue.append(job)

    def wait(self, timeout: float | None = None) -> list[tuple[Job, list[dict]]]:
        from search.judge import run_job
        if not self._queue:
            return []
        job = self._queue.pop(0)
        try:
            return [(job, run_job(self._cfg, self._judges, job.stage, job.texts, job.centres, self._judge))]
        except Exception as e:   # a bug in one batch must not end the search
            return [(job, failed_results(job, f"{type(e).__name__}: {e}"))]

    def shutdown(self) -> None:
        self._judges.clear()


class _Worker:
    """The Ray actor body: one Judge per stage, built on first use and reused for every batch."""

    def __init__(self, cfg: Any, judge: JudgeFactory | None = None):
        self._cfg = cfg
        self._judge = judge
        self._judges: dict[str, Any] = {}

    def evaluate(self, stage: str, texts: list, centres: list | None = None) -> list:
        from search.judge import run_job
        return run_job(self._cfg, self._judges, stage, texts, centres, self._judge)

    def pid(self) -> int:
        return os.getpid()

    def exit_now(self) -> None:
        """Die abruptly, as a crashed worker would (used by the fault-tolerance test)."""
        os._exit(1)


class RayPool:
    """``n_workers`` Ray actors, each kept ``inflight_per_worker`` batches deep."""

    def __init__(self, cfg: Any, n_workers: int, inflight_per_worker: int = 2, max_retries: int = 2,
                 env: dict[str, str] | None = None, judge: JudgeFactory | None = None):
        import ray
        if not ray.is_initialized():
            raise RuntimeError("call ray.init() (or search.distributed.init_ray) before building a RayPool")
        self._ray = ray
        self._cfg = cfg
        self._judge = judge            # pickled to every actor: a module-level class or a functools.partial of one
        self._per_worker = inflight_per_worker
        self._max_retries = max_retries
        self._env = {**SINGLE_THREAD_ENV, **(env or {})}
        self._actor_cls = ray.remote(num_cpus=1, max_restarts=0)(_Worker)
        self.workers = [self._spawn() for _ in range(n_workers)]
        self._generation = [0] * n_workers
        self._stages: list[set[str]] = [set() for _ in range(n_workers)]   # stages each worker has built
        self._refs: dict[Any, tuple[Job, int, int]] = {}   # ref -> (job, worker index, generation)
        self.restarts = 0

    def _spawn(self):
        return self._actor_cls.options(runtime_env={"env_vars": self._env}).remote(self._cfg, self._judge)

    def _load(self, i: int) -> int:
        return sum(1 for _, w, g in self._refs.values() if w == i and g == self._generation[i])

    def capacity(self) -> int:
        return len(self.workers) * self._per_worker - len(self._refs)

    def busy_workers(self) -> list[int]:
        """Indices of the workers holding at least one unfinished batch."""
        return sorted({w for _, w, g in self._refs.values() if g == self._generation[w]})

    def inflight(self) -> list[Job]:
        return [job for job, _, _ in self._refs.values()]

    def submit(self, job: Job) -> None:
        i = self._pick(job.stage)
        ref = self.workers[i].evaluate.remote(job.stage, job.texts, job.centres)
        self._refs[ref] = (job, i, self._generation[i])
        self._stages[i].add(job.stage)

    def _pick(self, stage: str) -> int:
        """The least-loaded worker — preferring one that already compiled this stage's trainers
        (each stage costs a compile per task per worker), unless it is already fully queued."""
        warm = [i for i in range(len(self.workers)) if stage in self._stages[i]]
        if warm:
            i = min(warm, key=self._load)
            if self._load(i) < self._per_worker:
                return i
        return min(range(len(self.workers)), key=self._load)

    def _replace(self, i: int, generation: int) -> None:
        if self._generation[i] != generation:
            return            # already replaced because of another of its batches
        try:
            self._ray.kill(self.workers[i], no_restart=True)
        except Exception:
            pass
        self.workers[i] = self._spawn()
        self._generation[i] += 1
        self._stages[i] = set()
        self.restarts += 1

    def wait(self, timeout: float | None = None) -> list[tuple[Job, list[dict]]]:
        """Block until at least one batch returns; collect every batch that is ready by then."""
        if not self._refs:
            return []
        ready, _ = self._ray.wait(list(self._refs), num_returns=1, timeout=timeout)
        if ready:
            more, _ = self._ray.wait([r for r in self._refs if r not in ready],
                                     num_returns=len(self._refs) - len(ready), timeout=0)
            ready = list(ready) + list(more)
        done: list[tuple[Job, list[dict]]] = []
        for ref in ready:
            job, i, gen = self._refs.pop(ref)
            try:
                done.append((job, self._ray.get(ref)))
            except self._ray.exceptions.RayActorError:
                # The worker died with this batch: replace it and run the batch again elsewhere.
                self._replace(i, gen)
                job.attempts += 1
                if job.attempts > self._max_retries:
                    done.append((job, failed_results(job, "worker died on this batch repeatedly")))
                else:
                    self.submit(job)
            except self._ray.exceptions.RayTaskError as e:
                done.append((job, failed_results(job, f"worker error: {e}")))
        return done

    def shutdown(self) -> None:
        for w in self.workers:
            try:
                self._ray.kill(w, no_restart=True)
            except Exception:
                pass
        self._refs.clear()


def make_pool(cfg: Any, address: str | None = None, judge: JudgeFactory | None = None):
    """``workers: 0`` judges in-process; otherwise Ray actors (local Ray, or the cluster at ``address``).
    ``judge`` replaces :class:`~search.judge.Judge` in every worker (e.g. ``metaopt.distill.evolve``)."""
    if cfg.workers == 0:
        return LocalPool(cfg, judge)
    init_ray(address, num_cpus=None if address else max(cfg.workers, os.cpu_count() or 1))
    return RayPool(cfg, cfg.workers, cfg.inflight_per_worker, cfg.max_batch_retries, judge=judge)


def init_ray(address: str | None, num_cpus: int | None = None) -> None:
    """Start Ray locally (default) or join the cluster at ``address`` (``ray start --head`` prints it).

    The repository root is put on the workers' path via the driver's working directory, which Ray
    workers inherit locally; on a cluster every node needs metaopt installed (``pip install -e .``).
    """
    import ray
    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True,
                              "ignore_reinit_error": True}
    if address:
        kwargs["address"] = address
    else:
        kwargs["num_cpus"] = num_cpus or os.cpu_count()
    ray.init(**kwargs)
