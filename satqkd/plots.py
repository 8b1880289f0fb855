"""The plots of a pass, each titled with its scenario and seed and saved with the data it is
drawn from (`NAME.png` beside `NAME.csv`). Over time: count rate, counts by intensity against
the link model's expectation, QBER by basis, sifted bits and the final key, ATP, clock.
Geometry and link (rate against elevation and range, link budget at culmination, sky track):
`satqkd.plots_geometry`.

No data is drawn as no data: a frame without detections is a gap on a log axis, never a fake
floor; a frame without Z bits has no QBER point, never 0 %.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from satqkd.archives import INTENSITY_LABELS

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from satqkd.config import Scenario

Plot = tuple["Figure", "pd.DataFrame"]


@dataclass
class PassData:
    """What the plots of one pass are drawn from: its report, its archives and its scenario
    (for the link model over the whole pass)."""

    report: dict[str, Any]
    frames: pd.DataFrame
    atp: pd.DataFrame
    scenario: Scenario | None = None
    # the simulator's truth over the whole pass (satqkd.archives.pass_timeline)
    _timeline: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def title_tag(self) -> str:
        """Get: `scenario, seed N` (what every title ends with)."""
        name = self.report.get("scenario") or f"{self.report['mission']}/{self.report['station']}"
        seed = self.report.get("seed")
        return f"{name}, seed {seed}" if seed is not None else str(name)

    def title(self, what: str) -> str:
        """Get: a plot title: what it shows, then scenario and seed."""
        return f"{what}\n{self.title_tag}"

    def timeline(self) -> pd.DataFrame:
        """Get: the link model over the whole pass, second by second: geometry, each loss and
        the expected rates (`satqkd.archives.pass_timeline`)."""
        if self._timeline is None:
            if self.scenario is None:
                raise ValueError("the plots of the whole pass need the pass's scenario")
            from satqkd.archives import pass_timeline

            self._timeline = pass_timeline(self.scenario, step_s=1.0)
        return self._timeline

    @property
    def qber_threshold(self) -> float | None:
        """Get: the mission's QBER abort threshold (None without the scenario)."""
        if self.scenario is None:
            return None
        return float(self.scenario.mission.protocol.qber_abort_threshold)


def _pyplot() -> Any:
    import sys

    import matplotlib

    if "ipykernel" not in sys.modules:  # a notebook keeps its inline backend
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _positive_or_nan(values: Any) -> np.ndarray:
    """Values with zeros and negatives as NaN: a gap on a log axis, not a floor."""
    array = np.asarray(values, dtype=float)
    return np.where(array > 0, array, np.nan)


def plot_count_rate(data: PassData) -> Plot:
    """Detections per second, frame by frame, on a log axis (frames without detections are
    gaps), against the link model's expectation, with the link loss on a second axis."""
    import pandas as pd

    plt = _pyplot()
    f = data.frames
    fig, ax = plt.subplots(figsize=(8, 4))
    measured = _positive_or_nan(f["detections_per_s"])
    ax.semilogy(f["t_after_aos_s"], measured, ".-", ms=3, label="detections per s (measured)")
    ax.semilogy(
        f["t_after_aos_s"], _positive_or_nan(f["expected_detections_per_s"]), "k--", lw=1,
        label="expected (link model)",
    )  # fmt: skip
    twin = ax.twinx()
    twin.plot(f["t_after_aos_s"], f["total_loss_db"], "C1", lw=1, label="link loss")
    twin.set_ylabel("link loss (dB)", color="C1")
    lines = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    ax.legend(handles=lines, loc="best", fontsize=7, ncol=3)
    ax.set(xlabel="time after AOS (s)", ylabel="detections per s", title=data.title("Count rate"))
    table = pd.DataFrame(
        {
            "t_after_aos_s": f["t_after_aos_s"],
            "detections_per_s": f["detections_per_s"],
            "expected_detections_per_s": f["expected_detections_per_s"],
            "total_loss_db": f["total_loss_db"],
        }
    )
    return fig, table


def plot_counts_by_intensity(data: PassData) -> Plot:
    """Sifted detections per second of each intensity (signal, decoy, vacuum), frame by frame,
    with the rate the link model expects for it overlaid (dashed)."""
    import pandas as pd

    plt = _pyplot()
    f = data.frames
    span = (f["stop_unix_s"] - f["start_unix_s"]).to_numpy()
    fig, ax = plt.subplots(figsize=(8, 4.2))
    table = {"t_after_aos_s": f["t_after_aos_s"]}
    for k, label in enumerate(INTENSITY_LABELS):
        sifted = (f[f"x_sifted_{label}"] + f[f"z_sifted_{label}"]).to_numpy() / span
        expected = f[f"expected_sifted_{label}_per_s"].to_numpy()
        ax.semilogy(f["t_after_aos_s"], _positive_or_nan(sifted), ".", ms=4, color=f"C{k}",
                    label=f"{label} (measured)")  # fmt: skip
        ax.semilogy(f["t_after_aos_s"], _positive_or_nan(expected), "--", color=f"C{k}", lw=1,
                    label=f"{label} (expected)")  # fmt: skip
        table[f"sifted_{label}_per_s"] = sifted
        table[f"expected_sifted_{label}_per_s"] = expected
    ax.set(
        xlabel="time after AOS (s)",
        ylabel="sifted detections per s",
        title=data.title("Sifted counts by intensity: measured and expected"),
    )
    ax.legend(fontsize=7, ncol=3, loc="lower center")
    return fig, pd.DataFrame(table)


def plot_qber(data: PassData) -> Plot:
    """QBER by basis: Z (test basis) frame by frame, gaps where a frame has no Z bits; X (key
    basis) over the whole pass once error correction found its errors; the abort threshold
    labelled."""
    import pandas as pd

    plt = _pyplot()
    f = data.frames
    q = data.report["quantum"]
    fig, ax = plt.subplots(figsize=(8, 4))
    t = f["t_after_aos_s"].to_numpy()
    ax.plot(t, 100 * f["qber_z"], ".-", ms=3, lw=0.8, label="Z basis, per frame")
    x_known = bool(q.get("x_errors_known"))
    qber_x = q["qber_by_basis"]["x"]
    if x_known and t.size:
        ax.hlines(
            100 * qber_x,
            t.min(),
            t.max(),
            colors="C1",
            lw=2,
            label=f"X basis, whole pass (from error correction): {100 * qber_x:.2f} %",
        )
    else:
        ax.text(0.01, 0.97, "X basis: unknown (error correction did not run)",
                transform=ax.transAxes, va="top", fontsize=8)  # fmt: skip
    threshold = data.qber_threshold
    if threshold is not None:
        ax.axhline(100 * threshold, color="r", ls="--", lw=1)
        ax.annotate(f"abort threshold {100 * threshold:g} %", (0.99, 100 * threshold),
                    xycoords=("axes fraction", "data"), ha="right", va="bottom", color="r",
                    fontsize=8)  # fmt: skip
    ax.set_ylim(bottom=0)
    ax.set(xlabel="time after AOS (s)", ylabel="QBER (%)", title=data.title("QBER by basis"))
    ax.legend(fontsize=8, loc="center right")
    table = pd.DataFrame(
        {
            "t_after_aos_s": t,
            "z_sifted": f["z_sifted"],
            "z_errors": f["z_errors"],
            "qber_z": f["qber_z"],
            "qber_x_pass": qber_x if x_known else np.nan,
            "qber_abort_threshold": threshold if threshold is not None else np.nan,
        }
    )
    return fig, table


def plot_key(data: PassData) -> Plot:
    """Sifted bits accumulating over the pass (left) and, as the separate quantities they
    are, what post-processing made of them at the end (right)."""
    import pandas as pd

    plt = _pyplot()
    f = data.frames
    r = data.report
    fig, (ax, bars) = plt.subplots(1, 2, figsize=(10, 4), width_ratios=(3, 2))
    cumulative = np.cumsum(f["sifted_bits"].to_numpy())
    ax.plot(f["t_after_aos_s"], cumulative, label="sifted bits (cumulative)")
    ax.set(xlabel="time after AOS (s)", ylabel="bits", title="sifted over the pass")
    ax.legend(fontsize=8)
    pp = r["postprocessing"]
    names = ("sifted bits", "PA input", "leaked to EC", "PA output", "final secret key")
    values = (
        r["quantum"]["sifted_bits"],
        pp["pa_input_bits"],
        pp["leak_ec_bits"],
        pp["pa_output_bits"],
        r["key"]["secret_key_bits"],
    )
    colours = ("C0", "C0", "C3", "C2", "C2")
    bars.bar(range(len(names)), values, color=colours)
    bars.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    bars.set(ylabel="bits", title="at the end of the pass")
    if not r["key"]["secret_key_bits"]:
        bars.text(0.5, 0.9, f"no key: {r['key']['abort_reason']}"[:70], transform=bars.transAxes,
                  ha="center", fontsize=7, wrap=True)  # fmt: skip
    fig.suptitle(data.title("Sifted bits and final key"))
    table = pd.DataFrame(
        {"t_after_aos_s": f["t_after_aos_s"], "sifted_bits_cumulative": cumulative}
    )
    budget = pd.DataFrame({"quantity": names, "bits": values})
    return fig, pd.concat([table, budget], axis=1)


def plot_atp(data: PassData) -> Plot:
    """The station's ATP over time: mode (top), beacon spot offset and mirror command."""
    import pandas as pd

    plt = _pyplot()
    a = data.atp
    fig, (modes, spot) = plt.subplots(2, 1, figsize=(8, 5), sharex=True, height_ratios=(1, 3))
    if len(a):
        categories = list(a["mode"].cat.categories)
        modes.step(a["t_after_aos_s"], a["mode"].cat.codes, where="post", lw=1)
        modes.set_yticks(range(len(categories)), categories, fontsize=6)
        valid = a["spot_valid"].to_numpy() == 1.0
        for column, colour in (("spot_x_urad", "C0"), ("spot_y_urad", "C1")):
            values = np.where(valid, a[column].to_numpy(), np.nan)
            spot.plot(
                a["t_after_aos_s"],
                values,
                color=colour,
                lw=0.7,
                label=column.replace("_urad", "").replace("_", " ") + " (valid only)",
            )
        spot.plot(a["t_after_aos_s"], a["fsm_tip_urad"], "C2", lw=0.7, alpha=0.7, label="fsm tip")
        spot.plot(a["t_after_aos_s"], a["fsm_tilt_urad"], "C3", lw=0.7, alpha=0.7,
                  label="fsm tilt")  # fmt: skip
        spot.legend(fontsize=7, ncol=2)
    else:
        spot.text(0.5, 0.5, "station ATP not in the loop: no samples", ha="center",
                  transform=spot.transAxes)  # fmt: skip
    modes.set(title=data.title("Station ATP: mode, beacon spot and mirror"))
    spot.set(xlabel="time after AOS (s)", ylabel="µrad")
    columns = ["t_after_aos_s", "mode", "spot_valid", "spot_x_urad", "spot_y_urad"]
    table = pd.DataFrame({c: a[c] for c in [*columns, "fsm_tip_urad", "fsm_tilt_urad"]})
    return fig, table


def plot_clock(data: PassData) -> Plot:
    """The payload clock's offset as the station tracked it, frame by frame, and its residual
    from a straight line (a constant drift)."""
    import pandas as pd

    plt = _pyplot()
    f = data.frames
    t = f["t_after_aos_s"].to_numpy()
    offset = f["clock_offset_ps"].to_numpy()
    fig, (ax, res_ax) = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    known = np.isfinite(offset)
    residual = np.full(offset.shape, np.nan)
    if known.sum() >= 2:
        slope, intercept = np.polyfit(t[known], offset[known], 1)
        residual[known] = offset[known] - (slope * t[known] + intercept)
        ax.plot(t, offset, ".", ms=3, label="tracked offset")
        ax.plot(
            t[known],
            slope * t[known] + intercept,
            "k--",
            lw=0.8,
            label=f"straight line: {slope * 1e-3:.3f} ppb drift",
        )
        res_ax.plot(t, residual, ".-", ms=3, lw=0.7)
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no offset per frame (a frame was not synchronised)", ha="center",
                transform=ax.transAxes)  # fmt: skip
    true_offset = data.report["sync"].get("true_clock_offset_ps")
    ax.set(ylabel="offset (ps)", title=data.title("Payload clock offset and residual"))
    if true_offset is not None:
        ax.set_title(ax.get_title() + f" (true offset at QKD start {true_offset:g} ps)", fontsize=9)
    res_ax.set(xlabel="time after AOS (s)", ylabel="residual (ps)")
    table = pd.DataFrame({"t_after_aos_s": t, "clock_offset_ps": offset, "residual_ps": residual})
    return fig, table


def plot_elevation(data: PassData) -> Plot:
    """Elevation over the whole pass (link model) with the QKD frames marked."""

    plt = _pyplot()
    timeline = data.timeline()
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.plot(timeline["t_after_aos_s"], timeline["elevation_deg"], label="elevation")
    f = data.frames
    if len(f):
        ax.axvspan(f["t_after_aos_s"].min(), f["t_after_aos_s"].max(), alpha=0.15, label="QKD")
    ax.set(xlabel="time after AOS (s)", ylabel="elevation (deg)", title=data.title("Pass geometry"))
    ax.legend(fontsize=8)
    return fig, timeline[["t_after_aos_s", "elevation_deg"]].copy()


def all_plots() -> dict[str, Callable[[PassData], Plot]]:
    """Get: every plot of a pass by file stem, in the order they are written."""
    from satqkd import plots_geometry as geometry

    return {
        "elevation": plot_elevation,
        "sky_track": geometry.plot_sky_track,
        "link_waterfall": geometry.plot_link_waterfall,
        "rate_vs_elevation_range": geometry.plot_rate_vs_elevation_range,
        "count_rate": plot_count_rate,
        "counts_by_intensity": plot_counts_by_intensity,
        "qber": plot_qber,
        "key": plot_key,
        "atp": plot_atp,
        "clock": plot_clock,
    }


def write_plots(data: PassData, out_dir: Path) -> list[Path]:
    """Control: draw every plot of the pass into `out_dir` as NAME.png with NAME.csv (the data
    it is drawn from); return the paths written."""
    plt = _pyplot()
    written = []
    for stem, plot in all_plots().items():
        fig, table = plot(data)
        fig.tight_layout()
        png, csv = out_dir / f"{stem}.png", out_dir / f"{stem}.csv"
        fig.savefig(png, dpi=110)
        plt.close(fig)
        table.to_csv(csv, index=False)
        written += [png, csv]
    return written
