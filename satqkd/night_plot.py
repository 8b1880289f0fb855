"""The night's timeline: one row per mission, every candidate pass (AOS to LOS), the passes
flown with their QKD window and key, the refused ones, and the reconfiguration before each
flown pass of another mission. Drawn from the night report alone (night-timeline.png), with
the table it is drawn from (night-timeline.csv)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from satqkd.plots import _pyplot


def _at(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def timeline_table(report: dict[str, Any]) -> pd.DataFrame:
    """Get: one row per candidate pass: mission, AOS, LOS, culmination elevation, and what the
    station did with it (flown with its QKD window and key bits, refused, or not needed)."""
    flown = {(r["mission"], r["aos_utc"]): r for r in report["passes"]}
    refused = {(r["mission"], r["aos_utc"]): r["reason"] for r in report["refused"]}
    rows = []
    for mission, windows in report["candidates"].items():
        for w in windows:
            key = (mission, w["aos_utc"])
            row = flown.get(key)
            rows.append(
                {
                    "mission": mission,
                    "aos_utc": w["aos_utc"],
                    "los_utc": w["los_utc"],
                    "max_elevation_deg": w["max_elevation_deg"],
                    "outcome": "flown" if row else "refused" if key in refused else "not needed",
                    "qkd_start_utc": row["qkd_start_utc"] if row else None,
                    "qkd_stop_utc": row["qkd_stop_utc"] if row else None,
                    "secret_key_bits": row["secret_key_bits"] if row else None,
                    "reason": refused.get(key),
                }
            )
    return pd.DataFrame(rows)


def write_timeline(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """Control: draw night-timeline.png and write night-timeline.csv; return both paths."""
    plt = _pyplot()
    table = timeline_table(report)
    missions = list(report["candidates"])
    gap = timedelta(seconds=report["station_missions"]["reconfiguration_gap_s"])
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.8 * max(1, len(missions))))
    colours = {"flown": "tab:green", "refused": "tab:red", "not needed": "0.75"}
    for _, row in table.iterrows():
        y = missions.index(row["mission"])
        aos, los = _at(row["aos_utc"]), _at(row["los_utc"])
        ax.barh(y, los - aos, left=aos, height=0.5, color=colours[row["outcome"]], alpha=0.5)
        if row["outcome"] == "flown":
            start, stop = _at(row["qkd_start_utc"]), _at(row["qkd_stop_utc"])
            ax.barh(y, stop - start, left=start, height=0.5, color="tab:green")
            ax.annotate(
                f"{int(row['secret_key_bits'])} bits",
                (los, y),
                xytext=(4, 0),
                textcoords="offset points",
                va="center",
                fontsize=8,
            )
    for entry in report["passes"]:
        if entry["profile_switched"]:
            ax.barh(
                missions.index(entry["mission"]),
                gap,
                left=_at(entry["aos_utc"]) - gap,
                height=0.5,
                color="none",
                edgecolor="tab:blue",
                hatch="///",
            )
    protocols = {name: total["protocol"] for name, total in report["missions"].items()}
    ax.set_yticks(range(len(missions)), [f"{m}\n{protocols.get(m, '')}" for m in missions])
    ax.set_ylim(-0.6, len(missions) - 0.4)
    ax.set_xlabel("UTC")
    ax.set_title(
        f"{report['night']} at {report['station']}\npasses flown (green, QKD window dark), "
        "refused (red), not needed (grey); hatched: reconfiguration to the pass's profile",
        fontsize=9,
    )
    fig.autofmt_xdate()
    fig.tight_layout()
    png, csv = out_dir / "night-timeline.png", out_dir / "night-timeline.csv"
    fig.savefig(png, dpi=110)
    plt.close(fig)
    table.to_csv(csv, index=False)
    return [png, csv]
