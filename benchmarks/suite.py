"""django-heimdall next to plain Celery and its peers, in one run.

    python -m benchmarks [--quick] [--only enqueue,eager,...] [--set enqueue.n=1000]

Started from the project's environment, it makes or reuses a virtualenv of its own
(``benchmarks/results/venv-peers``: this repository, celery-heimdall, celery-once,
celery-singleton, matplotlib; see ``benchmarks.peers_env``) and re-executes itself
there, so that every contender is measured by the same Python against the same
private embedded Redis (never a shared one). It runs the sections registered in
``benchmarks.sections`` and ``benchmarks.admin_pages`` (``benchmarks.measure`` says
how to add one), prints their tables and targets (PASS/MISS), and writes
``benchmarks/results/suite.json`` with the tables (``.md``) and the chart (``.png``)
next to it (``suite-quick.*``, ``suite-partial.*`` for ``--quick`` and ``--only``
runs). A full run of every section, none failed, also writes ``docs/benchmarks.png``
and the tables between the ``suite:results`` markers of ``docs/benchmarks.md``. Every worker
it starts is stopped and the private Redis stopped, whatever happens.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import os
import platform
import random
import re
import signal
import sys
import time
import traceback
import uuid
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from benchmarks import peers_env
from benchmarks.measure import SECTIONS, Context, ServerCounter, Target, target_table

ROOT, RESULTS, LOGS = peers_env.ROOT, peers_env.RESULTS, peers_env.LOGS
DOCS_MD, DOCS_PNG = ROOT / "docs" / "benchmarks.md", ROOT / "docs" / "benchmarks.png"
MD_START, MD_END = "<!-- suite:results:start -->", "<!-- suite:results:end -->"
QUIET_LOAD = 0.5  # below this 1-minute load average the machine counts as quiet
#: The modules whose sections run, in this order (the admin's fills Redis: last).
SECTION_MODULES = ("benchmarks.sections", "benchmarks.admin_pages")


def parse_args(argv: list[str]) -> argparse.Namespace:
    for module in SECTION_MODULES:
        importlib.import_module(module)  # its sections register themselves
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n")[0]
    )
    add = parser.add_argument
    add("--quick", action="store_true", help="fewer calls, shorter runs (~2 min)")
    add("--only", default=",".join(SECTIONS), help=f"sections to run ({','.join(SECTIONS)})")
    add(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.PARAM=VALUE",
        help="e.g. rate.seconds=5",
    )
    add("--seed", type=int, default=1, help="seed of the call order (1)")
    add("--json", type=Path, metavar="PATH", help="where to write the results")
    add("--no-docs", action="store_true", help="leave docs/ alone")
    add("--reinstall", action="store_true", help="rebuild the peer virtualenv")
    add("--wait-quiet", type=float, default=0, metavar="SECONDS", help="wait for a quiet machine")
    add("--strict", action="store_true", help="exit with status 1 on a MISS")
    args = parser.parse_args(argv)
    args.sections = [name.strip() for name in args.only.split(",") if name.strip()]
    if unknown := set(args.sections) - set(SECTIONS):
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    args.params = {
        n: dict(getattr(SECTIONS[n], "quick" if args.quick else "full")) for n in args.sections
    }
    for item in args.set:
        found = re.fullmatch(r"(\w+)\.(\w+)=(.+)", item)
        if not found or found[2] not in args.params.get(found[1], {}):
            parser.error(f"--set {item}: not SECTION.PARAM=VALUE of a section that runs")
        args.params[found[1]][found[2]] = ast.literal_eval(found[3])
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if not peers_env.inside():
        python = peers_env.ensure(reinstall=args.reinstall)
        peers_env.reexec(python, [a for a in argv if a != "--reinstall"])
    return run(args)


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # run the finally blocks: workers, Redis


def run(args: argparse.Namespace) -> int:
    from django_heimdall.testing import EmbeddedRedis

    signal.signal(signal.SIGTERM, _terminate)
    _wait_quiet(args.wait_quiet)
    started, began = time.strftime("%Y-%m-%dT%H:%M:%S%z"), time.monotonic()
    LOGS.mkdir(parents=True, exist_ok=True)
    run_id = uuid.uuid4().hex[:10]
    db = RESULTS / f"bench-{run_id}.sqlite3"
    results: dict[str, Any] = {"errors": {}, "sections": {}}
    server, workers = EmbeddedRedis(), []
    try:
        server.start()
        print(f"private Redis at {server.url}; run {run_id}; logs in {LOGS}", flush=True)
        os.environ.update(HEIMDALL_BENCH_REDIS_URL=server.url, HEIMDALL_BENCH_RUN_ID=run_id)
        os.environ.update(HEIMDALL_BENCH_DB=str(db), DJANGO_SETTINGS_MODULE="benchmarks.settings")
        import redis
        from django.core.management import call_command

        from benchmarks import tasks as t  # django.setup() with the settings above

        call_command("migrate", verbosity=0)
        client = redis.Redis.from_url(server.url)
        contenders = _contenders(t)
        ctx = Context(
            t.app,
            t,
            client,
            ServerCounter(client),
            random.Random(args.seed),
            contenders,
            LOGS,
            workers,
        )
        results.update(run=_run_info(args, started, client), contenders=contenders)
        for name in args.sections:
            print(f"{name} ...", flush=True)
            try:
                found = SECTIONS[name].run(ctx, SimpleNamespace(**args.params[name]))
                results["sections"][name] = {**asdict(found), "title": SECTIONS[name].title}
            except Exception as exc:
                with (LOGS / "errors.log").open("a") as out:
                    out.write(f"--- {name}\n{''.join(traceback.format_exception(exc))}\n")
                results["errors"][name] = f"{type(exc).__name__}: {exc}"
                print(f"  {name} FAILED: {results['errors'][name]} (see {LOGS / 'errors.log'})")
    finally:
        for worker in workers:
            try:
                worker.stop(timeout=10)
            except Exception as exc:  # keep stopping the others
                print(f"warning: worker {worker.label} not stopped cleanly: {exc}")
        server.stop()
        db.unlink(missing_ok=True)
    results["run"].update(seconds=time.monotonic() - began, loadavg_at_end=_loadavg())
    text = markdown(results)
    print(f"\n{text}\n{len(workers)} workers stopped, private Redis stopped")

    complete = not args.quick and args.sections == list(SECTIONS) and not results["errors"]
    name = "suite" if complete else f"suite-{'quick' if args.quick else 'partial'}"
    path = args.json or RESULTS / f"{name}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    path.with_suffix(".md").write_text(text)
    from benchmarks.chart import chart

    chart(results, path.with_suffix(".png"))
    print(f"results written to {path} (tables: .md, chart: .png next to it)")
    if complete and not args.no_docs:
        chart(results, DOCS_PNG)
        pattern = re.compile(re.escape(MD_START) + ".*?" + re.escape(MD_END), re.DOTALL)
        doc = pattern.sub(lambda _: f"{MD_START}\n{text}{MD_END}", DOCS_MD.read_text(), count=1)
        DOCS_MD.write_text(doc)
        print(f"written into {DOCS_MD.relative_to(ROOT)} and {DOCS_PNG.relative_to(ROOT)}")
    targets = [t for s in results["sections"].values() for t in s["targets"]]
    failed = results["errors"] or not all(t["passed"] for t in targets)
    return 1 if args.strict and failed else 0


def markdown(results: dict[str, Any]) -> str:
    """The results: run, contenders, each section's tables, every target."""
    run = results["run"]
    versions = ", ".join(f"{name} {version}" for name, version in run["versions"].items())
    contenders = [
        f"{name} {c['version'] or '-'}" + ("" if c["available"] else f" (n/a: {c['reason']})")
        for name, c in results["contenders"].items()
    ]
    out = [
        f"Run of {run['started']} ({run['mode']}, {run['seconds']:.0f} s): {run['cpus']} CPUs "
        f"({run['cpu']}), {run['platform']}; {versions}; private Redis server "
        f"{run['redis_server']}. Load average (1, 5, 15 min) at start "
        f"{run['loadavg_at_start']}, at end {run['loadavg_at_end']}.",
        "",
        f"Contenders: {', '.join(contenders)}.",
        "",
    ]
    for name, error in results["errors"].items():
        out += [f"**Section failed: {name}**: `{error}`", ""]
    for number, (name, found) in enumerate(results["sections"].items(), 1):
        out += [f"**{number}. {found['title']}** (`{name}`)", "", *found["lines"], ""]
    targets = (Target(**t) for s in results["sections"].values() for t in s["targets"])
    return "\n".join([*out, "**Targets**", "", *target_table(targets)]) + "\n"


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _contenders(t: Any) -> dict[str, dict[str, Any]]:
    failed = {**peers_env.install_failures(), **t.PEER_ERRORS}
    return {
        name: {
            "version": _version(name),
            "available": name not in failed,
            "reason": failed.get(name),
        }
        for name in ("django-heimdall", *t.PEERS)
    }


def _run_info(args: argparse.Namespace, started: str, client: Any) -> dict[str, Any]:
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.exists() else []
    models = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    packages = ("django", "celery", "kombu", "redis", "django-redis")
    return {
        "mode": "quick" if args.quick else "full",
        "params": args.params,
        "started": started,
        "seed": args.seed,
        "versions": {"python": platform.python_version(), **{n: _version(n) for n in packages}},
        "redis_server": client.info("server")["redis_version"],
        "platform": platform.platform(),
        "cpu": models[0] if models else platform.processor(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": _loadavg(),
    }


def _wait_quiet(seconds: float) -> None:
    """Wait up to ``seconds`` for the load average to fall below ``QUIET_LOAD``."""
    deadline = time.monotonic() + seconds
    while (load := _loadavg() or [0.0])[0] >= QUIET_LOAD and time.monotonic() < deadline:
        print(f"load average {load[0]}: waiting for < {QUIET_LOAD} ...", flush=True)
        time.sleep(10)
    if load[0] >= QUIET_LOAD:
        print(f"warning: load average {load[0]}: other work shares the CPUs, ratios will be noisy")


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None
