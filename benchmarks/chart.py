"""The chart of ``python -m benchmarks``: one PNG, eight panels (matplotlib, Agg)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

COLORS = {"django-heimdall": "#1f6fb4", "celery-heimdall": "#e07b26", "plain": "#8c8c8c"}
COLORS.update(first=COLORS["django-heimdall"], duplicate=COLORS["celery-heimdall"])


def _panel(
    ax: Any,
    title: str,
    groups: list[str],
    series: dict[str, list[Any]],
    line: float,
    label: str,
    fmt: str = "{:.2f}",
) -> None:
    """Grouped, labelled bars (None: "n/a") and a reference line; or "not measured"."""
    ax.set_title(title, fontsize=9)
    if not groups:
        ax.text(0.5, 0.5, "not measured in this run", ha="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    width, top = 0.8 / len(series), line
    for i, (name, values) in enumerate(series.items()):
        xs = [x + (i - (len(series) - 1) / 2) * width for x in range(len(groups))]
        bars = ax.bar(xs, [v or 0 for v in values], width, label=name, color=COLORS.get(name))
        for x, bar, value in zip(xs, bars, values, strict=True):
            shown = "n/a" if value is None else fmt.format(value)
            above = {
                "xytext": (0, 2),
                "textcoords": "offset points",
                "ha": "center",
                "va": "bottom",
            }
            ax.annotate(shown, (x, bar.get_height()), fontsize=7, **above)
            top = max(top, value or 0)
    ax.axhline(line, color="#c0392b", lw=1, ls="--", label=label)
    ax.set_xticks(range(len(groups)), groups, fontsize=8)
    ax.set_ylim(0, top * 1.35)
    ax.legend(fontsize=7, loc="upper right")


def chart(results: dict[str, Any], path: Path) -> None:
    data = {name: found["data"] for name, found in results["sections"].items()}
    fig, axes = plt.subplots(4, 2, figsize=(12, 17))
    ratio = data.get("enqueue", {}).get("ratio", {})
    names = [n for n in results["contenders"] if f"{n}:first" in ratio]
    _panel(
        axes[0][0],
        "1. Enqueue cost ÷ plain apply_async (median, lower is better)",
        [n.replace("-", "-\n", 1) for n in names],
        {kind: [ratio[f"{n}:{kind}"] for n in names] for kind in ("first", "duplicate")},
        1.0,
        "plain = 1",
    )
    tps = data.get("throughput", {}).get("tasks_per_s", {})
    groups = ["plain", "django-heimdall\nunique + rate limit"] if tps else []
    title = "2. Worker throughput, prefork (tasks/s, higher is better)"
    series = {"tasks/s": list(tps.values())}
    _panel(
        axes[0][1],
        title,
        groups,
        series,
        tps.get("plain", 0) * 0.9,
        "target ≥ 0.90 of plain",
        "{:.0f}",
    )
    notes = "; ".join(f"{name}: {value}" for name, value in _notes(data).items())
    axes[0][1].set_xlabel(textwrap.fill(notes, 110), fontsize=7)
    runs = data.get("rate", {}).get("runs", [])
    limits = list(dict.fromkeys(r["limit"] for r in runs))
    contenders = list(dict.fromkeys(r["contender"] for r in runs))
    utilisation = "3a. Rate limit: achieved ÷ allowed starts (saturated)"
    most = "3b. Rate limit: most starts in any window ÷ limit"
    for ax, title, value, line, label in (
        (axes[1][0], utilisation, lambda r: r["utilisation"], 0.9, "target ≥ 0.90"),
        (
            axes[1][1],
            most,
            lambda r: r["max_in_window"] / r["times"],
            1.0,
            "limit (above: violation)",
        ),
    ):
        got = {(r["limit"], r["contender"]): value(r) for r in runs}
        series = {c: [got.get((limit, c)) for limit in limits] for c in contenders}
        _panel(ax, title, limits, series, line, label)
    _backlog(axes[2], data.get("backlog", {}).get("runs", []))
    _concurrency(axes[3], data.get("concurrency", {}))
    run = results["run"]
    fig.suptitle(
        f"django-heimdall vs plain Celery and peers ({run['mode']} run {run['started']}; "
        f"Python {run['versions']['python']}, Celery {run['versions']['celery']}, "
        f"Redis {run['redis_server']}, {run['cpus']} CPUs)" + run.get("note", ""),
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _notes(data: dict[str, Any]) -> dict[str, str]:
    """One line per other figure, shown in the throughput panel."""
    notes = {}
    if tp := data.get("throughput"):
        notes["throughput ratio"] = f"{tp['ratio']:.3f} (-c {tp['params']['concurrency']})"
    if eager := data.get("eager"):
        notes["eager .delay()"] = f"{eager['ratio']['django-heimdall']:.2f} x plain"
    for name, page in data.get("admin", {}).get("pages", {}).items():
        if name.startswith(("(a)", "(b)")):
            notes[f"admin {name.split(' ', 1)[1]}"] = f"{page['ms']['median']:.1f} ms median"
    return notes


def _backlog(axes: Any, runs: list[dict[str, Any]]) -> None:
    """Publishes per task and Kendall tau of each backlog, per contender."""
    groups = list(dict.fromkeys(f"{r['backlog']} at {r['limit']}" for r in runs))
    contenders = list(dict.fromkeys(r["contender"] for r in runs))
    for ax, key, title, line, label in (
        (axes[0], "publishes_per_task", "4a. Backlog: publishes per task", 2.1, "target ≤ 2.1"),
        (axes[1], "tau", "4b. Backlog: Kendall tau, start vs enqueue order", 0.95, "target ≥ 0.95"),
    ):
        got = {(f"{r['backlog']} at {r['limit']}", r["contender"]): r[key] for r in runs}
        series = {c: [got.get((g, c)) for g in groups] for c in contenders}
        _panel(ax, f"{title} (django-heimdall: FIFO)", groups, series, line, label)
    if loose := [r for r in runs if r["max_in_window"] > r["times"]]:
        most = ", ".join(f"{r['max_in_window']} at {r['limit']}" for r in loose)
        note = f"{', '.join(dict.fromkeys(r['contender'] for r in loose))} did not hold the "
        note += f"limit (most starts in one window: {most}): the backlog starts at once, "
        note += "with ~1 publish per task and no order to keep"
        for ax in axes:
            ax.set_xlabel(textwrap.fill(note, 90), fontsize=7)


def _concurrency(axes: Any, data: dict[str, Any]) -> None:
    """Throughput with a non-binding concurrency_limit; re-sends of a backlog per hold."""
    tps = data.get("tasks_per_s", {})
    groups = ["plain", "django-heimdall\nconcurrency_limit not binding"] if tps else []
    title = "5a. Concurrency limit: worker throughput (tasks/s)"
    line = tps.get("plain", 0) * 0.9
    _panel(axes[0], title, groups, {"tasks/s": list(tps.values())}, line, "0.90 of plain", "{:.0f}")
    backlogs = data.get("backlogs", [])
    groups = [f"hold ~{b['hold']:g} s" for b in backlogs]
    series = {name: [b[f"resends_{name}"] for b in backlogs] for name in ("mean", "p95", "max")}
    title = "5b. Backlog behind concurrency_limit=4: re-sends per task"
    _panel(axes[1], title, groups, series, 3.0, "target: mean ≤ 3")
