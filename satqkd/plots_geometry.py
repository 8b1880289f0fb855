"""Plots of a pass's geometry and link, each titled with scenario and seed and returned with
the data it is drawn from (`satqkd.plots.write_plots` saves both): the sifted rate against
elevation and range (as Liao et al., Nature 549, 43 (2017), Fig. 3 shows it), the link budget
at culmination as a waterfall, and the sky track with the station's elevation mask.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from satqkd.archives import LOSS_COLUMNS

if TYPE_CHECKING:
    from satqkd.plots import PassData, Plot


def _steps(data: PassData, name: str) -> np.ndarray:
    return data.timeline()[name].to_numpy(dtype=float)


def plot_rate_vs_elevation_range(data: PassData) -> Plot:
    """Sifted bits per second of each frame against elevation (left) and range (right), with
    what the link model expects over the whole pass; the final key as its pass average."""
    import pandas as pd

    from satqkd.plots import _positive_or_nan, _pyplot

    plt = _pyplot()
    f = data.frames
    t = _steps(data, "t_after_aos_s")
    elevation, range_km = _steps(data, "elevation_deg"), _steps(data, "range_km")
    expected = _steps(data, "expected_sifted_bits_per_s")
    rising = t <= t[int(np.nanargmax(elevation))]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    measured = _positive_or_nan(f["sifted_bits_per_s"])
    for ax, x_link, x_frames, label in (
        (axes[0], elevation, f["elevation_deg"], "elevation (deg)"),
        (axes[1], range_km, f["range_km"], "range (km)"),
    ):
        for part, style in ((rising, "-"), (~np.asarray(rising), ":")):
            ax.semilogy(x_link[part], _positive_or_nan(expected[part]), "k" + style, lw=0.8)
        ax.semilogy(x_frames, measured, ".", ms=4, color="C0", label="sifted, per frame")
        ax.set_xlabel(label)
    axes[0].plot([], [], "k-", lw=0.8, label="expected, rising")
    axes[0].plot([], [], "k:", lw=0.8, label="expected, setting")
    axes[0].set_ylabel("sifted bits per s")
    axes[0].legend(fontsize=8)
    key = data.report["key"]["secret_key_bits"]
    qkd_s = float((f["stop_unix_s"] - f["start_unix_s"]).sum()) if len(f) else 0.0
    average = key / qkd_s if qkd_s else 0.0
    note = (
        f"final key {key} bits over {qkd_s:.0f} s of QKD: {average:.1f} bit/s on average"
        if key
        else f"no final key ({data.report['key']['abort_reason']})"
    )
    axes[1].text(0.98, 0.02, note[:90], transform=axes[1].transAxes, ha="right", fontsize=7)
    fig.suptitle(data.title("Sifted key rate against elevation and range"))
    table = pd.DataFrame(
        {
            "t_after_aos_s": f["t_after_aos_s"],
            "elevation_deg": f["elevation_deg"],
            "range_km": f["range_km"],
            "sifted_bits_per_s": f["sifted_bits_per_s"],
            "expected_sifted_bits_per_s": f["expected_sifted_bits_per_s"],
            "final_key_bits_per_s_pass_average": average,
        }
    )
    return fig, table


def plot_link_waterfall(data: PassData) -> Plot:
    """Each loss of the downlink at culmination, stacked from 0 dB to the total, and the
    detectors' efficiency after it."""
    import pandas as pd

    from satqkd.plots import _pyplot

    plt = _pyplot()
    timeline = data.timeline()
    step = timeline.iloc[int(np.nanargmax(timeline["elevation_deg"].to_numpy()))]
    names = [term.removesuffix("_loss_db").replace("_", " ") for term in LOSS_COLUMNS]
    losses = [float(step[term]) for term in LOSS_COLUMNS]
    if data.scenario is not None:
        efficiency = float(np.mean(data.scenario.station.detectors.efficiency))
        names.append("detector efficiency")
        losses.append(-10.0 * math.log10(efficiency))
    bottoms = np.concatenate([[0.0], np.cumsum(losses)[:-1]])
    total = float(np.sum(losses))
    fig, ax = plt.subplots(figsize=(8, 4.2))
    ax.bar(range(len(names)), losses, bottom=bottoms, color="C3")
    ax.bar(len(names), total, color="k")
    for k, (loss, bottom) in enumerate(zip(losses, bottoms, strict=True)):
        ax.text(k, bottom + loss, f"{loss:.2f}", ha="center", va="bottom", fontsize=7)
    ax.text(len(names), total, f"{total:.2f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(names) + 1), [*names, "total"], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("loss (dB)")
    ax.set_title(
        data.title(
            f"Link budget at culmination: elevation {step['elevation_deg']:.1f} deg, "
            f"range {step['range_km']:.0f} km"
        )
    )
    table = pd.DataFrame(
        {
            "term": [*names, "total"],
            "loss_db": [*losses, total],
            "cumulative_db": [*np.cumsum(losses), total],
            "elevation_deg": step["elevation_deg"],
            "range_km": step["range_km"],
            "t_after_aos_s": step["t_after_aos_s"],
        }
    )
    return fig, table


def plot_sky_track(data: PassData) -> Plot:
    """The satellite's track on the sky as the station sees it (north up, east right), the
    QKD part of it, and the station's elevation mask."""
    import pandas as pd

    from satqkd.plots import _pyplot

    plt = _pyplot()
    azimuth, elevation = _steps(data, "azimuth_deg"), _steps(data, "elevation_deg")
    t = _steps(data, "t_after_aos_s")
    f = data.frames
    in_qkd = (
        (t >= f["t_after_aos_s"].min() - 0.5) & (t <= f["t_after_aos_s"].max() + 0.5)
        if len(f)
        else np.zeros(t.size, bool)
    )
    fig = plt.figure(figsize=(6, 6.4))
    ax = fig.add_subplot(projection="polar")
    ax.set_theta_zero_location("N")
    ax.set_theta_direction(-1)
    theta, radius = np.radians(azimuth), 90.0 - elevation
    ax.plot(theta, radius, "C0", lw=1, label="pass (AOS to LOS)")
    ax.plot(theta[in_qkd], radius[in_qkd], "C2", lw=3, label="QKD frames")
    ax.plot(theta[:1], radius[:1], "o", color="C0", ms=4)
    ax.annotate("AOS", (theta[0], radius[0]), fontsize=8)
    ax.annotate("LOS", (theta[-1], radius[-1]), fontsize=8)
    top = int(np.nanargmax(elevation))
    ax.plot(theta[top], radius[top], "k*", ms=8, label=f"culmination {elevation[top]:.1f} deg")
    ring = np.linspace(0, 2 * np.pi, 361)
    if data.scenario is not None:
        mask = data.scenario.station.min_elevation_deg
        ax.fill_between(ring, 90.0 - mask, 90.0, color="0.8", alpha=0.7,
                        label=f"below station mask ({mask:g} deg)")  # fmt: skip
        qkd_mask = data.scenario.mission.protocol.min_qkd_elevation_deg
        ax.plot(ring, np.full(ring.size, 90.0 - qkd_mask), "k--", lw=0.7,
                label=f"QKD mask ({qkd_mask:g} deg)")  # fmt: skip
    ax.set_rlim(0, 90)
    ax.set_rticks([0, 30, 60, 90], ["90°", "60°", "30°", "0°"], fontsize=7)
    ax.set_title(data.title("Sky track (north up, east right)"), fontsize=10)
    ax.legend(fontsize=7, loc="lower left", bbox_to_anchor=(-0.1, -0.15))
    table = pd.DataFrame(
        {"t_after_aos_s": t, "azimuth_deg": azimuth, "elevation_deg": elevation, "qkd": in_qkd}
    )
    return fig, table
