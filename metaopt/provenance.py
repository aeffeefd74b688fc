"""What made a run: one ``provenance.json`` per run directory, and the "made by" block reports print.

Every command that owns a run directory (``metaopt search``/``run`` via :class:`search.driver.SearchDriver`,
``metaopt eval`` via :func:`metaopt.evaluate.evaluate`, ``metaopt meta-train`` via
:func:`metaopt.meta.trainer.meta_train`) calls :func:`write_provenance` once when it starts. The record holds
the git commit of the code that ran (and whether its tree had uncommitted changes), the installed versions of
the core packages, the machine (CPUs, platform, JAX backend and devices), the command line and the start time.
A directory reused by a later call (``--resume``, re-running ``metaopt eval`` with the same ``--out``) keeps
the earlier records under ``"earlier"``, so a resumed search still says what started it.
"""
from __future__ import annotations

import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

from metaopt.io import atomic_write_json

FILENAME = "provenance.json"
# The packages whose versions decide results (numerics, distribution, logging), in the order printed.
PACKAGES = ("metaopt", "jax", "jaxlib", "flax", "optax", "numpy", "ray", "tensorboard", "tensorboardX", "tqdm")
_REPO_ROOT = Path(__file__).resolve().parents[1]     # the checkout the running metaopt was imported from


def _git(*args: str) -> Optional[str]:
    try:
        done = subprocess.run(["git", "-C", str(_REPO_ROOT), *args], capture_output=True, text=True,
                              timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):     # no git on this machine, or it hung
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_state() -> dict[str, Any]:
    """``{"commit", "dirty", "root"}`` of the checkout metaopt runs from; ``commit`` is None (with a
    ``note``) when metaopt is not imported from a git checkout, e.g. installed from a wheel."""
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None, "root": str(_REPO_ROOT), "note": "not a git checkout"}
    # Tracked changes only: untracked files (run directories, editor files) do not change what ran.
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status), "root": str(_REPO_ROOT)}


def package_versions() -> dict[str, Optional[str]]:
    """Installed versions of :data:`PACKAGES` (None for one that is not installed) and Python's."""
    out: dict[str, Optional[str]] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _accelerator_plugins() -> list[str]:
    """JAX plugins that could claim a GPU/TPU (``jax_plugins`` entry points or namespace, libtpu)."""
    names = [ep.name for ep in importlib.metadata.entry_points(group="jax_plugins")]
    if importlib.util.find_spec("jax_plugins") is not None:
        import pkgutil
        import jax_plugins     # a namespace package: present only when a plugin is installed
        names += [m.name for m in pkgutil.iter_modules(jax_plugins.__path__)]
    if importlib.util.find_spec("libtpu") is not None:
        names.append("libtpu")
    return sorted(set(names))


_DEVICES_SNIPPET = ("import json, jax; print(json.dumps({'backend': jax.default_backend(), "
                    "'devices': [f'{d.platform}:{d.id} {d.device_kind}' for d in jax.devices()]}))")


def jax_devices() -> dict[str, Any]:
    """``{"backend", "devices"}`` as JAX sees them.

    Asked in this process when JAX is already initialized here, or when only the CPU can be used.
    Otherwise it asks a short-lived subprocess: initializing a GPU backend here would preallocate most
    of the GPU's memory in a driver process whose Ray workers need it.
    """
    try:
        from jax._src import xla_bridge
        initialized = xla_bridge.backends_are_initialized()
    except (ImportError, AttributeError):      # another JAX layout: ask in a subprocess
        initialized = False
    cpu_only = os.environ.get("JAX_PLATFORMS", "").strip().lower() == "cpu" or not _accelerator_plugins()
    try:
        if initialized or cpu_only:
            import jax
            return {"backend": jax.default_backend(),
                    "devices": [f"{d.platform}:{d.id} {d.device_kind}" for d in jax.devices()]}
        done = subprocess.run([sys.executable, "-c", _DEVICES_SNIPPET], capture_output=True, text=True,
                              timeout=120, check=True)
        return json.loads(done.stdout.strip().splitlines()[-1])
    except Exception as e:    # noqa: BLE001 - a run must not fail because its devices could not be listed
        return {"backend": None, "devices": [], "note": f"could not list JAX devices: {type(e).__name__}: {e}"}


def machine() -> dict[str, Any]:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"platform": platform.platform(), "machine": platform.machine(), "node": platform.node(),
            "cpu_count": os.cpu_count(), "cpus_usable": usable, **{f"jax_{k}": v for k, v in jax_devices().items()}}


def collect(argv: Optional[list[str]] = None) -> dict[str, Any]:
    """The provenance of the current process: git, packages, machine, command line, start time."""
    argv = list(sys.argv if argv is None else argv)
    return {
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "argv": argv,
        "command": shlex.join([os.path.basename(argv[0]) if argv else "python", *argv[1:]]),
        "cwd": os.getcwd(),
        "git": git_state(),
        "packages": package_versions(),
        "machine": machine(),
    }


def load_provenance(run_dir: str | os.PathLike) -> Optional[dict[str, Any]]:
    """The record in ``run_dir/provenance.json``, or None when the directory has none."""
    path = os.path.join(run_dir, FILENAME)
    if not os.path.exists(path):
        return None
    with open(path) as fh:
        return json.load(fh)


def write_provenance(run_dir: str | os.PathLike, argv: Optional[list[str]] = None) -> dict[str, Any]:
    """Record this process in ``run_dir/provenance.json`` (atomically); earlier records move to ``earlier``."""
    record = collect(argv)
    try:
        previous = load_provenance(run_dir)
    except (OSError, ValueError):            # a damaged file from a killed writer of an older version
        previous = None
    if previous:
        record["earlier"] = previous.pop("earlier", []) + [previous]
    atomic_write_json(os.path.join(run_dir, FILENAME), record)
    return record


def made_by(record: Optional[dict[str, Any]], markdown: bool = False) -> str:
    """A short "made by" block: command and start, code, packages, machine (Markdown for summary.md)."""
    if not record:
        return ""
    g, m = record["git"], record["machine"]
    if g.get("commit"):
        code = f"git {g['commit'][:12]}" + (" with uncommitted changes" if g.get("dirty") else " (clean)")
    else:
        code = f"{g.get('root')} ({g.get('note', 'no git commit')})"
    versions = record["packages"]     # printed in PACKAGES order (the JSON file sorts its keys)
    packages = ", ".join(f"{k} {versions[k]}" for k in ("python", *PACKAGES) if versions.get(k))
    devices = ", ".join(m.get("jax_devices") or []) or "none listed"
    host = (f"{m.get('node')}: {m.get('platform')}, {m.get('cpus_usable')} of {m.get('cpu_count')} CPUs, "
            f"JAX {m.get('jax_backend')} backend [{devices}]")
    fields = [("command", record["command"]), ("started", record["started"]), ("code", code),
              ("packages", packages), ("machine", host)]
    if record.get("earlier"):
        first = record["earlier"][0]
        fields.append(("earlier", f"{len(record['earlier'])} earlier call(s) on this directory, the first "
                                  f"`{first['command']}` at {first['started']} (see {FILENAME})"))
    if markdown:
        fields[0] = ("command", f"`{record['command']}`")
        return "\n".join(["## Made by", ""] + [f"- {k}: {v}" for k, v in fields]) + "\n"
    return "\n".join(["made by:"] + [f"  {k + ':':<10}{v}" for k, v in fields])
