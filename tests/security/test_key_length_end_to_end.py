"""End-to-end key length of a simulated pass, recomputed from the report's public counts.

One minute of QKD near culmination of the clear Jinan-1/Xinglong pass (Cascade). From
report.json alone (the per-intensity counts, the leak and the verification tag bits) and the
mission's public parameters, the finite-key bound must give exactly the privacy-amplification
output of the pass, and both key stores must hold that output less the authentication refill.
This pins the leak the daemons charge (error correction plus the verification tag: dropping
the tag bits at both ends survived the whole suite before) and the statistics they use.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from satqkd.config import Scenario, load_scenario
from satqkd_core.finite_key import DecoyStatistics, finite_key_length
from satqkd_runtime.keystore import KeyStore

CLEAR = Path(__file__).resolve().parents[2] / "configs/scenarios/jinan1-xinglong-clear.yaml"
START_AFTER_AOS_S = 190.0  # as tests/app/test_sim_pass.py: high enough for a key in 60 s
P61 = (1 << 61) - 1

PassOutput = tuple[Path, dict[str, Any], Scenario]


def _triple(values: Any) -> tuple[int, int, int]:
    """Three counts (signal, decoy, vacuum) as ints."""
    a, b, c = (int(v) for v in values)
    return a, b, c


def _rates(values: Any) -> tuple[float, float, float]:
    """Three rates (signal, decoy, vacuum) as floats."""
    a, b, c = (float(v) for v in values)
    return a, b, c


@pytest.fixture(scope="module")
def short_pass(short_clear_pass: tuple[Path, dict[str, Any]]) -> PassOutput:
    """(output directory, report, mission config) of the session's 60 s seed-7 pass."""
    out, report = short_clear_pass
    return out, report, load_scenario(CLEAR)


def test_key_length_follows_from_the_reported_counts(
    short_pass: PassOutput,
) -> None:
    """Pins the finite-key wiring: statistics built from the report's per-intensity counts as
    `statistics_from_counts` builds them from PE_COUNTS (X errors unknown: zeros), the
    mission's eps_sec and eps_cor, and leak = leak_ec_bits + verification_tag_bits give
    exactly pa_output_bits; the key each end stored is that less the refill."""
    out, report, scenario = short_pass
    post, key = report["postprocessing"], report["key"]
    assert key["abort_reason"] is None and key["secret_key_bits"] > 0, key
    assert post["ec_method"] == "cascade" and post["aborted_blocks"] == 0

    source, protocol = scenario.mission.source, scenario.mission.protocol
    rows = report["quantum"]["by_intensity"]
    assert [row["mu"] for row in rows] == list(source.intensities)
    stats = DecoyStatistics(
        intensities=_rates(source.intensities),
        probabilities=_rates(source.probabilities),
        x_detections=_triple(row["x_detections"] for row in rows),
        x_errors=(0, 0, 0),
        z_detections=_triple(row["z_detections"] for row in rows),
        z_errors=_triple(row["z_errors"] for row in rows),
    )
    # Cascade keeps every sifted X bit: they all enter privacy amplification
    assert post["pa_input_bits"] == sum(stats.x_detections)

    # the verification tag: 61 bits per evaluation, e evaluations with ((L + 1) / p)^e <=
    # eps_cor for L 7-byte words of the key (satqkd_core.verification's docstring)
    words = math.ceil(math.ceil(post["pa_input_bits"] / 8) / 7) + 1
    evaluations = 1
    while evaluations * (math.log2(words) - math.log2(P61)) > math.log2(protocol.eps_cor):
        evaluations += 1
    assert post["verification_tag_bits"] == 61 * evaluations

    leak = post["leak_ec_bits"] + post["verification_tag_bits"]
    bound = finite_key_length(stats, protocol.eps_sec, protocol.eps_cor, leak)
    assert bound.key_length_bits == post["pa_output_bits"] > 0
    assert post["finite_key"]["key_length_bits"] == post["pa_output_bits"]

    stored = post["pa_output_bits"] - post["auth_refill_bits"]
    assert key["secret_key_bits"] == stored
    station = scenario.station.name
    payload_store = KeyStore(out / "keys" / "payload" / station)
    ogs_store = KeyStore(out / "keys" / f"ogs-{station}")
    assert payload_store.total_bits() == ogs_store.total_bits() == stored
    assert payload_store.digest() == ogs_store.digest()
    assert key["sha256_payload"] == key["sha256_ogs"] is not None


def test_cascade_leak_counts_both_directions(
    short_pass: PassOutput,
) -> None:
    """Each Cascade parity is charged twice (the payload's answer and what the station's query
    reveals of its own key), so at ~1 % QBER the charged leak is about twice the Shannon limit:
    an efficiency above 1.8. Charging one direction only would give ~1.0-1.2."""
    _, report, _ = short_pass
    post = report["postprocessing"]
    assert post["ec_method"] == "cascade"
    assert post["ec_efficiency"] > 1.8, post["ec_efficiency"]


def test_epsilon_budget_adds_up(short_pass: PassOutput) -> None:
    """The reported epsilon budget is the sum of its terms and covers eps_sec + eps_cor; the
    verification term is eps_cor and the decoy/PA terms split eps_sec."""
    _, report, scenario = short_pass
    protocol = scenario.mission.protocol
    budget = report["postprocessing"]["epsilon_budget"]
    terms = {row["term"]: row["epsilon"] for row in budget["terms"]}
    assert math.isclose(budget["total"], math.fsum(terms.values()), rel_tol=1e-12)
    assert budget["total"] >= protocol.eps_sec + protocol.eps_cor
    assert terms["verification"] == protocol.eps_cor
    assert math.isclose(
        terms["parameter_estimation"] + terms["privacy_amplification"],
        protocol.eps_sec,
        rel_tol=1e-12,
    )
    assert terms["authentication"] > 0
