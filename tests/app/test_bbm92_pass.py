"""A BBM92 pass run by the real payload and station daemons over the bus (decision 0035):
selected by the mission's protocol family, coincidences found on board against the station's
uplinked timing, the test sample, Cascade, the Tomamichel et al. (2012) key length, keys stored
and confirmed at both ends, every public random value from the entropy sources; an
intercept-resend attack aborts. Short windows near culmination keep the default run quick; the
whole pass with its key is `-m slow`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import jsonschema
import pytest

from satqkd import cli
from satqkd.api import with_start_after_aos
from satqkd.config import load_scenario
from satqkd.pass_physics import choose_pass
from satqkd.simulation import PassRun, run_pass
from satqkd_core.bbm92_finite_key import bbm92_key_length
from satqkd_runtime.keystore import KeyStore

ROOT = Path(__file__).resolve().parents[2]
HONEST = ROOT / "configs/scenarios/micius2020-bbm92-xinglong.yaml"
ATTACKED = ROOT / "configs/scenarios/micius2020-bbm92-xinglong-intercept-resend.yaml"
SCHEMA = json.loads((ROOT / "docs/report.schema.json").read_text())


def _near_culmination(path: Path, before_s: float) -> object:
    scenario = load_scenario(path)
    _, window = choose_pass(scenario)
    start = window.culmination_unix_s - window.aos_unix_s - before_s
    return with_start_after_aos(scenario, start)


def _run(scenario: object, out: Path, seconds: float) -> PassRun:
    return asyncio.run(run_pass(scenario, out, max_duration_s=seconds))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def attacked_pass(tmp_path_factory: pytest.TempPathFactory) -> PassRun:
    out = tmp_path_factory.mktemp("bbm92-attacked")
    return _run(_near_culmination(ATTACKED, 2.0), out, 4.0)


def _stored_keys(run: PassRun) -> tuple[list[str], list[str]]:
    station = run.scenario.station.name
    payload = KeyStore(run.key_root / "payload" / station)
    ogs = KeyStore(run.key_root / f"ogs-{station}")
    return payload.key_ids(), ogs.key_ids()


def test_intercept_resend_on_a_bbm92_pass_aborts_at_both_ends(attacked_pass: PassRun) -> None:
    report = attacked_pass.report
    jsonschema.validate(report, SCHEMA)
    protocol = report["protocol"]
    assert protocol["family"] == "bbm92" and protocol["finite_key_bound"] == "tomamichel2012"
    # the pairs were found (the clock relation holds through the attack) and the test sample
    # shows Eve: ~25 % errors against the 6 % tolerance
    assert protocol["coincidences"] > 500
    assert protocol["qber_test"] > 0.18
    assert protocol["key_length_bits"] == 0 and protocol["mu"] is None
    assert "test error rate" in report["key"]["abort_reason"]
    outcome = attacked_pass.payload.outcome(
        attacked_pass.scenario.station.name, attacked_pass.plan_id
    )
    assert outcome is not None and "test error rate" in (outcome.abort_reason or "")
    assert report["key"]["secret_key_bits"] == 0
    assert _stored_keys(attacked_pass) == ([], [])
    # the epsilon budget is the bound's: one eps_sec for sampling and hashing together
    terms = {t["term"]: t for t in report["postprocessing"]["epsilon_budget"]["terms"]}
    assert "Tomamichel" in terms["privacy_amplification"]["basis"]
    assert terms["parameter_estimation"]["epsilon"] == 0.0


def test_the_pass_took_its_public_random_values_from_the_entropy_sources(
    attacked_pass: PassRun,
) -> None:
    # the station squashes nothing in BBM92 and the attacked pass ends before Cascade: only the
    # payload's draws for its plan may appear, and no pulse pattern key (a pair source has none)
    drawn = attacked_pass.payload.entropy.drawn_bytes
    assert not any(purpose.startswith("pattern") for purpose in drawn)


def test_a_bb84_only_command_refuses_a_bbm92_scenario_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["sim", "link", str(HONEST), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "entanglement-based" in err and "satqkd sim pass" in err


@pytest.mark.slow
def test_a_bbm92_pass_ends_with_equal_confirmed_keys_of_the_bounds_length(
    tmp_path: Path,
) -> None:
    run = _run(_near_culmination(HONEST, 30.0), tmp_path, 60.0)
    report = run.report
    jsonschema.validate(report, SCHEMA)
    protocol, key = report["protocol"], report["key"]
    assert key["secret_key_bits"] > 0, key["abort_reason"]
    assert key["sha256_payload"] == key["sha256_ogs"] is not None
    assert 0.005 < protocol["qber_test"] < 0.05
    result = run.ogs.results[run.plan_id]
    # the stored length is the bound's for the pass's n, k and disclosed bits
    bound = bbm92_key_length(
        protocol["n_key_bits"], protocol["k_test_bits"], protocol["qber_tolerance"],
        result.leak_ec_bits + result.verification_tag_bits, 1e-10, 1e-15,
    )  # fmt: skip
    assert protocol["key_length_bits"] == bound.key_length_bits == result.pa_output_bits
    payload_ids, ogs_ids = _stored_keys(run)
    assert payload_ids == ogs_ids == [result.key_id]
    # the public random values came from the entropy sources, per purpose
    payload_drawn = run.payload.entropy.drawn_bytes
    for purpose in ("verification-key", "pa-seed", "key-id"):
        assert payload_drawn.get(purpose, 0) > 0, purpose
    assert run.ogs.entropy.drawn_bytes.get("cascade-seed", 0) > 0


@pytest.mark.slow
def test_sim_pass_writes_a_bbm92_passs_report_archives_and_plots(tmp_path: Path) -> None:
    # the command line's whole path (report, telemetry, archives, plots) on a short window
    scenario = _near_culmination(ATTACKED, 3.0)
    after_aos = scenario.scenario.simulation.qkd_start_after_aos_s  # type: ignore[attr-defined]
    args = ["sim", "pass", str(ATTACKED), "--out", str(tmp_path), "--quiet"]
    args += ["--max-duration-s", "4", "--start-after-aos-s", str(after_aos)]
    assert cli.main(args) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    jsonschema.validate(report, SCHEMA)
    assert report["protocol"]["family"] == "bbm92"
    for name in ("telemetry.jsonl", "frames.parquet", "atp.parquet"):
        assert (tmp_path / name).is_file(), name
    assert list(tmp_path.glob("*.png"))
