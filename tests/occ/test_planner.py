"""The OCC planner: feasibility of plans on predicted passes, a case a greedy choice loses,
the cloud forecast, and bad input."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from satqkd.cli import main
from satqkd_core.ephemeris import Station, sun_elevation_deg, topocentric
from satqkd_core.errors import InputError
from satqkd_occ import (
    CandidatePass,
    CloudForecast,
    KeyDemand,
    KeyTable,
    PlanSettings,
    Satellite,
    StationSite,
    demand_from_mapping,
    night_date,
    plan_passes,
    predict_passes,
)
from sim_backends.orbit import sun_synchronous_tle

START = 1796601600.0  # 2026-12-07T00:00:00Z
DAY = 86400.0


def _candidate(pass_id, station, aos, los, bits, satellite="sat", cloud=0.0, night="2026-12-07"):
    return CandidatePass(
        pass_id,
        satellite,
        station,
        aos,
        (aos + los) / 2,
        los,
        60.0,
        -30.0,
        True,
        night,
        bits,
        cloud,
    )


def _greedy(candidates, demands, gap_s):
    """Earliest deadline first, each demand takes the free passes with the most key."""
    flown: list[CandidatePass] = []
    met = {}
    for demand in sorted(demands, key=lambda d: d.deadline_unix_s):
        got = 0
        for c in sorted(candidates, key=lambda c: -c.expected_key_bits):
            if got >= demand.bits or c.station not in demand.endpoints or c in flown:
                continue
            if c.los_unix_s > demand.deadline_unix_s:
                continue
            if any(
                f.satellite == c.satellite
                and c.aos_unix_s < f.los_unix_s + gap_s
                and f.aos_unix_s < c.los_unix_s + gap_s
                for f in flown
            ):
                continue
            flown.append(c)
            got += c.expected_key_bits
        met[demand.demand_id] = min(got, demand.bits)
    return met


def test_the_solver_meets_demand_that_a_greedy_choice_misses():
    # the biggest pass over A overlaps the only pass over B: taking it for A starves B
    candidates = [
        _candidate("a-big", "A", 0.0, 600.0, 1500),
        _candidate("b-only", "B", 300.0, 900.0, 1000),
        _candidate("a-late", "A", 5000.0, 5600.0, 1000),
    ]
    demands = [
        KeyDemand("for-a", "A", "sat", 1000, 9000.0),
        KeyDemand("for-b", "B", "sat", 1000, 9000.0),
    ]
    settings = PlanSettings(satellite_gap_s=60.0, station_gap_s=60.0)
    greedy = _greedy(candidates, demands, settings.satellite_gap_s)
    assert greedy == {"for-a": 1000, "for-b": 0}
    plan = plan_passes(candidates, demands, settings)
    assert [o.planned_bits for o in plan.outcomes] == [1000, 1000]
    assert all(o.met for o in plan.outcomes)
    assert {p.candidate.pass_id for p in plan.passes} == {"b-only", "a-late"}


def test_a_relay_demand_needs_key_at_both_stations_and_respects_its_deadline():
    candidates = [
        _candidate("a1", "A", 0.0, 600.0, 800),
        _candidate("b1", "B", 3000.0, 3600.0, 500),
        _candidate("b2", "B", 9000.0, 9600.0, 5000),  # after the deadline
    ]
    plan = plan_passes(candidates, [KeyDemand("ab", "A", "B", 2000, 8000.0)])
    (outcome,) = plan.outcomes
    assert outcome.planned_bits == 500  # the least of the two ends before the deadline
    assert outcome.by_satellite == {"sat": 500}
    assert "b2" not in {p.candidate.pass_id for p in plan.passes}


def test_a_cloudy_night_moves_the_plan_to_a_clear_one():
    candidates = [
        _candidate("cloudy", "A", 0.0, 600.0, 1000, cloud=0.9),
        _candidate("clear", "A", DAY, DAY + 600.0, 1000, cloud=0.0, night="2026-12-08"),
    ]
    plan = plan_passes(candidates, [KeyDemand("d", "A", "sat", 900, 3 * DAY)])
    assert [p.candidate.pass_id for p in plan.passes] == ["clear"]


@pytest.fixture(scope="module")
def week_plan():
    tle = sun_synchronous_tle(500.0, 22.5, START)
    satellites = [Satellite("sat", *tle)]
    sites = [
        StationSite("xinglong", Station(40.3958, 117.5775, 900.0), 15.0, -12.0),
        StationSite("graz", Station(47.0671, 15.4934, 493.0), 20.0, -15.0),
        StationSite("nanshan", Station(43.4711, 87.1775, 2080.0), 10.0, -12.0),
    ]
    table = KeyTable((10.0, 30.0, 90.0), (0, 100_000, 400_000))
    tables = {("sat", s.name): table for s in sites}
    forecast = CloudForecast({"graz": {night_date(START + DAY, 15.49): 0.5}}, 0.2)
    stop = START + 4 * DAY
    candidates = predict_passes(satellites, sites, START, stop, tables, forecast)
    demands = [
        KeyDemand("xinglong-graz", "xinglong", "graz", 150_000, START + 3 * DAY),
        KeyDemand("nanshan-sat", "nanshan", "sat", 200_000, START + 2 * DAY),
        KeyDemand("graz-nanshan", "graz", "nanshan", 100_000, stop),
    ]
    settings = PlanSettings(satellite_gap_s=120.0, station_gap_s=300.0, key_ready_after_los_s=600.0)
    return tle, sites, candidates, demands, settings, plan_passes(candidates, demands, settings)


def test_a_plan_on_predicted_passes_is_feasible(week_plan):
    tle, sites, candidates, demands, settings, plan = week_plan
    site = {s.name: s for s in sites}
    flown = [p.candidate for p in plan.passes]
    assert flown and len({c.pass_id for c in flown}) == len(flown)  # no pass used twice
    for key, gap in (("satellite", settings.satellite_gap_s), ("station", settings.station_gap_s)):
        for name in {getattr(c, key) for c in flown}:
            mine = sorted((c for c in flown if getattr(c, key) == name), key=lambda c: c.aos_unix_s)
            for before, after in pairwise(mine):
                assert after.aos_unix_s >= before.los_unix_s + gap  # never in two places
    for c in flown:  # masks and night, recomputed from the ephemeris
        s = site[c.station]
        times = np.linspace(c.aos_unix_s + 1.0, c.los_unix_s - 1.0, 20)
        elevation = topocentric(tle[0], tle[1], s.location, times).elevation_deg
        assert elevation.min() >= s.min_elevation_deg - 0.1
        assert sun_elevation_deg(s.location, times).max() < s.night_sun_elevation_deg
    by_id = {d.demand_id: d for d in demands}
    for item in plan.passes:  # deadlines and the key of each pass
        assert sum(item.allocated_bits.values()) <= item.candidate.expected_key_bits
        for demand_id in item.allocated_bits:
            deadline = by_id[demand_id].deadline_unix_s
            assert item.candidate.los_unix_s + settings.key_ready_after_los_s <= deadline
            assert item.candidate.station in by_id[demand_id].endpoints
    assert plan.status == "OPTIMAL"
    assert any(o.planned_bits > 0 for o in plan.outcomes)
    assert len(candidates) > len(flown)


def test_day_passes_are_left_out_unless_asked_for(week_plan):
    tle, sites, candidates, *_ = week_plan
    assert all(c.night for c in candidates)
    every = predict_passes(
        [Satellite("sat", *tle)], sites[:1], START, START + DAY, night_only=False
    )
    assert any(not c.night for c in every)


def test_bad_demand_is_named():
    good = {"id": "d", "endpoints": ["a", "b"], "bits": 10, "deadline_utc": "2026-12-08T00:00:00Z"}
    assert demand_from_mapping(good).deadline_unix_s == START + DAY
    for change, words in (
        ({"bits": -1}, "demand.bits"),
        ({"endpoints": ["a", "a"]}, "two different"),
        ({"deadline_utc": "tomorrow"}, "deadline_utc"),
        ({"colour": 1}, "unknown key 'colour'"),
    ):
        with pytest.raises(InputError, match=words):
            demand_from_mapping({**good, **change})


def _config(tmp_path: Path, demand: list[dict], extra: str = "") -> Path:
    table = "    key_table: [[10, 0], [30, 100000], [90, 400000]]\n"
    text = (
        "name: test-week\nsatellites:\n  - name: jinan1\n    mission: jinan1\nstations:\n"
        f"  - name: xinglong\n{table}  - name: stellenbosch\n{table}"
        "planning:\n  start_utc: '2026-12-07T00:00:00Z'\n  days: 2\n"
        + extra
        + "demand: "
        + json.dumps(demand)
        + "\n"
    )
    path = tmp_path / "occ.yaml"
    path.write_text(text)
    return path


def test_occ_plan_writes_the_plan_and_its_timeline(tmp_path, capsys):
    demand = [
        {
            "id": "x",
            "endpoints": ["xinglong", "jinan1"],
            "bits": 50000,
            "deadline_utc": "2026-12-09T00:00:00Z",
        }
    ]
    out = tmp_path / "out"
    assert main(["occ", "plan", "--config", str(_config(tmp_path, demand)), "--out", str(out)]) == 0
    document = json.loads((out / "plan.json").read_text())
    assert document["schema"] == "satqkd.occ-plan/1"
    assert document["demand"][0]["met"] is True
    assert document["passes"] and all(p["station"] == "xinglong" for p in document["passes"])
    assert (out / "plan.png").stat().st_size > 10_000
    assert "1 of 1 demands met" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("demand", "extra", "words"),
    [
        (
            [
                {
                    "id": "x",
                    "endpoints": ["xinglong", "mars"],
                    "bits": 5,
                    "deadline_utc": "2026-12-09T00:00:00Z",
                }
            ],
            "",
            "unknown end point 'mars'",
        ),
        (
            [
                {
                    "id": "x",
                    "endpoints": ["xinglong", "jinan1"],
                    "bits": 0,
                    "deadline_utc": "2026-12-09T00:00:00Z",
                }
            ],
            "",
            "demand.0.bits",
        ),
        ([], "  workers: 0\n", "planning.workers"),
    ],
)
def test_bad_input_ends_in_one_line(tmp_path, capsys, demand, extra, words):
    path = _config(tmp_path, demand, extra)
    assert main(["occ", "plan", "--config", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("satqkd: ") and err.count("\n") == 1 and words in err


def test_a_pass_already_sent_stays_in_the_next_plan():
    candidates = [
        _candidate("sent", "A", 0.0, 600.0, 100),
        _candidate("better", "A", 5000.0, 5600.0, 1000),
    ]
    demand = [KeyDemand("d", "A", "sat", 1000, 9000.0)]
    assert [p.candidate.pass_id for p in plan_passes(candidates, demand).passes] == ["better"]
    again = plan_passes(candidates, demand, committed={"sent"})
    assert [p.candidate.pass_id for p in again.passes] == ["sent", "better"]
    assert all(status == "OPTIMAL" for status in again.stage_status.values())


def test_occ_plan_reads_a_scenarios_occ_section_and_occ_run_needs_its_keys(tmp_path, capsys):
    demand = [{"id": "x", "endpoints": ["xinglong", "jinan1"], "bits": 50000,
               "deadline_utc": "2026-12-09T00:00:00Z"}]  # fmt: skip
    config = _config(tmp_path, demand).read_text()
    scenario = tmp_path / "network.yaml"
    scenario.write_text(
        "name: net\nocc:\n" + "".join(f"  {line}\n" for line in config.splitlines())
    )
    out = tmp_path / "out"
    assert main(["occ", "plan", "--scenario", str(scenario), "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "plan.json").read_text())["demand"][0]["met"] is True
    code = main(["occ", "run", str(_config(tmp_path, demand)), "--broker", "mqtt://127.0.0.1:1",
                 "--occ-keys", str(tmp_path / "no-keys")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "no telecommand key for payload" in err
