"""What `satqkd sim pass` leaves for a user: archives (Parquet, CSV on request), plots with
scenario and seed in the title and their data beside them, no fake data points, a clean --out,
exit statuses, the no-key explanation (issue 12). Built on the session's short clear pass."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from satqkd import cli, sim_pass_cli
from satqkd.api import PassResult, clear_earlier_run, earlier_run_outputs, load_pass
from satqkd.archives import frames_from_telemetry
from satqkd.config import load_scenario
from satqkd.pass_recorder import load_recorded
from satqkd.plots import PassData, all_plots, plot_count_rate, plot_qber
from satqkd.report import explain_no_key

REPO = Path(__file__).resolve().parents[2]
CLEAR = REPO / "configs" / "scenarios" / "jinan1-xinglong-clear.yaml"


@pytest.fixture(scope="module")
def short_pass(short_clear_pass: tuple[Path, dict]) -> PassResult:
    out, _ = short_clear_pass
    return load_pass(out, CLEAR)


def test_archives_hold_every_frame_and_atp_sample(short_clear_pass, short_pass) -> None:
    out, report = short_clear_pass
    frames, atp = short_pass.frames, short_pass.atp
    assert len(frames) == 60  # one row per 1 s frame of the 60 s of QKD
    assert frames["detections"].sum() == report["quantum"]["detections"]
    assert frames["sifted_bits"].sum() == report["quantum"]["sifted_bits"]
    by_intensity = {row["label"]: row for row in report["quantum"]["by_intensity"]}
    # every frame's counts by intensity were kept before the station released them
    for label in ("signal", "decoy", "vacuum"):
        assert frames[f"z_sifted_{label}"].notna().all()
        assert frames[f"z_sifted_{label}"].sum() == by_intensity[label]["z_detections"]
    assert (frames["range_km"] > 400).all() and (frames["elevation_deg"] > 50).all()
    assert len(atp) > 1000 and "tracking" in set(atp["mode"])
    assert (out / "frames.parquet").is_file() and (out / "atp.parquet").is_file()
    assert not (out / "frames.csv").exists()  # CSV only with --csv


def test_the_station_telemetry_alone_gives_each_frames_counts_by_intensity_and_clock(
    short_clear_pass, short_pass
) -> None:
    """What `ogs run --reports` archives on hardware: the frames rebuilt from the recorded
    QKD_PROGRESS and OGS_PASS_SUMMARY, equal to the simulated pass's own archive."""
    out, report = short_clear_pass
    records = load_recorded(out / "telemetry.jsonl")
    rebuilt = frames_from_telemetry(records, report["plan_id"], report["station"])
    archived = short_pass.frames
    assert "tags" not in rebuilt and len(rebuilt) == len(archived) == 60
    for column in rebuilt.columns:
        pd.testing.assert_series_equal(
            rebuilt[column], archived[column], check_dtype=False, obj=column
        )
    # every frame was synchronised: an offset and a residual each, drifting with the clock
    assert rebuilt["clock_offset_ps"].notna().all()
    assert rebuilt["clock_offset_ps"].nunique() > 1
    assert (rebuilt["timing_residual_rms_ps"] > 0).all()
    by_intensity = {row["label"]: row for row in report["quantum"]["by_intensity"]}
    for label in ("signal", "decoy", "vacuum"):
        assert rebuilt[f"x_sifted_{label}"].sum() == by_intensity[label]["x_detections"]


def test_every_plot_has_its_data_and_names_scenario_and_seed(short_clear_pass, short_pass):
    out, _ = short_clear_pass
    for stem in all_plots():
        assert (out / f"{stem}.png").stat().st_size > 10_000, stem
        assert len(pd.read_csv(out / f"{stem}.csv")) > 0, stem
        figure = short_pass.plot(stem)
        texts = [figure._suptitle.get_text()] if figure._suptitle else []
        texts += [ax.get_title() for ax in figure.axes]
        assert any("jinan1-xinglong-clear, seed 7" in text for text in texts), stem


def _with_empty_frame(result: PassResult) -> PassData:
    frames = result.frames.copy()
    for column in ("detections", "detections_per_s", "z_sifted", "z_errors"):
        frames.loc[10, column] = 0
    frames.loc[10, "qber_z"] = np.nan
    return PassData(result.report, frames, result.atp, result.scenario)


def test_a_frame_without_counts_is_a_gap_not_a_floor_or_zero(short_pass) -> None:
    data = _with_empty_frame(short_pass)
    figure, table = plot_count_rate(data)
    measured = figure.axes[0].get_lines()[0].get_ydata()
    assert np.isnan(measured[10]) and np.all(measured[np.arange(60) != 10] > 1e4)
    figure, table = plot_qber(data)
    z_line = figure.axes[0].get_lines()[0].get_ydata()
    assert np.isnan(z_line[10]) and np.isnan(table["qber_z"][10])
    labels = [t.get_text() for t in figure.axes[0].texts]
    assert any("abort threshold 11 %" in text for text in labels)


def test_rerun_into_the_same_out_is_refused_or_cleared_with_force(short_clear_pass, tmp_path):
    out, _ = short_clear_pass
    status = cli.main(["sim", "pass", str(CLEAR), "--out", str(out), "--quiet"])
    assert status == 2
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    assert "keys" in earlier_run_outputs(copy)
    clear_earlier_run(copy)
    assert earlier_run_outputs(copy) == []
    assert not (copy / "keys").exists() and not list(copy.glob("*.png"))


def _no_key(report: dict, reason: str) -> dict:
    changed = json.loads(json.dumps(report))
    changed["key"].update(secret_key_bits=0, abort_reason=reason)
    return changed


def test_no_key_is_explained_in_plain_words_with_what_to_try(short_clear_pass) -> None:
    _, report = short_clear_pass
    assert explain_no_key(report) is None
    finite = _no_key(report, "finite-key bound leaves no key: s_x1 465, phi_x 0.500, leak 9 bits")
    words = explain_no_key(finite, 218.0)
    assert "too few detections" in words and "--start-after-aos-s 188" in words
    assert "s_x1" not in words
    qber = explain_no_key(_no_key(report, "qber 0.251 above 0.11 threshold"))
    assert "25.1 %" in qber and "11 %" in qber and "eavesdropper" in qber


def test_exit_status_is_0_without_a_key_and_3_with_require_key(
    short_pass, monkeypatch, capsys, tmp_path
):
    no_key = PassResult(
        short_pass.scenario,
        _no_key(short_pass.report, "qber 0.251 above 0.11 threshold"),
        short_pass.frames,
        short_pass.atp,
        {},
        culmination_after_aos_s=218.0,
    )
    monkeypatch.setattr("satqkd.api.execute_pass", lambda *args, **kwargs: no_key)
    base = ["sim", "pass", str(CLEAR), "--seed", "7"]
    for extra, expected in (([], 0), (["--require-key"], cli.EXIT_NO_KEY)):
        target = tmp_path / f"run{len(extra)}"
        assert cli.main([*base, "--out", str(target), *extra]) == expected
        printed = capsys.readouterr().out
        assert "no key: too many errors" in printed


def test_plain_progress_lines_every_tenth(capsys) -> None:
    import sys

    progress = sim_pass_cli._progress_lines(sys.stdout)
    for k in range(1, 61):
        progress(k / 60, f"{k} frames")
    lines = capsys.readouterr().out.splitlines()
    # the first frame at once (something shows while it starts), then every tenth
    assert len(lines) == 11 and lines[1].startswith("pass:  10.0 %")
    assert lines[-1].startswith("pass: 100.0 %")


def test_keyrate_estimate_reads_a_report(short_clear_pass, capsys) -> None:
    out, report = short_clear_pass
    assert cli.main(["keyrate", "estimate", str(out / "report.json")]) == 0
    estimate = json.loads(capsys.readouterr().out)
    assert estimate["key_length_bits"] == report["postprocessing"]["pa_output_bits"] > 0
    assert (
        cli.main(["keyrate", "estimate", str(REPO / "configs/keyrate/jinan1-clear-pass.json")]) == 0
    )


def test_version_and_verbose_anywhere(capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        cli.main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.startswith("satqkd ")
    example = str(REPO / "configs/keyrate/jinan1-clear-pass.json")
    assert cli.main(["keyrate", "estimate", example, "-v"]) == 0
    argv = ["keyrate", "-vv", "estimate", example]
    assert cli._take_verbose_flags(argv) == 2 and argv == ["keyrate", "estimate", example]


def test_every_config_problem_is_listed_at_once(tmp_path: Path, capsys) -> None:
    text = CLEAR.read_text().replace("seed: 7", "seed: -1") + "\nunknown_key: 1\n"
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    assert cli.main(["sim", "link", str(bad)]) == 2
    message = capsys.readouterr().err.strip()
    assert "\n" not in message and "2 problems" in message
    assert "seed" in message and "unknown_key: unknown key" in message


def test_a_scenario_copied_anywhere_still_loads(tmp_path: Path) -> None:
    copy = tmp_path / "elsewhere" / "my-pass.yaml"
    copy.parent.mkdir()
    shutil.copyfile(CLEAR, copy)
    scenario = load_scenario(copy)
    assert scenario.mission.name == "jinan1" and scenario.station.name == "xinglong"
    assert cli.main(["init", str(tmp_path / "work")]) == 0
    copied = tmp_path / "work" / "configs" / "scenarios" / "jinan1-xinglong-clear.yaml"
    assert load_scenario(copied).scenario.name == "jinan1-xinglong-clear"
    assert cli.main(["init", str(tmp_path / "work")]) == 2  # no silent overwrite


def test_help_documents_exit_statuses(capsys) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = capsys.readouterr().out
    assert "exit status:" in text and "--require-key" in text
    assert isinstance(cli._build_parser(), argparse.ArgumentParser)
