"""Search end to end: first-stage candidates judged per CPU-second by a real ``metaopt search``, next to
the batched interpreter's ceiling on the same first-stage (hurdle) tasks.

*Real search.* ``metaopt search --config CONFIG --init adamw --no-heldout --no-polish --no-progress`` (CONFIG:
``--config``, default ``configs/search/quick.yaml``) runs as a subprocess on a copy of the config whose
search-loop budget is ``--seconds`` (``budget.evaluations`` made unreachable); everything else (driver, Ray
workers, hurdle stage, fingerprint cache, search and funnel stages) is the config's. The persistent XLA
compilation cache (``metaopt.xla_env``) is ``--xla-cache``: ``fresh`` (default; an empty directory, as on a
fresh clone: every compile is paid), ``warm`` (the user's cache, as for a second search on the same machine)
or ``off``. The CPU counted is user + system time (``/proc/PID/stat``
utime + stime, every thread) of the ``metaopt`` process and of *every* descendant: Ray's gcs_server, raylet,
dashboard, agents and worker actors. The tree is sampled every ``SAMPLE_S`` seconds and at every log line,
keeping the last value seen per process (keyed by pid and start time, followed even when re-parented), so a
process that exits between samples loses at most its last ``SAMPLE_S``. This process makes itself the child
subreaper (``prctl(PR_SET_CHILD_SUBREAPER)``), so orphaned descendants stay in the tree and are reaped here.
``getrusage(RUSAGE_CHILDREN)`` (descendants reaped up a chain of waits to this process) is printed beside the
sampled total as a lower bound only: Ray's processes reap some of their own children outside that chain
(checked: a one-task ``ray.init``/``ray.shutdown`` gave 11.5 CPU s sampled, 6.9 s by rusage). Windows:

* ``total`` — the whole command: Ray start-up, the baseline tuning, the loop, export, shutdown;
* ``loop`` — from the ``search: baselines done`` log line to the loop's last ``search: N evaluations`` line
  (the window ``budget.seconds`` bounds; its compiles, the search and funnel stages and the drain included);
* ``steady`` — between the loop's first and last checkpoint lines (every ``checkpoint_every`` evaluations):
  the loop with its first compiles left out.

First-stage candidates are the children judged by the hurdle (``hurdle_evaluations`` in ``summary.json``;
cache hits never reach it), in each window read off the log lines.

*Ceiling.* In a fresh subprocess, ``metaopt.interpret.PopulationTrainer`` on the hurdle's tasks with the
hurdle's steps, eval interval, seeds and 3 rates (``grid_factors`` x 1e-3), ``max_len`` / ``n_registers`` of
the config, on a population of the library programs the interpreter can encode (cycled), at the hurdle's
batch shapes (``search.judge.hurdle_sizes(batch_size)``) and at ``BIG``: compile once, time a second call,
per task; a candidate is all of its hurdle trainings (tasks x rates x seeds). CPU there is that process's
``getrusage(RUSAGE_SELF)``.

The search and funnel stages are timed the same way on their own tasks, steps, seeds and rate grid, at
``batch_size``.

Ratios. *First-stage* = search first-stage candidates per CPU-second / ceiling candidates per CPU-second at the
search's own ``batch_size`` (issue 14's target: >= 0.5); also against the best ceiling size. It cannot reach
0.5 while hurdle passers cost more at the later stages than all the hurdle judgings together: it counts their
work as overhead. *Same work* = the CPU seconds the interpreter alone needs for the loop's work (its candidates
at each stage, read off the loop's last log line, times each stage's ceiling CPU-s per candidate) / the loop's
CPU seconds: what the driver, Ray, compiles, batch padding and funnel batches sent a quarter full leave on
the table, with the staging's own costs counted as work. Prints a table, writes
benchmarks/results/search_end_to_end.json; the last line is ``search_end_to_end: key=value ...``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIG = ROOT / "configs" / "search" / "quick.yaml"
SAMPLE_S = 0.25
MIN_CPU_S = 1.0          # the ceiling repeats each timed call until it has used this much CPU
BIG = 64
CENTRE = 1e-3
CLK_TCK = os.sysconf("SC_CLK_TCK")
STAGE_LINE = re.compile(r"^search: (\d+) evaluations;(?:.*?hurdle (\d+) \()?")


# --- CPU of a process tree from /proc -------------------------------------------------------------
def proc_stat(pid: int) -> tuple[int, int, int, str] | None:
    """``(ppid, start time, utime + stime, state)`` of ``pid`` (times in clock ticks, all its threads; state
    ``"Z"``: exited, not yet reaped), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            raw = fh.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: the fields after the last ')' are plain.
    rest = raw[raw.rindex(")") + 2:].split()
    return int(rest[1]), int(rest[19]), int(rest[11]) + int(rest[12]), rest[0]   # fields 4, 22, 14+15, 3


def become_subreaper() -> bool:
    """Make this process the child subreaper (prctl PR_SET_CHILD_SUBREAPER, Linux >= 3.4): a descendant
    orphaned by a double fork is re-parented here, not to init, so the tree keeps it and reaping it adds it
    to ``RUSAGE_CHILDREN``. False where prctl is unavailable."""
    import ctypes
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


class TreeCPU:
    """CPU seconds of ``root`` and all its descendants, living or dead (see the module docstring).
    Processes re-parented to this one (its subreaper orphans; ``root`` excepted) count too, and are reaped
    once their final figures are read, so ``RUSAGE_CHILDREN`` includes them."""

    def __init__(self, root: int):
        self.root = root
        self.last: dict[tuple[int, int], int] = {}    # (pid, start time) -> last utime + stime seen

    def sample(self) -> float:
        stats, children = {}, {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                st = proc_stat(int(name))
                if st is not None:
                    stats[int(name)] = st
                    children.setdefault(st[0], []).append(int(name))
        # Roots: the tree's top and every process seen before and still alive (a daemon that outlived its
        # parent is re-parented to init but is still ours); the start time tells a reused pid apart.
        me = os.getpid()
        todo = [self.root] + [p for p, start in self.last if p in stats and stats[p][1] == start]
        todo += [p for p in children.get(me, []) if p != self.root]
        seen = set()
        while todo:
            pid = todo.pop()
            if pid in seen or pid not in stats:
                continue
            seen.add(pid)
            self.last[(pid, stats[pid][1])] = stats[pid][2]
            todo += children.get(pid, [])
        for pid in children.get(me, []):
            # An adopted orphan that had exited when read (so its figures above are final): reap it.
            if pid != self.root and stats[pid][3] == "Z":
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
        return self.seconds()

    def seconds(self) -> float:
        return sum(self.last.values()) / CLK_TCK

    def alive(self) -> list[int]:
        return [p for p, start in self.last if (st := proc_stat(p)) is not None and st[1] == start]


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


# --- the real search -------------------------------------------------------------------------------
def write_config(seconds: float, path: Path, config: Path) -> dict:
    import yaml
    cfg = yaml.safe_load(config.read_text())
    cfg["budget"] = {"seconds": seconds, "evaluations": 10 ** 9}
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return cfg


def run_search(seconds: float, work: Path, config: Path, cache_env: dict) -> dict:
    """Run the search, sampling its process tree's CPU; returns the windows, the counters and the log."""
    cfg_path, out = work / "budget.yaml", work / "run"
    write_config(seconds, cfg_path, config)
    cmd = [str(ROOT / ".venv" / "bin" / "metaopt"), "search", "--config", str(cfg_path), "--init", "adamw",
           "--no-heldout", "--no-polish", "--no-progress", "--out", str(out)]
    subreaper = become_subreaper()
    rusage0, t0 = children_cpu(), time.monotonic()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if cache_env:         # METAOPT_XLA_CACHE decides: an inherited JAX_COMPILATION_CACHE_DIR would win over it
        env.pop("JAX_COMPILATION_CACHE_DIR", None)
        env.update(cache_env)
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    tree = TreeCPU(proc.pid)
    marks: list[tuple[float, float, str]] = []          # (wall s, tree CPU s, line) at every log line
    buf, log = b"", []
    try:
        while True:
            ready, _, _ = select.select([proc.stdout], [], [], SAMPLE_S)
            chunk = os.read(proc.stdout.fileno(), 65536) if ready else b""
            cpu, now = tree.sample(), time.monotonic() - t0
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                text = line.decode(errors="replace")
                log.append(text)
                marks.append((now, cpu, text))
            if ready and not chunk:                     # EOF: the command is done
                break
        proc.wait()
        wall = time.monotonic() - t0
        # Ray's processes may outlive the command by a moment: keep sampling them, then stop stragglers.
        deadline = time.monotonic() + 15
        while tree.alive() and time.monotonic() < deadline:
            tree.sample()
            time.sleep(SAMPLE_S)
        stragglers = tree.alive()
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait()
    for pid in stragglers:                              # processes this benchmark started, by id
        try:
            os.kill(pid, 15)
        except ProcessLookupError:
            pass
    (work / "search.log").write_text("\n".join(log))
    if proc.returncode:
        print("\n".join(log[-40:]))
        raise SystemExit(f"metaopt search failed (exit {proc.returncode}); log in {work / 'search.log'}")
    summary = json.loads((out / "summary.json").read_text())
    return {"command": " ".join(cmd), "wall_s": wall, "cpu_s": tree.seconds(),
            "rusage_children_cpu_s": children_cpu() - rusage0, "processes": len(tree.last), "subreaper": subreaper,
            "stragglers_terminated": len(stragglers), "windows": windows(marks, summary), "summary": {
                k: summary[k] for k in ("counters", "cache_hit_rate", "elapsed_s", "evaluations_per_s")}}


def windows(marks: list[tuple[float, float, str]], summary: dict) -> dict:
    """The ``loop`` and ``steady`` windows (see the module docstring): wall and CPU seconds and hurdle
    candidates in each."""
    start = next((i for i, m in enumerate(marks) if m[2].startswith("search: baselines done")), None)
    end = next((i for i, m in enumerate(marks) if m[2].startswith("# Search summary")), len(marks))
    if start is None:
        raise SystemExit("no 'search: baselines done' line in the search's log: cannot find the loop")
    stage = [(m, STAGE_LINE.match(m[2])) for m in marks[start:end]]
    stage = [(m, int(g.group(2) or 0)) for m, g in stage if g]
    if not stage:
        raise SystemExit("no 'search: N evaluations' line after the baselines: the loop judged nothing")
    c = summary["counters"]
    out = {"loop": {"wall_s": stage[-1][0][0] - marks[start][0], "cpu_s": stage[-1][0][1] - marks[start][1],
                    "hurdle": stage[-1][1], "hurdle_total": c["hurdle_evaluations"],
                    "counts": loop_counts(stage[-1][0][2])}}
    if len(stage) >= 3:   # first and last checkpoint lines; the very last line is the loop's end
        (a, ha), (b, hb) = stage[0], stage[-2]
        out["steady"] = {"wall_s": b[0] - a[0], "cpu_s": b[1] - a[1], "hurdle": hb - ha}
    return out


# --- the interpreter's ceiling ---------------------------------------------------------------------
def _time_calls(trainer, pop, lrs, seeds: int, min_calls: int) -> tuple[float, float, float]:
    """(run s, CPU s, compile s) per call of one interpreter call, compiled once and then repeated until it
    has used ``MIN_CPU_S`` (one hurdle call at P=4 takes milliseconds, below the clock's resolution)."""
    import jax
    cpu = lambda: sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
    t0 = time.perf_counter()
    jax.block_until_ready(trainer(pop, lrs, jax.random.PRNGKey(0), seeds))
    first = time.perf_counter() - t0
    t0, c0, calls = time.perf_counter(), cpu(), 0
    while calls < min_calls or cpu() - c0 < MIN_CPU_S:
        calls += 1
        jax.block_until_ready(trainer(pop, lrs, jax.random.PRNGKey(calls), seeds))
    run = (time.perf_counter() - t0) / calls
    return run, (cpu() - c0) / calls, first - run


def ceiling(config: str) -> dict:
    """Run in a fresh subprocess: every stage's interpreter calls, alone (the hurdle at each batch size)."""
    import jax.numpy as jnp

    import tasks as task_registry
    from metaopt import library
    from metaopt.interpret import EncodingError, PopulationTrainer, encode, stack
    from search.config import load_search_config
    from search.judge import hurdle_sizes, stage_specs

    cfg = load_search_config(config)
    specs = stage_specs(cfg)
    encs, names = [], []
    for n in library.names():
        try:
            encs.append(encode(library.get(n), cfg.max_len, cfg.n_registers))
            names.append(n)
        except EncodingError:
            pass
    stages = {}
    for stage, spec in specs.items():
        hurdle = stage == "hurdle"
        lrs = jnp.array([CENTRE * f for f in spec.factors] if spec.factors else spec.lr_grid, jnp.float32)
        sizes = sorted(set(hurdle_sizes(cfg.batch_size)) | {BIG}) if hurdle else [cfg.batch_size]
        rows = []
        for size in sizes:
            pop = stack([encs[i % len(encs)] for i in range(size)])
            row = {"population": size, "cpu_s": 0.0, "run_s": 0.0, "compile_s": 0.0}
            for name, steps, every in zip(spec.tasks, spec.steps, spec.eval_every):
                trainer = PopulationTrainer(task_registry.get(name), cfg.max_len, cfg.n_registers, steps, every)
                run, cpu_s, compile_s = _time_calls(trainer, pop, lrs, spec.seeds, 3 if hurdle else 1)
                row["cpu_s"] += cpu_s
                row["run_s"] += run
                row["compile_s"] += compile_s
            row["candidates_per_cpu_s"] = size / row["cpu_s"]
            row["candidates_per_s"] = size / row["run_s"]
            row["cpu_s_per_candidate"] = row["cpu_s"] / size
            rows.append(row)
        stages[stage] = {"tasks": list(spec.tasks), "steps": list(spec.steps), "eval_every": list(spec.eval_every),
                         "seeds": spec.seeds, "rates": [float(x) for x in lrs],
                         "trainings_per_candidate": len(spec.tasks) * len(lrs) * spec.seeds, "sizes": rows}
    h = stages["hurdle"]
    return {**h, "min_cpu_s_per_timing": MIN_CPU_S, "max_len": cfg.max_len, "n_registers": cfg.n_registers,
            "batch_size": cfg.batch_size, "programs": names, "stages": stages}


def mix_ratio(ceil: dict, counts: dict, loop_cpu_s: float) -> dict:
    """The CPU the interpreter alone needs for the same work as the search loop (its candidates at every
    stage, each at the ceiling's cost per candidate at the search's batch size) over the loop's CPU: what
    the driver, Ray, compiles, padding and the staging itself leave on the table."""
    own = {stage: next(r for r in v["sizes"] if r["population"] == ceil["batch_size"])["cpu_s_per_candidate"]
           for stage, v in ceil["stages"].items()}
    ideal = {stage: counts.get(stage, 0) * own[stage] for stage in own}
    return {"counts": counts, "cpu_s_per_candidate": own, "ideal_cpu_s": ideal,
            "ideal_cpu_s_total": sum(ideal.values()), "loop_cpu_s": loop_cpu_s,
            "ratio": sum(ideal.values()) / loop_cpu_s if loop_cpu_s else 0.0}


STAGE_COUNTS = re.compile(r"(hurdle|search|funnel) (\d+) \(")


def loop_counts(line: str) -> dict:
    """Candidates judged at each stage, read off a ``search: N evaluations; hurdle H (...); search S (...);
    funnel F (...)`` log line (the loop's last one: the work of the ``loop`` window)."""
    return {k: int(v) for k, v in STAGE_COUNTS.findall(line)}


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--ceiling":
        print(json.dumps(ceiling(sys.argv[2])))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=240.0, help="search-loop budget (budget.seconds)")
    ap.add_argument("--config", type=Path, default=CONFIG, help="search config (default quick.yaml)")
    ap.add_argument("--xla-cache", choices=("fresh", "warm", "off"), default="fresh",
                    help="persistent compilation cache: an empty one (default), the user's, or none")
    args = ap.parse_args()
    config = args.config.resolve()
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="search_e2e_") as tmp:
        work = Path(tmp)
        cache_env = {"fresh": {"METAOPT_XLA_CACHE": str(work / "xla_cache")}, "off": {"METAOPT_XLA_CACHE": "off"},
                     "warm": {}}[args.xla_cache]
        print(f"search: {config.relative_to(ROOT)}, --init adamw, loop budget {args.seconds:.0f} s, "
              f"XLA cache {args.xla_cache}, {os.cpu_count()} CPUs, load average {load0[0]:.1f}")
        search = run_search(args.seconds, work, config, cache_env)
        out = subprocess.run([sys.executable, __file__, "--ceiling", str(work / "budget.yaml")],
                             capture_output=True, text=True, cwd=ROOT)
        if out.returncode:
            print(out.stderr[-2000:])
            raise SystemExit("ceiling subprocess failed")
        ceil = json.loads(out.stdout.strip().splitlines()[-1])
    load1 = os.getloadavg()
    c, w = search["summary"]["counters"], search["windows"]
    rows = [("total", search["wall_s"], search["cpu_s"], c["hurdle_evaluations"])]
    rows += [(k, v["wall_s"], v["cpu_s"], v["hurdle"]) for k, v in w.items() if k in ("loop", "steady")]
    print(f"search counters: hurdle {c['hurdle_evaluations']} ({c['hurdle_passed']} passed), search stage "
          f"{c['search_evaluations']}, funnel {c['funnel_evaluations']}, cache hits {c['cache_hits']} of "
          f"{c['children']} children; worker s hurdle {c['seconds_hurdle']:.0f} / search {c['seconds_search']:.0f}"
          f" / funnel {c['seconds_funnel']:.0f} (hurdle {c['seconds_hurdle'] / max(c['hurdle_evaluations'], 1):.3f} "
          f"worker s per candidate); loop elapsed {search['summary']['elapsed_s']:.0f} s")
    print(f"process tree: {search['processes']} processes, {search['cpu_s']:.1f} CPU s sampled, "
          f"{search['rusage_children_cpu_s']:.1f} CPU s by getrusage(RUSAGE_CHILDREN) (a lower bound)")
    print(f"{'window':>8} {'wall s':>8} {'cpu s':>8} {'hurdle cands':>13} {'per cpu-s':>10} {'per wall-s':>11} "
          f"{'per hour':>9}")
    for name, wall, cpu, n in rows:
        print(f"{name:>8} {wall:>8.1f} {cpu:>8.1f} {n:>13} {n / cpu:>10.3f} {n / wall:>11.3f} {3600 * n / wall:>9.0f}")
    print(f"ceiling: PopulationTrainer on {', '.join(ceil['tasks'])} ({ceil['steps'][0]} steps, "
          f"{len(ceil['rates'])} rates, {ceil['seeds']} seed(s) = {ceil['trainings_per_candidate']} trainings "
          f"per candidate), {len(ceil['programs'])} library programs cycled")
    print(f"{'P':>5} {'run s':>8} {'compile s':>10} {'cpu s':>8} {'cands/cpu-s':>12} {'cands/s':>9}   (per call, "
          f"both tasks)")
    for r in ceil["sizes"]:
        print(f"{r['population']:>5} {r['run_s']:>8.4f} {r['compile_s']:>10.2f} {r['cpu_s']:>8.4f} "
              f"{r['candidates_per_cpu_s']:>12.1f} {r['candidates_per_s']:>9.1f}")
    own = next(r for r in ceil["sizes"] if r["population"] == ceil["batch_size"])
    best = max(ceil["sizes"], key=lambda r: r["candidates_per_cpu_s"])
    rate = {k: v["hurdle"] / v["cpu_s"] if v["cpu_s"] else 0.0 for k, v in w.items()}
    rate["total"] = c["hurdle_evaluations"] / search["cpu_s"]
    ratio = {k: v / own["candidates_per_cpu_s"] for k, v in rate.items()}
    mix = mix_ratio(ceil, w["loop"]["counts"], w["loop"]["cpu_s"])
    print(f"ratio (search / ceiling at P={own['population']}): " + ", ".join(f"{k} {v:.4f}" for k, v in ratio.items())
          + f"; against the best size P={best['population']}: loop "
          f"{rate['loop'] / best['candidates_per_cpu_s']:.4f}")
    print(f"{'stage':>8} {'candidates':>11} {'ceiling cpu-s/cand':>19} {'ideal cpu-s':>12}   (the loop's work, "
          f"interpreter alone at P={ceil['batch_size']})")
    for stage, n in mix["ideal_cpu_s"].items():
        print(f"{stage:>8} {mix['counts'].get(stage, 0):>11} {mix['cpu_s_per_candidate'][stage]:>19.4f} {n:>12.1f}")
    print(f"same-work ratio (interpreter alone / search loop, CPU s): {mix['ideal_cpu_s_total']:.1f} / "
          f"{mix['loop_cpu_s']:.1f} = {mix['ratio']:.3f}")
    print(f"load average {load0[0]:.1f} -> {load1[0]:.1f}: wall-clock rates swing with other jobs; per-CPU-second "
          f"rates much less")
    result = {"config": str(config.relative_to(ROOT)), "xla_cache": args.xla_cache,
              "loop_budget_s": args.seconds, "search": search,
              "ceiling": ceil, "rates_per_cpu_s": rate, "ratio_vs_own_batch": ratio, "same_work": mix,
              "ratio_vs_best_size": {k: v / best["candidates_per_cpu_s"] for k, v in rate.items()},
              "steady_or_loop": "steady" if "steady" in w else "loop", "load_average": [load0, load1]}
    path = ROOT / "benchmarks" / "results" / "search_end_to_end.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    key = "steady" if "steady" in w else "loop"
    print(f"search_end_to_end: search_candidates_per_cpu_s={rate['loop']:.3f} "
          f"ceiling_candidates_per_cpu_s={own['candidates_per_cpu_s']:.1f} ratio={ratio['loop']:.4f} "
          f"{key}_ratio={ratio[key]:.4f} same_work_ratio={mix['ratio']:.3f} candidates_per_hour_wall={3600 * w['loop']['hurdle'] / w['loop']['wall_s']:.0f}")


if __name__ == "__main__":
    main()
