"""Fixtures shared by every test package: MQTT brokers (Mosquitto and the embedded amqtt)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import settings as hypothesis_settings

if TYPE_CHECKING:
    from satqkd_runtime.bus_tls import BusTls

_MOSQUITTO_FIXTURES = frozenset(
    {"mosquitto", "mosquitto_url", "mosquitto_factory", "secure_mosquitto"}
)
_FALLBACK_MOSQUITTO = Path("/usr/sbin/mosquitto")  # Debian installs it outside a user's PATH

# `pytest --hypothesis-profile ci-deep`: every property test takes its full example count;
# the default run takes fewer of the few whose examples are slow (see `examples`).
hypothesis_settings.register_profile("ci-deep", deadline=None)


def examples(deep: int, default_run: int) -> int:
    """Get: max_examples of a property test whose examples are slow: `deep` under the ci-deep
    profile, `default_run` in the default run (whole suite under 10 minutes on 2 cores)."""
    return deep if hypothesis_settings.get_current_profile_name() == "ci-deep" else default_run


def find_mosquitto() -> str | None:
    """Get the mosquitto executable from PATH or /usr/sbin, or None if it is not installed."""
    found = shutil.which("mosquitto")
    if found:
        return found
    if _FALLBACK_MOSQUITTO.is_file() and os.access(_FALLBACK_MOSQUITTO, os.X_OK):
        return str(_FALLBACK_MOSQUITTO)
    return None


def free_tcp_port() -> int:
    """Get a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _require_mosquitto() -> str:
    executable = find_mosquitto()
    if executable is not None:
        return executable
    reason = "mosquitto broker not found on PATH or at /usr/sbin/mosquitto"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI must install it (apt-get install mosquitto)")
    pytest.skip(reason)


class MosquittoBroker:
    """A mosquitto process on a fixed loopback port that a test can stop and restart."""

    def __init__(self, executable: str, workdir: Path, *, persistence: bool = False) -> None:
        self.executable = executable
        self.workdir = workdir
        self.port = free_tcp_port()
        self.persistence = persistence
        self._process: subprocess.Popen[bytes] | None = None
        self.config_path = workdir / "mosquitto.conf"
        self.log_path = workdir / "mosquitto.log"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            # small packets at once: QoS 1 acknowledgements must not wait for delayed ACKs
            "set_tcp_nodelay true",
            f"persistence {'true' if persistence else 'false'}",
            f"persistence_location {workdir}/",
            "autosave_interval 0",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            # As root mosquitto would switch to user 'mosquitto', which cannot write workdir.
            lines.append("user root")
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text("\n".join(lines) + "\n")

    @property
    def url(self) -> str:
        """Get the broker url, mqtt://127.0.0.1:PORT."""
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self, timeout_s: float = 10.0) -> None:
        """Start the process and wait until it accepts TCP connections."""
        if self.running:
            return
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [self.executable, "-c", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"mosquitto exited with {self._process.returncode}: {self.log_path.read_text()}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"mosquitto did not accept on port {self.port} within {timeout_s} s")

    def stop(self) -> None:
        """Terminate the process (SIGTERM, so a persistent broker saves its sessions)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5.0)

    def restart(self) -> None:
        """Stop and start again on the same port."""
        self.stop()
        self.start()


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[Callable[..., MosquittoBroker]]:
    """Start mosquitto brokers on demand (persistence=True keeps sessions across restarts)."""
    executable = _require_mosquitto()
    started: list[MosquittoBroker] = []

    def start_broker(*, persistence: bool = False) -> MosquittoBroker:
        broker = MosquittoBroker(
            executable, tmp_path / f"mosquitto-{len(started)}", persistence=persistence
        )
        started.append(broker)
        broker.start()
        return broker

    yield start_broker
    for broker in started:
        broker.stop()


@pytest.fixture
def mosquitto(mosquitto_factory: Callable[..., MosquittoBroker]) -> MosquittoBroker:
    """A running mosquitto broker the test may stop and restart."""
    return mosquitto_factory()


@pytest.fixture
def mosquitto_url(mosquitto: MosquittoBroker) -> str:
    """The url of a running mosquitto broker (mqtt://127.0.0.1:PORT)."""
    return mosquitto.url


SECURE_MISSION = "jinan1"
SECURE_STATIONS = ("xinglong",)


class SecureMosquitto(MosquittoBroker):
    """A mosquitto with the configuration and ACL `satqkd broker config` generates for mission
    jinan1, station xinglong: TLS only, client certificates required, CN = username = client
    id. `tls(identity)` gives a client's settings from `satqkd broker certs`'s files."""

    def __init__(self, executable: str, workdir: Path, certs: Path) -> None:
        from satqkd.broker_security import write_broker_config

        super().__init__(executable, workdir)
        self.certs = certs
        conf, _acl = write_broker_config(
            workdir / "broker", SECURE_MISSION, SECURE_STATIONS, port=self.port,
            certs_dir=certs, bind="127.0.0.1",
        )  # fmt: skip
        lines = [conf.read_text(), "log_dest stderr", "log_type error", "log_type warning"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            lines.append("user root")  # as root mosquitto would switch to user 'mosquitto'
        self.config_path.write_text("\n".join(lines) + "\n")

    @property
    def url(self) -> str:
        """Get the broker url, mqtts://127.0.0.1:PORT."""
        return f"mqtts://127.0.0.1:{self.port}"

    def tls(self, identity: str) -> BusTls:
        """Get: the BusTls of a client certificate made for `identity`."""
        from satqkd_runtime.bus_tls import BusTls

        certs = self.certs
        return BusTls(certs / "ca.crt", certs / f"{identity}.crt", certs / f"{identity}.key")


@pytest.fixture(scope="session")
def broker_certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory of `satqkd broker certs` for jinan1/xinglong: ca, server and one
    certificate per identity (payload, ogs-xinglong, recorder-xinglong, occ)."""
    from satqkd.broker_security import write_certificates

    directory = tmp_path_factory.mktemp("broker") / "certs"
    write_certificates(directory, SECURE_MISSION, SECURE_STATIONS)
    return directory


@pytest.fixture
def secure_mosquitto(broker_certs: Path, tmp_path: Path) -> Iterator[SecureMosquitto]:
    """A running mosquitto with the generated TLS configuration and ACL (see SecureMosquitto)."""
    broker = SecureMosquitto(_require_mosquitto(), tmp_path / "secure-mosquitto", broker_certs)
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
async def embedded_broker_url() -> AsyncIterator[str]:
    """The url of a running embedded (amqtt) broker."""
    from satqkd.broker import EmbeddedBroker

    async with EmbeddedBroker() as broker:
        yield broker.url


@pytest.fixture(
    params=[
        pytest.param("mosquitto_url", marks=pytest.mark.mosquitto, id="mosquitto"),
        pytest.param("embedded_broker_url", id="embedded"),
    ]
)
def broker_url(request: pytest.FixtureRequest) -> str:
    """The url of each kind of broker in turn: mosquitto, then the embedded one."""
    # A sync fixture: resolving an async fixture from inside a running test loop is not allowed.
    return str(request.getfixturevalue(request.param))


# One minute of QKD near culmination of the clear Jinan-1/Xinglong pass, seed 7: enough for a
# key in a fraction of a whole pass's time. Several modules check it; it runs once per session.
SHORT_CLEAR_PASS_ARGS = ("--seed", "7", "--start-after-aos-s", "190", "--max-duration-s", "60")


@pytest.fixture(scope="session")
def short_clear_pass(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """(output directory, report) of `satqkd sim pass` on the clear scenario with
    SHORT_CLEAR_PASS_ARGS; its keys are under the directory's keys/."""
    import json

    from satqkd.cli import main

    repo = Path(__file__).resolve().parents[1]
    out = tmp_path_factory.mktemp("short-clear-pass")
    scenario = repo / "configs" / "scenarios" / "jinan1-xinglong-clear.yaml"
    status = main(
        ["sim", "pass", str(scenario), "--out", str(out), "--quiet", *SHORT_CLEAR_PASS_ARGS]
    )
    assert status == 0
    return out, json.loads((out / "report.json").read_text())


@pytest.fixture(scope="session")
def good_ldpc_exchange(tmp_path_factory: pytest.TempPathFactory) -> object:
    """The finished `tests.ogs.test_ldpc_session.Pass` of one good LDPC exchange (1.1 M
    detections at 1.1 % QBER, block seed 1, both ends seeded): run once per session for the
    tests that each check something else of the same exchange."""
    import asyncio

    from tests.ogs import test_ldpc_session as rig

    async def exchange() -> object:
        block = rig.make_block(1_100_000, qber_x=0.011, qber_z=0.011, seed=1)
        running = await rig.start_pass(tmp_path_factory.mktemp("good-ldpc-exchange"), block)
        try:
            await running.run(block)
        finally:
            await running.close()
        return running

    return asyncio.run(exchange())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that uses a mosquitto fixture, in case its author forgot the mark."""
    for item in items:
        if _MOSQUITTO_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.mosquitto)


# ---- every pass report the tests write meets docs/report.schema.json -----------------------

REPORT_SCHEMA_PATH = Path(__file__).resolve().parents[1] / "docs" / "report.schema.json"
_validated_reports: dict[Path, int] = {}  # report.json -> modification time when validated


def report_schema_errors(report: object) -> list[str]:
    """Get: why a report does not meet docs/report.schema.json, first error first (empty if
    it does); each names the field's path."""
    import json

    import jsonschema

    validator_class = jsonschema.Draft202012Validator
    schema = json.loads(REPORT_SCHEMA_PATH.read_text(encoding="utf-8"))
    validator = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(report), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in errors]


@pytest.fixture(autouse=True)
def _written_reports_meet_the_schema(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test that has temporary directories, validate every report.json written
    under them (its own tmp_path and module or session ones alike) since the last check."""
    yield
    if not {"tmp_path", "tmp_path_factory"} & set(request.fixturenames):
        return
    import json

    base = request.getfixturevalue("tmp_path_factory").getbasetemp()
    for path in sorted(base.rglob("report.json")):
        modified = path.stat().st_mtime_ns
        if _validated_reports.get(path) == modified:
            continue
        _validated_reports[path] = modified
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            pytest.fail(f"{path}: report.json is not JSON: {exc}")
        errors = report_schema_errors(report)
        if errors:
            pytest.fail(f"{path}: does not meet docs/report.schema.json: {errors[0]}")
