"""MessageBus over TLS (`mqtts://`): the settings are checked when the bus is built (one line
naming the file or the mismatch), and a bus with a client certificate talks through a Mosquitto
configured by `satqkd broker config` (client certificates required, CN = client id)."""

from __future__ import annotations

import asyncio
import os
import ssl
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from satqkd.broker_security import write_certificates
from satqkd_runtime.bus import BusTls, MessageBus, parse_mqtt_url

SecureMosquitto = Any  # tests/conftest.py's SecureMosquitto (conftest is not importable)

pytestmark = pytest.mark.timeout(30)


def _tls(certs: Path, identity: str) -> BusTls:
    return BusTls(certs / "ca.crt", certs / f"{identity}.crt", certs / f"{identity}.key")


# ---- construction and validation ----------------------------------------------------------


def test_mqtts_url_parsing() -> None:
    assert parse_mqtt_url("mqtts://broker.local") == ("broker.local", 8883)
    assert parse_mqtt_url("mqtts://10.0.0.5:18883") == ("10.0.0.5", 18883)
    assert parse_mqtt_url("mqtt://broker.local") == ("broker.local", 1883)


def test_mqtts_without_tls_settings_is_refused() -> None:
    with pytest.raises(ValueError, match=r"'mqtts://127\.0\.0\.1:8883' is MQTT over TLS") as info:
        MessageBus("mqtts://127.0.0.1:8883", "client")
    assert "BusTls" in str(info.value)


def test_tls_settings_with_plain_mqtt_are_refused(broker_certs: Path) -> None:
    with pytest.raises(ValueError, match=r"^tls: .*plain MQTT url 'mqtt://h:1883'.*mqtts://"):
        MessageBus("mqtt://h:1883", "client", tls=_tls(broker_certs, "payload"))


def test_tls_settings_of_the_wrong_type_are_refused() -> None:
    with pytest.raises(ValueError, match="tls: expected BusTls"):
        MessageBus("mqtts://h", "client", tls=("ca", "cert", "key"))  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["ca_file", "cert_file", "key_file"])
def test_a_missing_file_is_named(field: str, broker_certs: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.pem"
    settings = {**_tls(broker_certs, "payload").__dict__, field: missing}
    with pytest.raises(ValueError) as info:
        MessageBus("mqtts://h", "client", tls=BusTls(**settings))
    assert str(info.value) == f"tls {field} {missing}: no such file"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads anything")
def test_an_unreadable_key_is_named(broker_certs: Path, tmp_path: Path) -> None:
    key = tmp_path / "payload.key"
    key.write_bytes((broker_certs / "payload.key").read_bytes())
    key.chmod(0)
    tls = BusTls(broker_certs / "ca.crt", broker_certs / "payload.crt", key)
    with pytest.raises(ValueError, match=f"tls key_file {key}: cannot read it"):
        MessageBus("mqtts://h", "client", tls=tls)


def test_a_file_that_is_not_a_ca_certificate_is_named(broker_certs: Path, tmp_path: Path) -> None:
    bogus = tmp_path / "ca.crt"
    bogus.write_text("not a certificate\n")
    tls = BusTls(bogus, broker_certs / "payload.crt", broker_certs / "payload.key")
    with pytest.raises(ValueError, match=f"^tls ca_file {bogus}: not a PEM CA certificate"):
        MessageBus("mqtts://h", "client", tls=tls)


def test_a_key_of_another_certificate_is_refused(broker_certs: Path) -> None:
    tls = BusTls(broker_certs / "ca.crt", broker_certs / "payload.crt", broker_certs / "occ.key")
    with pytest.raises(ValueError, match="not a PEM certificate and its matching private key"):
        MessageBus("mqtts://h", "client", tls=tls)


def test_an_encrypted_key_is_refused_without_prompting(broker_certs: Path, tmp_path: Path) -> None:
    key = serialization.load_pem_private_key((broker_certs / "payload.key").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    encrypted = tmp_path / "payload.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    tls = BusTls(broker_certs / "ca.crt", broker_certs / "payload.crt", encrypted)
    with pytest.raises(ValueError, match=f"tls key_file {encrypted}: the private key is encrypted"):
        MessageBus("mqtts://h", "client", tls=tls)


def test_the_context_checks_the_broker_and_its_name(broker_certs: Path) -> None:
    context = _tls(broker_certs, "payload").ssl_context()
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


# ---- through a real broker ------------------------------------------------------------------


async def test_publish_and_receive_over_tls(secure_mosquitto: SecureMosquitto) -> None:
    url = secure_mosquitto.url
    async with (
        MessageBus(url, "any-id", tls=secure_mosquitto.tls("payload")) as payload,
        MessageBus(url, "another-id", tls=secure_mosquitto.tls("occ")) as occ,
    ):
        await payload.subscribe("satqkd/jinan1/payload/tc")
        await occ.publish("satqkd/jinan1/payload/tc", b"over tls")
        received = await asyncio.wait_for(anext(payload.messages()), 5.0)
        assert (received.topic, received.payload) == ("satqkd/jinan1/payload/tc", b"over tls")
        assert payload.connected and payload.stats.reconnects == 0


async def test_the_certificate_not_the_client_id_names_the_session(
    secure_mosquitto: SecureMosquitto,
) -> None:
    """use_username_as_clientid: a connection with another identity's client id leaves that
    identity's session alone; a second connection with the same certificate replaces it."""
    url = secure_mosquitto.url
    async with MessageBus(
        url, "payload", tls=secure_mosquitto.tls("payload"), reconnect_min_s=0.05
    ) as payload:
        occ_context = secure_mosquitto.tls("occ").ssl_context()
        async with aiomqtt.Client("127.0.0.1", secure_mosquitto.port, identifier="payload",
                                  tls_context=occ_context, timeout=5):  # fmt: skip
            await asyncio.sleep(0.3)
        assert payload.stats.disconnects == 0, "the occ identity took the payload's session"
        payload_context = secure_mosquitto.tls("payload").ssl_context()
        async with aiomqtt.Client("127.0.0.1", secure_mosquitto.port, identifier="other",
                                  tls_context=payload_context, timeout=5):  # fmt: skip
            async with asyncio.timeout(5):
                while payload.stats.disconnects == 0:
                    await asyncio.sleep(0.02)
        await asyncio.wait_for(payload.wait_connected(), 5.0)  # and it comes back


async def test_a_broker_whose_certificate_the_ca_did_not_sign_is_refused(
    secure_mosquitto: SecureMosquitto, tmp_path: Path
) -> None:
    other = tmp_path / "other-ca"
    write_certificates(other, "jinan1", ["xinglong"])
    tls = BusTls(other / "ca.crt", other / "payload.crt", other / "payload.key")
    bus = MessageBus(secure_mosquitto.url, "payload", tls=tls, connect_timeout_s=1.0)
    with pytest.raises(ConnectionError, match="certificate verify failed") as info:
        async with bus:
            pass
    assert secure_mosquitto.url in str(info.value)
