"""The chart of ``python -m benchmarks.suite``: one PNG, four panels (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

CONTENDER_COLORS = {
    "django-heimdall": "#1f6fb4",
    "celery-heimdall": "#e07b26",
    "celery-once": "#6a9f3a",
    "celery-singleton": "#8a5fb0",
}
PLAIN_COLOR = "#8c8c8c"


def _bar_labels(ax: Any, bars: Any, fmt: str) -> None:
    for bar in bars:
        height = bar.get_height()
        if not height:  # not measured (n/a): no label
            continue
        ax.annotate(
            fmt.format(height),
            (bar.get_x() + bar.get_width() / 2, height),
            xytext=(0, 2),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=7,
        )


def _not_measured(ax: Any) -> None:
    ax.text(0.5, 0.5, "not measured in this run", ha="center", transform=ax.transAxes)
    ax.set_axis_off()


def _enqueue(ax: Any, results: dict[str, Any]) -> None:
    enq = results.get("enqueue")
    if not enq:
        ax.set_title("1. Enqueue cost ÷ plain apply_async", fontsize=9)
        _not_measured(ax)
        return
    ax.set_title(
        "1. Enqueue cost ÷ plain apply_async "
        f"(= {enq['plain_us']['median']:.0f} µs; median, lower is better)",
        fontsize=9,
    )
    names = list(results["contenders"])
    width = 0.38
    xs = range(len(names))
    first = [enq["contenders"].get(n, {}).get("first_ratio", 0) for n in names]
    dup = [enq["contenders"].get(n, {}).get("duplicate_ratio", 0) for n in names]
    b1 = ax.bar([x - width / 2 for x in xs], first, width, label="first enqueue", color="#1f6fb4")
    b2 = ax.bar([x + width / 2 for x in xs], dup, width, label="duplicate", color="#e07b26")
    _bar_labels(ax, b1, "{:.2f}")
    _bar_labels(ax, b2, "{:.2f}")
    for x, name in zip(xs, names, strict=True):
        if name not in enq["contenders"]:
            ax.text(x, 0.05, "n/a", ha="center", fontsize=8)
    ax.axhline(1.0, color=PLAIN_COLOR, lw=1, label="plain = 1")
    ax.axhline(1.05, color="#1f6fb4", lw=1, ls="--", label="target first ≤ 1.05")
    ax.axhline(0.30, color="#e07b26", lw=1, ls=":", label="target duplicate ≤ 0.30")
    labels = [n + ("\n(non-blocking)" if n == "celery-heimdall" else "") for n in names]
    ax.set_xticks(list(xs), labels, fontsize=8)
    ax.set_ylabel("ratio to plain Celery", fontsize=8)
    ax.set_ylim(0, max([*first, *dup, 1.1]) * 1.5)
    ax.legend(fontsize=7, loc="upper right", ncol=3)


def _rate_rows(results: dict[str, Any]) -> tuple[list[str], dict[str, list[Any]]]:
    rows = results.get("rate") or []
    limits = [row["limit"] for row in rows]
    series: dict[str, list[Any]] = {}
    for name in ("django-heimdall", "celery-heimdall"):
        series[name] = [row["contenders"].get(name) for row in rows]
    return limits, series


def _rate_panel(ax: Any, results: dict[str, Any], what: str) -> None:
    limits, series = _rate_rows(results)
    if what == "utilisation":
        ax.set_title("3a. Rate limit: achieved ÷ allowed starts (saturated)", fontsize=9)
    else:
        ax.set_title("3b. Rate limit: most starts in any window ÷ limit", fontsize=9)
    if not limits:
        _not_measured(ax)
        return
    width = 0.38
    xs = range(len(limits))
    top = 1.1
    for i, (name, cells) in enumerate(series.items()):
        values, overs = [], []
        for cell, limit in zip(cells, (results["rate"]), strict=True):
            if not cell or "error" in cell:
                values.append(0)
                overs.append(None)
                continue
            if what == "utilisation":
                values.append(cell["utilisation"])
            else:
                values.append(cell["max_in_window"] / limit["times"])
            overs.append(cell["over_limit"])
        offset = (i - 0.5) * width
        bars = ax.bar(
            [x + offset for x in xs], values, width, label=name, color=CONTENDER_COLORS[name]
        )
        _bar_labels(ax, bars, "{:.2f}")
        top = max(top, *values)
        for x, cell, over in zip(xs, cells, overs, strict=True):
            if cell is None:
                ax.text(x + offset, 0.05, "n/a", ha="center", fontsize=7, rotation=90)
            elif what != "utilisation" and over:
                ax.text(
                    x + offset,
                    0.08,
                    f"{over} over",
                    ha="center",
                    fontsize=7,
                    rotation=90,
                    color="white",
                )
    if what == "utilisation":
        ax.axhline(1.0, color=PLAIN_COLOR, lw=1, label="allowed = 1")
        ax.axhline(0.9, color="#1f6fb4", lw=1, ls="--", label="target ≥ 0.90")
    else:
        ax.axhline(1.0, color="#c0392b", lw=1, ls="--", label="limit (above: violation)")
    ax.set_xticks(list(xs), limits, fontsize=8)
    ax.set_ylim(0, top * 1.25)
    ax.legend(fontsize=7, loc="upper right")


def _throughput(ax: Any, results: dict[str, Any]) -> None:
    tp = results.get("throughput")
    ax.set_title("2. Worker throughput, prefork (tasks/s, higher is better)", fontsize=9)
    if not tp:
        _not_measured(ax)
        return
    labels = ["plain task", "django-heimdall\nunique + rate limit"]
    values = [tp["tasks_per_s"]["plain"], tp["tasks_per_s"]["django-heimdall"]]
    bars = ax.bar(labels, values, 0.5, color=[PLAIN_COLOR, CONTENDER_COLORS["django-heimdall"]])
    _bar_labels(ax, bars, "{:.0f}")
    ax.axhline(values[0] * 0.9, color="#1f6fb4", lw=1, ls="--", label="target ≥ 0.90 of plain")
    ax.set_ylim(0, max(values) * 1.3)
    ax.tick_params(axis="x", labelsize=8)
    notes = [f"ratio {tp['ratio']:.3f} (-c {tp['concurrency']}, {tp['n']} tasks/round)"]
    eager = results.get("eager")
    if eager:
        lat = eager["latency_us"]
        notes.append(
            f"eager .delay(): plain {lat['plain']['median']:.0f} µs, "
            f"django-heimdall {lat['django-heimdall']['median']:.0f} µs "
            f"({eager['ratio']:.2f}x)"
        )
    admin = results.get("admin") or {}
    for name, page in (admin.get("pages") or {}).items():
        notes.append(f"admin {name.split(' ', 1)[0]} page: {page['median_ms']:.1f} ms median")
    ax.text(
        0.02,
        0.97,
        "\n".join(notes),
        transform=ax.transAxes,
        va="top",
        fontsize=7,
        bbox={"boxstyle": "round", "fc": "white", "ec": "#cccccc"},
    )
    ax.legend(fontsize=7, loc="upper right")


def chart(results: dict[str, Any], path: Path) -> None:
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    _enqueue(axes[0][0], results)
    _throughput(axes[0][1], results)
    _rate_panel(axes[1][0], results, "utilisation")
    _rate_panel(axes[1][1], results, "window")
    run = results["run"]
    fig.suptitle(
        f"django-heimdall vs plain Celery and peers ({run['mode']} run {run['started']}; "
        f"Python {run['python']}, Celery {run['celery']}, Redis {run['redis_version']}, "
        f"{run['cpus']} CPUs)",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
