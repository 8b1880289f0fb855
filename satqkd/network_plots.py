"""The plots of `satqkd sim network`: the plan timeline (every predicted pass, the planned ones
by what became of them) and the key inventory of every node over time."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from satqkd.network_run import NetworkRun

__all__ = ["plot_inventory", "plot_timeline", "write_network_plots"]

_STATUS_COLOURS = {"flown": "tab:green", "lost_to_weather": "tab:red", "failed": "black"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_timeline(run: NetworkRun, path: Path) -> None:
    """Control: draw one row per satellite and station: predicted passes grey, planned passes
    green (flown), red (lost to weather) or black (failed); relays as vertical lines."""
    plt = _pyplot()
    candidates = run.candidates
    rows = sorted({(c.satellite, c.station) for c in candidates})
    index = {row: k for k, row in enumerate(rows)}
    t0 = run.scenario.start_unix_s
    figure, axes = plt.subplots(figsize=(12, 1.6 + 0.5 * max(len(rows), 1)))
    for c in candidates:
        axes.broken_barh(
            [((c.aos_unix_s - t0) / 3600.0, max((c.los_unix_s - c.aos_unix_s) / 3600.0, 0.05))],
            (index[c.satellite, c.station] - 0.4, 0.8),
            facecolors="0.85",
        )
    for p in run.passes:
        axes.broken_barh(
            [((p.aos_unix_s - t0) / 3600.0, max((p.los_unix_s - p.aos_unix_s) / 3600.0, 0.8))],
            (index[p.satellite, p.station] - 0.4, 0.8),
            facecolors=_STATUS_COLOURS.get(p.status, "tab:blue"),
        )
    for k, relay in enumerate(run.relays):
        axes.axvline(
            (relay["at_unix_s"] - t0) / 3600.0, color="tab:purple", linestyle="--",
            label="relay" if k == 0 else None,
        )  # fmt: skip
    for status, colour in _STATUS_COLOURS.items():
        axes.plot([], [], color=colour, linewidth=6, label=status.replace("_", " "))
    axes.set_xlim(-1.0, (run.scenario.stop_unix_s - t0) / 3600.0 + 1.0)
    axes.set_ylim(-0.6, len(rows) - 0.4 + 0.6)
    axes.set_yticks(range(len(rows)), [f"{sat} / {station}" for sat, station in rows])
    axes.set_xlabel(f"hours from {datetime.fromtimestamp(t0, tz=UTC):%Y-%m-%d %H:%M} UTC")
    axes.set_title("passes: grey predicted; planned ones flown, lost to weather or failed")
    axes.legend(loc="upper right", fontsize="small", ncol=4)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_inventory(run: NetworkRun, path: Path) -> None:
    """Control: draw each node's key inventory (bits held for use) against time."""
    plt = _pyplot()
    t0 = run.scenario.start_unix_s
    nodes = sorted({n for sample in run.inventory for n in sample["bits"]})
    figure, axes = plt.subplots(figsize=(12, 4.5))
    hours = [(s["t_unix_s"] - t0) / 3600.0 for s in run.inventory]
    for node in nodes:
        bits = [s["bits"].get(node, 0) for s in run.inventory]
        axes.step(hours, bits, where="post", label=node)
    axes.set_xlabel(f"hours from {datetime.fromtimestamp(t0, tz=UTC):%Y-%m-%d %H:%M} UTC")
    axes.set_ylabel("key held for use (bits)")
    axes.set_title("key inventory per node (after each pass, relay and fibre delivery)")
    if nodes:
        axes.legend(loc="upper left", fontsize="small", ncol=min(len(nodes), 5))
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_network_plots(run: NetworkRun, out: Path) -> list[Path]:
    """Control: write DIR/plan-timeline.png and DIR/key-inventory.png; get their paths."""
    paths = [out / "plan-timeline.png", out / "key-inventory.png"]
    plot_timeline(run, paths[0])
    plot_inventory(run, paths[1])
    return paths
