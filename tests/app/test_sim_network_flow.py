"""`satqkd sim network`'s flow with small inputs: crediting a pass's key to demands, and the
fibre leg that carries relay keys from a station to its users (real key management stores
and the fibre network model; no daemons: the full runs are in test_sim_network_run.py)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import jsonschema
import pytest

from satqkd.network_flow import NetworkFlow
from satqkd.network_report import build_network_report
from satqkd.network_run import FlownPass, NetworkPlanner, NetworkRun, _profiles
from satqkd.network_scenario import load_network_scenario
from satqkd_occ import CandidatePass, KeyDemand, PlanSettings
from satqkd_runtime.key_management import KeyManagement

REPO = Path(__file__).resolve().parents[2]
WEEK = REPO / "configs" / "scenarios" / "network-week-3-stations.yaml"
SCHEMA = REPO / "docs" / "network-report.schema.json"
DAY = 86_400.0


def _candidate(station: str, aos: float, bits: int, night: str = "2026-12-07") -> CandidatePass:
    return CandidatePass(
        f"micius/{station}/{int(aos)}", "micius", station, aos, aos + 200.0, aos + 400.0,
        60.0, -30.0, True, night, bits, 0.0,
    )  # fmt: skip


def _flow(tmp_path: Path, **fibre_rates: float) -> NetworkFlow:
    scenario = load_network_scenario(WEEK)
    links = [  # small pools: a few keys per link end are enough here
        link.model_copy(
            update={"rate_bps": fibre_rates.get(link.b, link.rate_bps), "pool_capacity_bits": 4096}
        )
        for link in scenario.fibre.links
    ]
    scenario = scenario.model_copy(
        update={"fibre": scenario.fibre.model_copy(update={"links": links})}
    )
    t0 = scenario.start_unix_s
    candidates = [
        _candidate("xinglong", t0 + 0.6 * DAY, 200_000),
        _candidate("graz", t0 + 0.9 * DAY, 30_000),
    ]
    deadline = t0 + 5 * DAY
    demands = [
        KeyDemand("beijing-vienna", "xinglong", "graz", 16_384, deadline),
        KeyDemand("xinglong-micius", "xinglong", "micius", 100_000, deadline),
    ]
    planner = NetworkPlanner(candidates, demands, PlanSettings(time_limit_s=5.0), ["micius"])
    scenario = scenario.model_copy(
        update={"demand": [d for d in scenario.demand if d.id != "urumqi-vienna"]}
    )
    run = NetworkRun(scenario, WEEK, tmp_path)
    run.plan = planner.plan()
    missions, stations = _profiles(scenario, WEEK)
    return NetworkFlow(run, planner, missions, stations, lambda _: None)


def _flown(flow: NetworkFlow, k: int, key_bits: int) -> FlownPass:
    item = flow.run.plan.passes[k]
    c = item.candidate
    flown = FlownPass(
        c.pass_id, c.satellite, c.station, c.aos_unix_s, c.los_unix_s, c.max_elevation_deg,
        c.night_date, c.expected_key_bits, dict(item.allocated_bits),
    )  # fmt: skip
    flown.status, flown.key_bits, flown.key_id = "flown", key_bits, f"block-{k}"
    return flown


def test_a_pass_key_meets_direct_demand_and_is_held_for_the_relay(tmp_path: Path) -> None:
    flow = _flow(tmp_path)
    demands = {d.demand_id: d for d in flow.run.demands}
    assert [p.candidate.station for p in flow.run.plan.passes] == ["xinglong", "graz"]
    flow._credit(_flown(flow, 0, 150_000))
    assert demands["xinglong-micius"].delivered_bits == 100_000
    assert demands["xinglong-micius"].met_unix_s is not None
    # the relay demand holds its share at Xinglong until Graz has key of the same satellite
    assert demands["beijing-vienna"].credit == {("micius", "xinglong"): [["block-0", 16_384]]}
    # the planner is then asked for Graz's key with the satellite only
    assert flow._remaining() == {
        "beijing-vienna": (16_384, "graz", "micius"),
        "xinglong-micius": (0, "xinglong", "micius"),
    }
    flow._credit(_flown(flow, 1, 9_000))  # a short pass: less than the plan gave out
    assert demands["beijing-vienna"].credit[("micius", "graz")] == [["block-1", 9_000]]
    assert flow._remaining()["beijing-vienna"] == (16_384 - 9_000, "graz", "micius")
    replan = flow._replan(flow.run.plan.passes[1].candidate.los_unix_s, "short pass")
    assert replan == []  # no candidate pass left in this small range
    assert flow.run.replans[0]["remaining"]["beijing-vienna"] == {
        "bits": 7_384,
        "endpoints": ["graz", "micius"],
    }


def test_after_a_pass_lost_to_cloud_the_replan_skips_the_rest_of_that_night(
    tmp_path: Path,
) -> None:
    scenario = load_network_scenario(WEEK)
    scenario = scenario.model_copy(
        update={"demand": [d for d in scenario.demand if d.id == "xinglong-micius"]}
    )
    t0 = scenario.start_unix_s
    candidates = [  # two passes of one night, one of the next
        _candidate("xinglong", t0 + 0.50 * DAY, 200_000),
        _candidate("xinglong", t0 + 0.56 * DAY, 200_000),
        _candidate("xinglong", t0 + 1.50 * DAY, 200_000, night="2026-12-08"),
    ]
    demands = [KeyDemand("xinglong-micius", "xinglong", "micius", 100_000, t0 + 5 * DAY)]
    planner = NetworkPlanner(candidates, demands, PlanSettings(time_limit_s=5.0), ["micius"])
    run = NetworkRun(scenario, WEEK, tmp_path)
    run.plan = planner.plan()
    missions, stations = _profiles(scenario, WEEK)
    flow = NetworkFlow(run, planner, missions, stations, lambda _: None)
    ((first, culmination),) = flow._queue(run.plan)
    assert first.aos_unix_s == candidates[0].aos_unix_s
    run.weather["xinglong", "2026-12-07"] = (0.2, True)  # the night is drawn cloudy
    asyncio.run(flow._fly(first, culmination, 0))
    assert first.status == "lost_to_weather"
    # the OCC has seen the night cloudy: the replan takes the next night, not the same one
    ((again, _),) = flow._replan(first.los_unix_s, first.pass_id)
    assert again.night == "2026-12-08"


def _relay_keys(flow: NetworkFlow, station: str, bits: int) -> list[str]:
    """File a relay block at a station as the relay does; get its key ids."""
    directory = flow.key_root("micius") / "keys" / f"ogs-{station}" / "kms"
    with KeyManagement(directory) as kms:
        kms.add_block("relay-1", bytes(range(bits // 8)), bits, peer="ogs-other", origin="relay")
        return [k for k in _ids(kms, "ogs-other")]


def _relay_record(flow: NetworkFlow, ids: list[str]) -> dict:
    """The record a relay of these keys leaves in the run (as NetworkFlow._relay writes it)."""
    return {
        "relay_id": 1, "demand": "beijing-vienna", "satellite": "micius",
        "station_a": "xinglong", "station_b": "graz", "bits": 256 * len(ids),
        "at_unix_s": flow.run.scenario.start_unix_s, "ok": True, "abort_reason": None,
        "key_ids": ids, "relay_block_id": "relay-1", "sha256_a": None, "sha256_b": None,
        "relay_bytes": 0,
    }  # fmt: skip


def _ids(kms: KeyManagement, peer: str) -> list[str]:
    ids = kms.reserve(peer, kms.count(peer=peer), "test")
    kms.release(ids, "test")
    return ids


@pytest.mark.parametrize("station,user", [("xinglong", "beijing-bank"), ("graz", "vienna-bank")])
def test_relay_keys_cross_the_fibre_to_the_user_hop_by_hop(
    tmp_path: Path, station: str, user: str
) -> None:
    flow = _flow(tmp_path)
    d = next(d for d in flow.run.demands if d.demand_id == "beijing-vienna")
    ids = _relay_keys(flow, station, 1024)
    flow.run.relays.append(_relay_record(flow, ids))
    d.fibre_pending[user] = list(ids)
    flow._fibre(flow.run.scenario.start_unix_s + DAY)  # a day of link key in every pool
    (entry,) = flow.run.fibre
    assert entry["keys"] == 4 and entry["bits"] == 1024 and entry["waiting_keys"] == 0
    assert entry["sha256_station"] == entry["sha256_user"]
    assert entry["hop_consumed_bits"] == {
        f"{a}-{b}": 1024 for a, b in zip(entry["path"], entry["path"][1:], strict=False)
    }
    assert len(entry["path"]) == 3  # station, trusted node, user
    assert set(d.fibre_done[user]) == set(ids)
    assert flow.fibre.held_bits(user) == 1024
    assert flow.fibre.held_bits(entry["path"][1]) == 0  # the trusted node kept nothing
    with KeyManagement(flow.key_root("micius") / "keys" / f"ogs-{station}" / "kms") as kms:
        assert all(kms.state_of(k) == "consumed" for k in ids)
    flow.fibre.close()
    # what the report makes of it meets the published schema
    report = build_network_report(flow.run)
    jsonschema.validate(report, json.loads(SCHEMA.read_text()))
    assert report["fibre_deliveries"][0]["hop_consumed_bits"] == entry["hop_consumed_bits"]


def test_without_link_key_the_relay_keys_wait_at_the_station(tmp_path: Path) -> None:
    flow = _flow(tmp_path, **{"beijing-bank": 0.0})
    d = next(d for d in flow.run.demands if d.demand_id == "beijing-vienna")
    ids = _relay_keys(flow, "xinglong", 512)
    flow.run.relays.append(_relay_record(flow, ids))
    d.fibre_pending["beijing-bank"] = list(ids)
    flow._fibre(flow.run.scenario.start_unix_s + DAY)
    (entry,) = flow.run.fibre
    assert entry["keys"] == 0 and entry["waiting_keys"] == 2
    assert "not enough link key on the route" in entry["refused"]
    with KeyManagement(flow.key_root("micius") / "keys" / "ogs-xinglong" / "kms") as kms:
        assert all(kms.state_of(k) == "available" for k in ids)  # not lost: still there
    assert d.delivered_bits == 0
    flow.fibre.close()
