"""The mission's `protocol.cascade_max_disturbance` (how far concurrent Cascade searches of a
round trip may overlap) reaches the station's session and cuts its round trips; a bad value
is refused in one line naming the key."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest

import satqkd_ogs.reconciliation
import satqkd_ogs.session
import satqkd_payload.session
import tests.ogs.test_ldpc_session as harness
from satqkd.cli import main
from satqkd.config import load_scenario, station_path
from satqkd.wiring import ogs_settings
from satqkd_core.cascade import CascadeCorrector, CascadeResponder
from satqkd_ogs.session import OgsSession
from tests.ogs.test_ldpc_session import (
    ldpc_pass,
    make_block,
)
from tests.protocol_params import jinan1_params

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = REPO / "configs" / "scenarios"
MISSIONS = REPO / "configs" / "missions"

__all__ = ["ldpc_pass"]  # the fixture, used by name below


@pytest.mark.parametrize(
    ("scenario", "expected"),
    [("jinan1-xinglong-clear.yaml", 0.0), ("jinan1-xinglong-clear-link.yaml", 0.1)],
)
def test_the_missions_setting_reaches_the_station_daemon(scenario: str, expected: float) -> None:
    loaded = load_scenario(SCENARIOS / scenario)
    settings = ogs_settings(loaded.mission, loaded.station, station_path(loaded))
    assert settings.cascade_max_disturbance == expected


@pytest.mark.parametrize("value", ["-0.1", ".nan", ".inf", "2.5", "lots"])
def test_a_bad_value_is_refused_in_one_line(
    value: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    text = (MISSIONS / "jinan1-link.yaml").read_text()
    line = "  cascade_max_disturbance: 0.1"
    assert line in text
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(text.replace(line, f"  cascade_max_disturbance: {value}"))
    status = main(["missions", "check", str(REPO / "configs/stations/xinglong.yaml"), str(wrong)])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("satqkd: ")
    assert "wrong.yaml: protocol.cascade_max_disturbance" in err
    assert "Traceback" not in err


async def test_the_session_overlaps_searches_for_fewer_round_trips(
    ldpc_pass, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A station session given cascade_max_disturbance 0.5 corrects its key in fewer round
    trips than Cascade with disjoint searches takes on the same key (replayed in process)."""
    # a short block (fast): both ends skip the pre-check that would stop so few bits before
    # error correction; the pass then ends after it, once verification has found the
    # corrected keys equal at both ends (the bound leaves no key of so few bits)
    for module in (satqkd_ogs.session, satqkd_payload.session):
        monkeypatch.setattr(module, "feasibility_abort_reason", lambda params, stats: None)
    made: list[tuple[tuple, dict, CascadeCorrector]] = []

    def recorded(*args: object, **kwargs: object) -> CascadeCorrector:
        made.append((args, kwargs, CascadeCorrector(*args, **kwargs)))  # type: ignore[arg-type]
        return made[-1][2]

    monkeypatch.setattr(satqkd_ogs.reconciliation, "CascadeCorrector", recorded)
    monkeypatch.setattr(
        harness, "OgsSession", functools.partial(OgsSession, cascade_max_disturbance=0.5)
    )
    block = make_block(40_000, qber_x=0.011, qber_z=0.011, seed=6)
    p = await ldpc_pass(block, params=jinan1_params("cascade"))
    await p.run(block)
    reason = p.ogs.result.abort_reason or ""
    assert reason.startswith("finite-key bound leaves no key"), reason  # verification passed
    ((args, kwargs, used),) = made
    assert kwargs == {"max_disturbance": 0.5}
    noisy, qber, seed, passes = args
    assert p.ogs.result.ec_rounds == used.round_trips > 0
    # the same key with disjoint searches (the default), against the corrected key
    disjoint = CascadeCorrector(noisy, qber, seed, passes)  # type: ignore[arg-type]
    responder = CascadeResponder(used.corrected_key, seed, passes)  # type: ignore[arg-type]
    while (query := disjoint.next_query_message()) is not None:
        disjoint.apply_reply_message(responder.reply_message(query))
    assert np.array_equal(disjoint.corrected_key, used.corrected_key)
    assert used.round_trips < 0.8 * disjoint.round_trips
    assert used.leak_bits >= disjoint.leak_bits  # what the overlap costs
