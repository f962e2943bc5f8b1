"""The chart of ``python -m benchmarks``: one PNG, four panels (matplotlib, Agg)."""

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
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
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
    run = results["run"]
    fig.suptitle(
        f"django-heimdall vs plain Celery and peers ({run['mode']} run {run['started']}; "
        f"Python {run['versions']['python']}, Celery {run['versions']['celery']}, "
        f"Redis {run['redis_server']}, {run['cpus']} CPUs)",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.96))
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
    if backlog := data.get("backlog"):
        tau, publishes = backlog["Kendall tau (start vs enqueue order)"], "publishes per task"
        notes[f"backlog {backlog['rate']}"] = f"tau {tau:.2f}, {backlog[publishes]:.2f} {publishes}"
    for name, page in data.get("admin", {}).get("pages", {}).items():
        if name.startswith(("(a)", "(b)")):
            notes[f"admin {name.split(' ', 1)[1]}"] = f"{page['ms']['median']:.1f} ms median"
    return notes
