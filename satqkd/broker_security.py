"""Securing the MQTT broker: certificates, Mosquitto's configuration and its ACL (docs/broker.md).

Every daemon proves who it is with a client certificate whose common name (CN) is its MQTT
identity: `payload`, `ogs-<station>`, `recorder-<station>` (the report recorder that runs beside
a station daemon, read-only) and `occ` (the operation control centre). Mosquitto takes the CN as
the username (`use_identity_as_username`) and as the client id (`use_username_as_clientid`), and
its ACL lets each identity publish only its own topics and read only what it subscribes to.

- `write_certificates`: a CA, the broker's server certificate and one client certificate per
  identity (EC P-256, `cryptography`), private keys owner-only.
- `render_acl` / `render_mosquitto_conf` / `write_broker_config`: the ACL and a TLS-only
  listener for a mission and its stations (the station topics carry the station name).
- `daemon_tls`: a daemon's `BusTls` from its command line, checked against the identity it
  must connect as (a publish the ACL denies is dropped silently, so a wrong certificate would
  otherwise go unnoticed).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from satqkd.broker_bridge import bridge_identity, parse_bridge_address, render_bridge
from satqkd_core import dictionary as dct
from satqkd_core.errors import InputError
from satqkd_runtime.bus_tls import BusTls

OCC = "occ"
MONITOR = "monitor"
PAYLOAD = dct.PAYLOAD_NODE
CA_NAME, SERVER_NAME = "ca", "server"
DEFAULT_DAYS = 365
MAX_DAYS = 3650
_HOST_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")


def recorder_identity(station: str) -> str:
    """Get: the identity of the report recorder beside a station daemon: 'recorder-<station>'
    (never a node name, so no station can be given the recorder's certificate's rights)."""
    return "recorder-" + dct.ogs_node(station).removeprefix("ogs-")


@dataclass(frozen=True)
class Grant:
    """What one identity may do on the broker: topics (filters) it reads and publishes."""

    identity: str
    role: str
    read: tuple[str, ...]
    write: tuple[str, ...]


def _stations(mission: str, stations: Iterable[str]) -> list[str]:
    """Get: the stations, each once, in order; ValueError naming a bad mission or station."""
    names = list(dict.fromkeys(stations))
    if not names:
        raise ValueError("--station: give at least one station")
    try:
        for station in names:
            dct.qkd_topic(mission, station, "up")  # checks both names
    except InputError as exc:
        raise ValueError(
            str(exc).replace("station:", "--station:").replace("mission:", "--mission:")
        ) from None
    return names


def _node_topics(mission: str, node: str) -> tuple[str, str, str]:
    """Get: a node's telecommand topic, its telemetry filter (one level per packet) and its
    event topic."""
    telemetry = dct.telemetry_topic(mission, node, "HOUSEKEEPING").rsplit("/", 1)[0] + "/+"
    return dct.telecommand_topic(mission, node), telemetry, dct.event_topic(mission, node)


def acl_grants(mission: str, stations: Iterable[str], bridges: Iterable[str] = ()) -> list[Grant]:
    """Get: the grant of every identity of a mission served by these stations.

    Reads are exactly what each daemon subscribes to: the payload its telecommands and each
    station's uplink; a station its telecommands and its downlink; a recorder (and the OCC)
    every node's telemetry and events (`satqkd.pass_recorder` subscribes to
    `satqkd/{mission}/+/tm/#` and `satqkd/{mission}/+/evt`). Writes: a node its own telemetry
    and events and its direction of each QKD channel; only the OCC sends telecommands (and
    publishes its own telemetry and events); `monitor` (`satqkd monitor`, `tm watch`) reads
    every node's telemetry and events and writes nothing. A bridge (`bridge-<name>`, one per
    name in `bridges`: satqkd/broker_bridge.py) carries the whole mission both ways."""
    names = _stations(mission, stations)
    everything = (f"satqkd/{mission}/+/tm/#", f"satqkd/{mission}/+/evt")
    tc, tm, evt = _node_topics(mission, PAYLOAD)
    grants = [
        Grant(
            PAYLOAD,
            "the payload daemon",
            (tc, *(dct.qkd_topic(mission, s, "up") for s in names)),
            (tm, evt, *(dct.qkd_topic(mission, s, "down") for s in names)),
        )
    ]
    for station in names:
        node = dct.ogs_node(station)
        tc, tm, evt = _node_topics(mission, node)
        grants.append(
            Grant(
                node,
                f"the {station} ground-station daemon",
                (tc, dct.qkd_topic(mission, station, "down")),
                (tm, evt, dct.qkd_topic(mission, station, "up")),
            )
        )
        grants.append(
            Grant(
                recorder_identity(station),
                f"the report recorder beside the {station} station daemon (read-only)",
                everything,
                (),
            )
        )
    nodes = [PAYLOAD, *(dct.ogs_node(s) for s in names)]
    telecommands = tuple(dct.telecommand_topic(mission, node) for node in nodes)
    _, occ_tm, occ_evt = _node_topics(mission, OCC)
    grants.append(
        Grant(OCC, "the operation control centre", everything, (*telecommands, occ_tm, occ_evt))
    )
    grants.append(
        Grant(MONITOR, "pass monitors and telemetry watchers (read-only)", everything, ())
    )
    whole = (f"satqkd/{mission}/#",)
    for name in dict.fromkeys(bridges):
        role = "a bridge between two of the network's brokers (the mission's topics both ways)"
        grants.append(Grant(bridge_identity(name), role, whole, whole))
    return grants


def client_identities(
    mission: str, stations: Iterable[str], bridges: Iterable[str] = ()
) -> list[str]:
    """Get: every identity that needs a client certificate."""
    return [grant.identity for grant in acl_grants(mission, stations, bridges)]


def _header(title: str, command: str) -> list[str]:
    return [
        f"# {title}",
        f"# README: generated by `{command}`",
        "# (docs/broker.md); generate it again rather than edit it. Certificates are not part of",
        "# it: make them with `satqkd broker certs` and keep them on the broker host.",
    ]


def render_acl(
    mission: str, stations: Sequence[str], command: str, bridges: Sequence[str] = ()
) -> str:
    """Get: the text of Mosquitto's acl_file for a mission and its stations (and the bridges
    of its network); `command` is the command line that generated it (quoted in the header)."""
    names = _stations(mission, stations)
    lines = _header(f"satqkd broker ACL: mission {mission}, stations {', '.join(names)}.", command)
    lines += [
        "# A user is the CN of a client certificate (use_identity_as_username). Nothing is",
        "# granted to anyone else, and a topic not granted below is denied: the broker drops a",
        "# denied publish and delivers nothing that a subscriber may not read.",
    ]
    for grant in acl_grants(mission, names, bridges):
        lines += ["", f"# {grant.identity}: {grant.role}", f"user {grant.identity}"]
        lines += [f"topic read {topic}" for topic in grant.read]
        lines += [f"topic write {topic}" for topic in grant.write]
    return "\n".join(lines) + "\n"


def _config_path(option: str, value: str | Path) -> str:
    text = os.path.abspath(os.fspath(value))
    if re.search(r"\s", text):
        raise ValueError(
            f"{option}: a path with white space cannot be used in mosquitto.conf: {text!r}"
        )
    return text


def render_mosquitto_conf(
    mission: str,
    stations: Sequence[str],
    *,
    port: int,
    certs_dir: str | Path,
    acl_file: str | Path,
    command: str,
    bind: str | None = None,
    bridge_to: str | None = None,
    bridge_as: str | None = None,
) -> str:
    """Get: the text of a mosquitto.conf with one TLS listener on `port` (client certificates
    required, CN = username = client id), no anonymous access and the ACL at `acl_file`; with
    `bridge_to` (HOST:PORT) and `bridge_as` (a bridge name), a bridge to that broker."""
    names = _stations(mission, stations)
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"--port: must be in 1..65535, got {port!r}")
    if bind is not None:
        _check_host("--bind", bind)
    certs = _config_path("--certs", certs_dir)
    lines = _header(
        f"Mosquitto for satqkd mission {mission}, stations {', '.join(names)}: TLS, client "
        "certificates, ACL.",
        command,
    )
    lines += [
        "",
        "per_listener_settings false",
        "allow_anonymous false",
        f"acl_file {_config_path('--acl-file', acl_file)}",
        "# small packets at once: QoS 1 acknowledgements must not wait for delayed ACKs",
        "set_tcp_nodelay true",
        "",
        "# the only listener: MQTT over TLS 1.2 or newer; no plain-text port",
        f"listener {port}" + (f" {bind}" if bind else ""),
        f"cafile {certs}/{CA_NAME}.crt",
        f"certfile {certs}/{SERVER_NAME}.crt",
        f"keyfile {certs}/{SERVER_NAME}.key",
        "tls_version tlsv1.2",
        "require_certificate true",
        "# the certificate's CN is the username (the ACL's user) and the client id, so no",
        "# client can take over another daemon's session by reusing its client id",
        "use_identity_as_username true",
        "use_username_as_clientid true",
    ]
    if (bridge_to is None) != (bridge_as is None):
        raise ValueError("--bridge-to and --bridge-as: give both (where to, and as which bridge)")
    if bridge_to is not None and bridge_as is not None:
        lines += render_bridge(mission, bridge_as, parse_bridge_address(bridge_to), certs)
    return "\n".join(lines) + "\n"


def config_command(
    out_dir: str | Path,
    mission: str,
    stations: Sequence[str],
    *,
    port: int,
    certs_dir: str | Path,
    acl_file: str | Path | None = None,
    bind: str | None = None,
    bridges: Sequence[str] = (),
    bridge_to: str | None = None,
    bridge_as: str | None = None,
) -> str:
    """Get: the `satqkd broker config` command line that makes these files."""
    words = ["satqkd", "broker", "config", os.fspath(out_dir), "--mission", mission]
    for station in dict.fromkeys(stations):
        words += ["--station", station]
    words += ["--port", str(port), "--certs", os.fspath(certs_dir)]
    if acl_file is not None:
        words += ["--acl-file", os.fspath(acl_file)]
    if bind is not None:
        words += ["--bind", bind]
    for name in dict.fromkeys(bridges):
        words += ["--bridge", name]
    if bridge_to is not None:
        words += ["--bridge-to", bridge_to]
    if bridge_as is not None:
        words += ["--bridge-as", bridge_as]
    return shlex.join(words)


def write_broker_config(
    out_dir: str | Path,
    mission: str,
    stations: Sequence[str],
    *,
    port: int,
    certs_dir: str | Path,
    acl_file: str | Path | None = None,
    bind: str | None = None,
    force: bool = False,
    bridges: Sequence[str] = (),
    bridge_to: str | None = None,
    bridge_as: str | None = None,
) -> list[Path]:
    """Control: write OUT_DIR/mosquitto.conf and OUT_DIR/acl (acl_file: where the broker
    reads the ACL, default OUT_DIR/acl); the paths written. `bridges`: the network's bridge
    names the ACL admits; `bridge_to`/`bridge_as`: this broker's bridge upstream (the ACL
    admits it too). ValueError (one line) if a file exists and not `force`, or an argument is
    bad."""
    bridges = list(dict.fromkeys([*bridges, *([bridge_as] if bridge_as else [])]))
    command = config_command(
        out_dir, mission, stations, port=port, certs_dir=certs_dir, acl_file=acl_file, bind=bind,
        bridges=bridges, bridge_to=bridge_to, bridge_as=bridge_as,
    )  # fmt: skip
    out = Path(out_dir)
    conf = render_mosquitto_conf(
        mission, stations, port=port, certs_dir=certs_dir, command=command, bind=bind,
        acl_file=acl_file if acl_file is not None else out / "acl",
        bridge_to=bridge_to, bridge_as=bridge_as,
    )  # fmt: skip
    acl = render_acl(mission, stations, command, bridges)
    files = {out / "mosquitto.conf": conf, out / "acl": acl}
    _refuse_overwrite(files, force, "the broker configuration")
    out.mkdir(parents=True, exist_ok=True)
    for path, text in files.items():
        _write_file(path, text.encode("utf-8"), 0o644)
    return list(files)


# ---- certificates ---------------------------------------------------------------------------


def _check_host(option: str, host: str) -> x509.GeneralName:
    """Get: a host name or IP address as a subject alternative name; ValueError if neither."""
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not isinstance(host, str) or _HOST_NAME.fullmatch(host) is None:
        raise ValueError(f"{option}: not a host name or IP address: {host!r}")
    return x509.DNSName(host.lower())


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "satqkd"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _issue(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    days: int,
    now: datetime,
    usage: x509.ObjectIdentifier | None = None,
    names: Sequence[x509.GeneralName] = (),
) -> x509.Certificate:
    """Get: a certificate for `key`: a self-signed CA when `issuer` is None, else a leaf
    signed by the issuer for `usage` (server or client authentication)."""
    public = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(subject) if issuer is None else issuer[0].subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))  # a little clock skew
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )
    is_ca = issuer is None
    builder = builder.add_extension(
        x509.BasicConstraints(ca=is_ca, path_length=0 if is_ca else None), critical=True
    ).add_extension(
        x509.KeyUsage(
            digital_signature=not is_ca, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=is_ca, crl_sign=is_ca,
            encipher_only=False, decipher_only=False,
        ),
        critical=True,
    )  # fmt: skip
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[1].public_key()),
            critical=False,
        )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
    return builder.sign(key if issuer is None else issuer[1], hashes.SHA256())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),  # daemons start unattended: the file is owner-only
    )


def _pem_cert(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def write_certificates(
    out_dir: str | Path,
    mission: str,
    stations: Sequence[str],
    *,
    hosts: Sequence[str] = (),
    days: int = DEFAULT_DAYS,
    force: bool = False,
    bridges: Sequence[str] = (),
) -> list[Path]:
    """Control: write a CA (ca.crt, ca.key), the broker's certificate (server.crt/.key, names
    localhost, 127.0.0.1 and `hosts`) and one client certificate per identity (<identity>.crt,
    .key) to OUT_DIR (made owner-only), a bridge's (`bridge-<name>`) for each of `bridges`;
    the paths written. ValueError (one line) if a file exists and not `force`, or an argument
    is bad."""
    identities = client_identities(mission, stations, bridges)
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
        raise ValueError(f"--days: must be an integer in 1..{MAX_DAYS}, got {days!r}")
    names = [
        _check_host("--host", host) for host in dict.fromkeys(["localhost", "127.0.0.1", *hosts])
    ]
    out = Path(out_dir)
    stems = [CA_NAME, SERVER_NAME, *identities]
    targets = {out / f"{stem}.{ext}": b"" for stem in stems for ext in ("crt", "key")}
    _refuse_overwrite(targets, force, "the certificates (every daemon then needs its new one)")
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _issue(f"satqkd {mission} broker CA", ca_key, None, days, now)
    issued = {CA_NAME: (ca, ca_key)}
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _issue(
        "satqkd broker", server_key, (ca, ca_key), days, now, ExtendedKeyUsageOID.SERVER_AUTH, names
    )
    issued[SERVER_NAME] = (server, server_key)
    for identity in identities:
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = _issue(
            identity, key, (ca, ca_key), days, now, ExtendedKeyUsageOID.CLIENT_AUTH
        )
        issued[identity] = (certificate, key)
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    out.chmod(0o700)  # it holds private keys
    written = []
    for stem, (certificate, key) in issued.items():
        _write_file(out / f"{stem}.key", _pem_key(key), 0o600)
        _write_file(out / f"{stem}.crt", _pem_cert(certificate), 0o644)
        written += [out / f"{stem}.crt", out / f"{stem}.key"]
    return written


def _refuse_overwrite(files: Iterable[Path], force: bool, what: str) -> None:
    existing = [str(path) for path in files if path.exists()]
    if existing and not force:
        raise ValueError(f"{existing[0]} already exists: give --force to replace {what}")


def _write_file(path: Path, data: bytes, mode: int) -> None:
    """Control: write a file whole (through a temporary file), with exactly this mode."""
    temporary = path.with_name(f".{path.name}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    with os.fdopen(os.open(temporary, flags, mode), "wb") as handle:
        os.fchmod(handle.fileno(), mode)  # whatever the umask or an earlier file said
        handle.write(data)
    os.replace(temporary, path)


# ---- a daemon's TLS settings from its command line -----------------------------------------


def load_certificate(cert_file: str | Path) -> x509.Certificate:
    """Get: a PEM certificate; ValueError (one line naming the file) if it is not one."""
    try:
        return x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{cert_file}: not a readable PEM certificate ({exc})") from None


def common_name(certificate: x509.Certificate) -> str:
    """Get: the common name (CN) of a certificate's subject, '' if it has none."""
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def bus_tls_from_options(
    broker: str,
    ca_file: str | None,
    cert_file: str | None,
    key_file: str | None,
    *,
    identity: str,
    options: tuple[str, str, str] = ("--tls-ca", "--tls-cert", "--tls-key"),
) -> BusTls | None:
    """Get: the TLS settings of a daemon's bus to `broker` (None for plain mqtt://), its
    certificate checked to be issued to `identity`, unexpired; ValueError (one line naming the
    option) if the options and the url disagree or a file is wrong."""
    given = {
        option: value
        for option, value in zip(options, (ca_file, cert_file, key_file), strict=True)
        if value
    }
    if urlsplit(broker).scheme != "mqtts":
        if given:
            raise ValueError(
                f"{', '.join(given)}: TLS options need an mqtts:// --broker, got {broker!r}"
            )
        return None
    missing = [option for option in options if option not in given]
    if missing:
        raise ValueError(
            f"--broker {broker}: MQTT over TLS needs {', '.join(missing)} "
            f"(the CA and the certificate of {identity!r} from 'satqkd broker certs')"
        )
    tls = BusTls(str(ca_file), str(cert_file), str(key_file))
    try:
        tls.ssl_context()
    except ValueError as exc:
        message = str(exc)
        for field, option in zip(("ca_file", "cert_file", "key_file"), options, strict=True):
            message = message.replace(f"tls {field}", option)
        raise ValueError(message) from None
    certificate = load_certificate(str(cert_file))
    name = common_name(certificate)
    if name != identity:
        raise ValueError(
            f"{options[1]} {cert_file}: the certificate is issued to {name!r}, but this "
            f"connection is {identity!r}: give {identity}.crt and {identity}.key"
        )
    if certificate.not_valid_after_utc <= datetime.now(UTC):
        raise ValueError(
            f"{options[1]} {cert_file}: the certificate expired on "
            f"{certificate.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
        )
    return tls


def daemon_tls(args: argparse.Namespace, identity: str, *, recorder: bool = False) -> BusTls | None:
    """Get: the TLS settings of a daemon's bus from its command line (`--tls-ca`, `--tls-cert`,
    `--tls-key`; a station's recorder: `--tls-reports-cert`, `--tls-reports-key`)."""
    cert, key = ("tls_reports_cert", "tls_reports_key") if recorder else ("tls_cert", "tls_key")
    return bus_tls_from_options(
        args.broker,
        getattr(args, "tls_ca", None),
        getattr(args, cert, None),
        getattr(args, key, None),
        identity=identity,
        options=("--tls-ca", "--" + cert.replace("_", "-"), "--" + key.replace("_", "-")),
    )
