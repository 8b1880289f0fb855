"""`satqkd sim network` end to end: the relay scenario flies its two passes with the daemons,
relays through the satellite and ends with one key at Xinglong and Graz (slow: ~1.5 min); the
week with three stations meets its demand from the fibre side (slow: ~2-3 min).
The pieces are tested with small inputs in test_sim_network_scenario.py and
test_sim_network_flow.py."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from satqkd.cli import main

REPO = Path(__file__).resolve().parents[2]
RELAY = REPO / "configs" / "scenarios" / "relay-xinglong-graz.yaml"
WEEK = REPO / "configs" / "scenarios" / "network-week-3-stations.yaml"
SCHEMA = json.loads((REPO / "docs" / "network-report.schema.json").read_text())


def _run(out: Path, scenario: Path = RELAY) -> dict:
    status = main(["sim", "network", str(scenario), "--seed", "3", "--out", str(out), "--quiet"])
    assert status == 0
    report = json.loads((out / "network-report.json").read_text())
    jsonschema.validate(report, SCHEMA)
    return report


@pytest.mark.slow
def test_the_relay_scenario_ends_with_one_key_at_xinglong_and_graz(tmp_path: Path) -> None:
    report = _run(tmp_path / "one")
    passes = report["passes"]["list"]
    assert {p["station"] for p in passes} == {"xinglong", "graz"}
    assert all(p["status"] == "flown" and p["key_bits"] > 4096 for p in passes)
    assert all(p["sha256_payload"] == p["sha256_ogs"] for p in passes)
    (relay,) = report["relays"]
    assert relay["ok"] and relay["bits"] == 4096 and relay["keys"] == 16
    assert relay["sha256_a"] == relay["sha256_b"] and relay["digests_equal"]
    # the XOR broadcast is the only relay traffic: about the key's size, not more
    assert 4096 // 8 <= relay["relay_bytes"] < 4 * 4096 // 8
    (demand,) = report["demand"]
    assert demand["met"] and demand["delivered_bits"] == 4096
    # the same keys at both stations' key management, under the same ids
    digests = []
    for station in ("xinglong", "graz"):
        assert (tmp_path / "one" / "nodes" / "micius" / "keys" / f"ogs-{station}").is_dir()
        digests.append(relay[f"sha256_{'a' if station == 'xinglong' else 'b'}"])
    assert digests[0] == digests[1]
    assert (tmp_path / "one" / "plan-timeline.png").stat().st_size > 0
    assert (tmp_path / "one" / "key-inventory.png").stat().st_size > 0
    # the seed decides everything in the report: a second run writes the same one
    assert _run(tmp_path / "two") == report


@pytest.mark.slow
def test_the_week_meets_every_demand_and_the_users_hold_the_same_keys(tmp_path: Path) -> None:
    report = _run(tmp_path / "week", WEEK)
    assert report["demand_met"] == report["demand_total"] == 3
    users = {d["id"]: d for d in report["demand"] if d.get("sha256_users")}
    assert set(users) == {"beijing-vienna", "urumqi-vienna"}
    for d in users.values():  # both users hold the demand's keys, the same ones
        assert d["met"] and d["fibre_keys"] * 256 == d["delivered_bits"] >= d["bits"]
        assert len(set(d["sha256_users"].values())) == 1
    stations = {p["station"] for p in report["passes"]["list"] if p["status"] == "flown"}
    assert stations == {"xinglong", "graz", "nanshan"}
    assert all(r["ok"] and r["digests_equal"] for r in report["relays"])


def test_an_earlier_run_in_out_is_refused(tmp_path: Path, capsys) -> None:
    (tmp_path / "network-report.json").write_text("{}")
    status = main(["sim", "network", str(RELAY), "--out", str(tmp_path), "--quiet"])
    assert status == 2
    assert "already holds an earlier run (network-report.json)" in capsys.readouterr().err
