"""Bad input gets one line on stderr, exit status 2, no traceback, within a second or so.

A table-driven corpus of broken config files (scenario, mission, station, bench YAML, keyrate
JSON) and bad command lines, each run through `satqkd.cli.main` in-process (and the ones that
could hang, /dev/zero and a "billion laughs" document, in a subprocess with a timeout). Every
case is classified as clean (status 2, one `satqkd...:` line), traceback, hang or silent
acceptance; docs/reliability.md ("Bad input") records the figures this file measures.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from satqkd.cli import main

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
CLEAR = CONFIGS / "scenarios" / "jinan1-xinglong-clear.yaml"
MISSION = CONFIGS / "missions" / "jinan1.yaml"
STATION = CONFIGS / "stations" / "xinglong.yaml"
KEYRATE = CONFIGS / "keyrate" / "jinan1-clear-pass.json"

# `satqkd: ...` from cli._fail; `satqkd keyrate estimate: ...` from keyrate_cli._error
ONE_LINE = re.compile(r"^satqkd( keyrate estimate)?: \S")
IN_PROCESS_LIMIT_S = 5.0
SUBPROCESS_TIMEOUT_S = 20.0
DELETE = object()

RESULTS: dict[str, tuple[str, str]] = {}  # case id -> (input class, outcome)


class _Accepted(BaseException):
    """Raised where a command would start its real work: the input was accepted."""


def _base(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def _with(base: dict[str, Any], *changes: tuple[str, Any]) -> str:
    data = copy.deepcopy(base)
    for dotted, value in changes:
        *parents, last = dotted.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        if value is DELETE:
            node.pop(last, None)
        else:
            node[last] = value
    return yaml.safe_dump(data, sort_keys=False)


SCENARIO = _base(CLEAR)
MISSION_DATA = _base(MISSION)
STATION_DATA = _base(STATION)
KEYRATE_TEXT = KEYRATE.read_text()
GOOD_SCENARIO = yaml.safe_dump(SCENARIO, sort_keys=False)
GOOD_BENCH = (CONFIGS / "instruments" / "sim-station.yaml").read_text()

LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8)
)
DEEP_YAML = "name: deep\nx: " + "[" * 5000 + "]" * 5000 + "\n"
HUGE_INT = "9" * 5000


def _scenario(*changes: tuple[str, Any]) -> str:
    return _with(SCENARIO, *changes)


def _keyrate(old: str, new: str) -> str:
    assert old in KEYRATE_TEXT
    return KEYRATE_TEXT.replace(old, new)


# (case id, input class, {file relative to the configs tree: text or bytes}, argv); "{root}" in
# argv and file names is the configs tree, "{case}" the case id
SIM = ["sim", "pass", "{root}/scenarios/{case}.yaml", "--out", "{root}/out-{case}", "--quiet"]
SCEN = "scenarios/{case}.yaml"

SCENARIO_CASES: list[tuple[str, dict[str, str | bytes]]] = [
    ("seed-true", {SCEN: _scenario(("seed", True))}),
    ("seed-negative", {SCEN: _scenario(("seed", -1))}),
    ("seed-2-70", {SCEN: _scenario(("seed", 2**70))}),
    ("seed-string", {SCEN: _scenario(("seed", "7"))}),
    ("seed-huge-literal", {SCEN: GOOD_SCENARIO.replace("seed: 7", f"seed: {HUGE_INT}")}),
    ("unknown-key", {SCEN: _scenario(("colour", "blue"))}),
    ("missing-search", {SCEN: _scenario(("search", DELETE))}),
    ("bad-date", {SCEN: GOOD_SCENARIO.replace("'2026-12-01T00:00:00Z'", "2026-13-45")}),
    ("bad-date-feb-30", {SCEN: GOOD_SCENARIO.replace("'2026-12-01T00:00:00Z'", "2026-02-30")}),
    ("date-words", {SCEN: _scenario(("search.start_utc", "next tuesday"))}),
    ("days-nan", {SCEN: _scenario(("search.days", float("nan")))}),
    ("days-inf", {SCEN: _scenario(("search.days", float("inf")))}),
    ("pass-index-float", {SCEN: _scenario(("search.pass_index", 1.5))}),
    ("name-escape", {SCEN: _scenario(("name", "../../escaped"))}),
    ("name-megabyte", {SCEN: _scenario(("name", "x" * 1_000_000))}),
    ("mission-missing", {SCEN: _scenario(("mission", "no-such-mission"))}),
    ("mission-etc-passwd", {SCEN: _scenario(("mission", "/etc/passwd"))}),
    ("station-dev-zero", {SCEN: _scenario(("station", "/dev/zero"))}),
    ("top-level-list", {SCEN: "- a\n- b\n"}),
    ("empty-file", {SCEN: ""}),
    ("duplicate-key", {SCEN: GOOD_SCENARIO + "seed: 8\n"}),
    ("billion-laughs", {SCEN: "name: laughs\n" + LAUGHS}),
    ("deep-nesting", {SCEN: DEEP_YAML}),
    ("non-utf8", {SCEN: GOOD_SCENARIO.encode() + b"description: caf\xe9\n"}),
    ("tab-indent", {SCEN: "name: x\nsearch:\n\tstart_utc: 2026-01-01\n"}),
    ("clock-offset-overflow", {SCEN: _scenario(("simulation.clock_offset_ps", 1e400))}),
    (
        "cloud-start-inf",
        {
            SCEN: _scenario(
                (
                    "weather.cloud",
                    {"start_s_after_aos": float("inf"), "duration_s": 10, "extra_loss_db": 3},
                )
            )
        },
    ),
    ("offset-nan", {SCEN: _scenario(("simulation.sky.receiver_offset_urad", [float("nan"), 0]))}),
    ("beacon-on-inf", {SCEN: _scenario(("simulation.sky.beacon_on_after_aos_s", float("inf")))}),
    ("auth-messages-true", {SCEN: _scenario(("simulation.preshared_auth_messages", True))}),
    (
        "pns-and-intercept",
        {
            SCEN: _scenario(
                ("attacks", {"photon_number_splitting": True, "intercept_resend_fraction": 0.5})
            )
        },
    ),
    ("larger-than-4mib", {SCEN: GOOD_SCENARIO + "#" + "x" * (5 * 1024 * 1024) + "\n"}),
]


def _mission(*changes: tuple[str, Any]) -> dict[str, str | bytes]:
    return {
        "missions/m-{case}.yaml": _with(MISSION_DATA, ("name", "m-x"), *changes),
        SCEN: _scenario(("mission", "m-{case}")),
    }


MISSION_CASES = [
    ("intensities-800", _mission(("source.intensities", [800, 0.1, 0]))),
    ("intensities-nan", _mission(("source.intensities", [float("nan"), 0.1, 0]))),
    ("probabilities-sum", _mission(("source.probabilities", [0.5, 0.5, 0.5]))),
    ("no-transmitter", _mission(("transmitter", DELETE))),
    ("tle-short", _mission(("orbit.tle", {"line1": "1 25544U", "line2": "2 25544"}))),
    ("cascade-passes-true", _mission(("protocol.cascade_passes", True))),
    ("reconciliation-magic", _mission(("protocol.reconciliation", "magic"))),
    ("rate-fractional-ps", _mission(("source.repetition_rate_hz", 3e8))),
    ("altitude-words", _mission(("orbit.altitude_km", "high"))),
    (
        "mission-alias",
        {
            "missions/m-{case}.yaml": "name: m-x\nsource: &s {}\ntransmitter: *s\n",
            SCEN: _scenario(("mission", "m-{case}")),
        },
    ),
]


def _station(*changes: tuple[str, Any]) -> dict[str, str | bytes]:
    return {
        "stations/s-{case}.yaml": _with(STATION_DATA, ("name", "s-x"), *changes),
        SCEN: _scenario(("station", "s-{case}")),
    }


STATION_CASES = [
    ("latitude-91", _station(("location.latitude_deg", 91))),
    ("longitude-nan", _station(("location.longitude_deg", float("nan")))),
    ("efficiency-1-5", _station(("detectors.efficiency", [1.5, 0.5, 0.5, 0.5]))),
    ("detector-unknown-key", _station(("detectors.colour", "red"))),
    ("dark-counts-inf", _station(("detectors.dark_count_rate_hz", float("inf")))),
    ("resolution-true", _station(("tagger.resolution_ps", True))),
    ("track-both", _station(("track", {"csv": "t.csv", "points": []}))),
    ("station-upper-name", _station(("name", "UPPER"))),
]

BENCH = ["instruments", "check", "{root}/instruments/b-{case}.yaml"]
BFILE = "instruments/b-{case}.yaml"
BENCH_CASES = [
    ("bench-unknown-driver", {BFILE: GOOD_BENCH.replace("ptu_gimbal", "warp_drive")}),
    ("bench-bad-resource", {BFILE: GOOD_BENCH.replace("in-process://fsm", "carrier-pigeon://")}),
    ("bench-duplicate", {BFILE: GOOD_BENCH + "name: again\n"}),
    ("bench-non-utf8", {BFILE: GOOD_BENCH.encode() + b"\xff\xfe\n"}),
    ("bench-alias", {BFILE: "name: b\ninstruments: &i {}\nother: *i\n"}),
    ("bench-list", {BFILE: "[1, 2, 3]\n"}),
]

KEYRATE_ARGV = ["keyrate", "estimate", "{root}/k-{case}.json"]
KFILE = "k-{case}.json"
KEYRATE_CASES = [
    ("keyrate-intensities-800", {KFILE: _keyrate("[0.8, 0.1, 0.0]", "[800, 0.1, 0]")}),
    ("keyrate-nan", {KFILE: _keyrate("[0.8, 0.1, 0.0]", "[NaN, 0.1, 0]")}),
    ("keyrate-deep", {KFILE: "[" * 100_000 + "]" * 100_000}),
    ("keyrate-huge-int", {KFILE: _keyrate("2244834", HUGE_INT)}),
    ("keyrate-count-2-100", {KFILE: _keyrate("2244834", str(2**100))}),
    ("keyrate-non-utf8", {KFILE: KEYRATE_TEXT.encode().replace(b"hoeffding", b"h\xe9")}),
    ("keyrate-not-json", {KFILE: "intensities = [1, 2]"}),
    ("keyrate-errors-exceed", {KFILE: _keyrate("23534", "99999999")}),
    ("keyrate-list", {KFILE: "[1, 2, 3]"}),
]

CONFIG_CASES: list[tuple[str, str, dict[str, str | bytes], list[str]]] = [
    *((case, "scenario YAML", files, SIM) for case, files in SCENARIO_CASES),
    *((case, "mission YAML", files, SIM) for case, files in MISSION_CASES),
    *((case, "station YAML", files, SIM) for case, files in STATION_CASES),
    *((case, "bench YAML", files, BENCH) for case, files in BENCH_CASES),
    *((case, "keyrate JSON", files, KEYRATE_ARGV) for case, files in KEYRATE_CASES),
]

_RUN = ["sim", "pass", str(CLEAR), "--quiet"]
_PAYLOAD = ["payload", "run", str(MISSION), "--keys", "{root}/k", "--broker", "mqtt://127.0.0.1:9"]
_OGS = ["ogs", "run", str(STATION), "--mission", str(MISSION), "--broker", "mqtt://127.0.0.1:9"]
_BOOT = ["keys", "bootstrap", "--payload-keys", "{root}/pk", "--ogs-keys", "{root}/ok"]
_TC = ["keys", "telecommand", "--node-keys", "{root}/nk", "--occ-keys", "{root}/occ"]
_BROKER = ["--mission", "jinan1", "--station", "xinglong"]
CLI_CASES: list[tuple[str, list[str]]] = [
    ("no-arguments", []),
    ("unknown-group", ["frobnicate"]),
    ("sim-without-command", ["sim"]),
    ("unknown-flag", [*_RUN, "--frobnicate"]),
    ("seed-minus-1", [*_RUN, "--seed", "-1"]),
    ("seed-2-70", [*_RUN, "--seed", str(2**70)]),
    ("seed-words", [*_RUN, "--seed", "abc"]),
    ("seed-float", [*_RUN, "--seed", "1.5"]),
    ("seed-empty", [*_RUN, "--seed", ""]),
    ("broker-http", [*_RUN, "--broker", "http://x:1"]),
    ("broker-no-host", [*_RUN, "--broker", "mqtt://"]),
    ("broker-port-99999", [*_RUN, "--broker", "mqtt://host:99999"]),
    ("start-after-nan", [*_RUN, "--start-after-aos-s", "nan"]),
    ("start-after-negative", [*_RUN, "--start-after-aos-s", "-5"]),
    ("max-duration-inf", [*_RUN, "--max-duration-s", "inf"]),
    ("max-duration-zero", [*_RUN, "--max-duration-s", "0"]),
    ("out-under-a-file", [*_RUN, "--out", "{root}/a-file/out"]),
    ("out-is-a-file", [*_RUN, "--out", "{root}/a-file"]),
    ("out-holds-a-run", [*_RUN, "--out", "{root}/earlier-run"]),
    ("instruments-bogus", [*_RUN, "--instruments", "bogus"]),
    ("scenario-missing", ["sim", "pass", "{root}/nope.yaml", "--quiet"]),
    ("scenario-directory", ["sim", "pass", "{root}", "--quiet"]),
    ("emulator-port-70000", ["sim", "emulator", "tagger", "--port", "70000"]),
    ("emulator-dark-nan", ["sim", "emulator", "tagger", "--dark-count-rate-hz", "nan"]),
    ("emulator-unknown", ["sim", "emulator", "nosuch"]),
    ("link-out-under-file", ["sim", "link", str(CLEAR), "--out", "{root}/a-file/x"]),
    ("bootstrap-escape", [*_BOOT, "--station", "../../escaped"]),
    ("bootstrap-empty-station", [*_BOOT, "--station", ""]),
    ("bootstrap-messages-0", [*_BOOT, "--station", "xinglong", "--messages", "0"]),
    ("bootstrap-messages-1e30", [*_BOOT, "--station", "xinglong", "--messages", "1" + "0" * 30]),
    ("telecommand-escape", [*_TC, "--node", "../x"]),
    ("payload-broker-http", [*_PAYLOAD[:-2], "--broker", "http://x:1"]),
    ("payload-seed-negative", [*_PAYLOAD, "--seed", "-1"]),
    ("payload-housekeeping-nan", [*_PAYLOAD, "--housekeeping-period-s", "nan"]),
    ("payload-keys-missing", [*_PAYLOAD[:4], "{root}/no-keys", *_PAYLOAD[5:]]),
    ("ogs-keys-a-file", [*_OGS, "--keys", "{root}/a-file"]),
    ("ogs-keys-missing", [*_OGS, "--keys", "{root}/no-ogs-keys"]),
    (
        "broker-config-port-0",
        ["broker", "config", "{root}/bc", *_BROKER, "--certs", "c", "--port", "0"],
    ),
    ("broker-certs-days-0", ["broker", "certs", "{root}/bk", *_BROKER, "--days", "0"]),
    ("keyrate-missing", ["keyrate", "estimate", "{root}/nope.json"]),
    ("keyrate-directory", ["keyrate", "estimate", "{root}"]),
    ("instruments-missing", ["instruments", "check", "{root}/nope.yaml"]),
]

# run in a child process with a timeout: these are the ones that used to hang
SUBPROCESS_CASES: list[tuple[str, str, dict[str, str | bytes], list[str]]] = [
    ("sub-billion-laughs", "scenario YAML", {SCEN: "name: laughs\n" + LAUGHS}, SIM),
    ("sub-dev-zero-scenario", "scenario YAML", {}, ["sim", "pass", "/dev/zero", "--quiet"]),
    ("sub-dev-zero-keyrate", "keyrate JSON", {}, ["keyrate", "estimate", "/dev/zero"]),
    ("sub-dev-zero-bench", "bench YAML", {}, ["instruments", "check", "/dev/zero"]),
]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A configs tree (missions/, stations/, scenarios/, instruments/) the cases write into."""
    tree = tmp_path_factory.mktemp("bad-input") / "configs"
    for folder in ("missions", "stations", "instruments"):
        shutil.copytree(CONFIGS / folder, tree / folder)
    (tree / "scenarios").mkdir()
    (tree / "a-file").write_text("not a directory\n")
    # an earlier run's keys and telemetry (a report.json would meet conftest's schema check)
    (tree / "earlier-run" / "keys").mkdir(parents=True)
    (tree / "earlier-run" / "telemetry.jsonl").write_text("{}\n")
    return tree


@pytest.fixture(autouse=True)
def _no_real_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where a command would start a pass, stop: the input was accepted."""

    def accepted(*_args: object, **_kwargs: object) -> None:
        raise _Accepted

    import satqkd.simulation

    monkeypatch.setattr(satqkd.simulation, "run_pass", accepted)


def _fill(text: str, root: Path, case: str) -> str:
    return text.replace("{root}", str(root)).replace("{case}", case)


def _write(files: dict[str, str | bytes], root: Path, case: str) -> None:
    for name, content in files.items():
        path = root / _fill(name, root, case)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(_fill(content, root, case))


def _classify(status: int | None, err: str, seconds: float, accepted: bool) -> str:
    if seconds >= IN_PROCESS_LIMIT_S:
        return "hang"
    if accepted or status == 0:
        return "silent acceptance"
    if "Traceback" in err or status is None:
        return "traceback"
    lines = err.splitlines()
    if status == 2 and len(lines) == 1 and ONE_LINE.match(lines[0]):
        return "clean"
    return f"other (status {status}, {len(lines)} stderr lines)"


def _run_in_process(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    capsys.readouterr()
    start = time.monotonic()
    status: int | None = None
    accepted = False
    try:
        status = main(argv)
    except _Accepted:
        accepted = True
    except SystemExit as exc:  # argparse's own exit (e.g. --help) would land here
        status = exc.code if isinstance(exc.code, int) else 1
    except Exception as exc:
        err = capsys.readouterr().err
        return "traceback", f"{err}Traceback: {type(exc).__name__}: {exc}"[:500]
    seconds = time.monotonic() - start
    err = capsys.readouterr().err
    return _classify(status, err, seconds, accepted), err


def _check(case: str, kind: str, outcome: str, err: str) -> None:
    RESULTS[case] = (kind, outcome)
    assert outcome == "clean", f"{case}: {outcome}: {err[:300]!r}"


@pytest.mark.parametrize(
    ("case", "kind", "files", "argv"), CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES]
)
def test_broken_config_is_one_line(
    case: str,
    kind: str,
    files: dict[str, str | bytes],
    argv: list[str],
    root: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _write(files, root, case)
    outcome, err = _run_in_process([_fill(a, root, case) for a in argv], capsys)
    _check(case, kind, outcome, err)


@pytest.mark.parametrize(("case", "argv"), CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_bad_command_line_is_one_line(
    case: str, argv: list[str], root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outcome, err = _run_in_process([_fill(a, root, case) for a in argv], capsys)
    _check(case, "command line", outcome, err)
    if case == "bootstrap-escape":
        assert not (root.parent / "escaped").exists()
    if case == "out-holds-a-run":
        assert "earlier-run" in err
        assert (root / "earlier-run" / "telemetry.jsonl").read_text() == "{}\n"


@pytest.mark.parametrize(
    ("case", "kind", "files", "argv"), SUBPROCESS_CASES, ids=[c[0] for c in SUBPROCESS_CASES]
)
def test_input_that_used_to_hang_ends_in_a_child_process(
    case: str, kind: str, files: dict[str, str | bytes], argv: list[str], root: Path
) -> None:
    _write(files, root, case)
    code = "import sys; from satqkd.cli import main; sys.exit(main(sys.argv[1:]))"
    start = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-c", code, *(_fill(a, root, case) for a in argv)],
            capture_output=True,
            text=True,
            timeout=SUBPROCESS_TIMEOUT_S,
            cwd=REPO,
        )
    except subprocess.TimeoutExpired:
        _check(case, kind, "hang", "")
        return
    seconds = time.monotonic() - start
    # a child pays its imports; the limit is on the whole child here
    outcome = _classify(done.returncode, done.stderr, min(seconds, IN_PROCESS_LIMIT_S - 0.1), False)
    if seconds >= SUBPROCESS_TIMEOUT_S / 2:
        outcome = "hang"
    _check(case, kind, outcome, done.stderr)


def test_zz_summary() -> None:
    """The figures of docs/reliability.md ("Bad input"): print them with `pytest -s`."""
    if not RESULTS:
        pytest.skip("run with the corpus")
    table: dict[str, Counter[str]] = {}
    for kind, outcome in RESULTS.values():
        table.setdefault(kind, Counter())[outcome.split(" (")[0]] += 1
    print()
    print("| class | cases | clean | tracebacks | hangs | silent | other |")
    for kind, counts in table.items():
        print(
            f"| {kind} | {sum(counts.values())} | {counts['clean']} | {counts['traceback']} | "
            f"{counts['hang']} | {counts['silent acceptance']} | {counts['other']} |"
        )
    config_cases = len(CONFIG_CASES) + len(SUBPROCESS_CASES)
    assert config_cases >= 40 and len(CLI_CASES) >= 30
