"""`satqkd kms ...`: a station's key management entity (docs/key-delivery.md).

- `kms certs DIR --station S --sae ID --sae ID ... [--peer-kme P]`: a CA, the KME's server
  certificate and one client certificate per SAE (the common name is the SAE id), and for each
  peer KME's station P the folder peer-kme-P/ to hand to P; private keys owner-only.
- `kms serve --station STATION.yaml --keys DIR --certs DIR --sae ID --sae ID --port P`: enter the
  station's confirmed keys into its key management store (`DIR/kms/keys.sqlite`), keep entering
  new ones, and serve them over the ETSI GS QKD 014 API (HTTPS, client certificates). With
  `--peer ogs-S --peer-kme URL --peer-kme-certs DIR --peer-sae ID`, one of two KMEs over the keys
  shared with station S, telling each other which key ids their masters took (kme_sync).
- `kms openapi [--out FILE]`: the API's OpenAPI document (docs/etsi014-openapi.json).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from satqkd.config import ConfigError

GROUP = "kms"
KME_PREFIX = "kme-"
DEFAULT_PORT = 8443
_SAE_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


def _sae_id(text: str) -> str:
    if _SAE_ID.fullmatch(text) is None or text.startswith(KME_PREFIX) or text == "ca":
        raise argparse.ArgumentTypeError(
            f"an SAE id is 1..128 of A-Z a-z 0-9 . _ - (not 'ca', not starting with "
            f"'{KME_PREFIX}'), got {text[:40]!r}"
        )
    return text


def _int_range(low: int, high: int, what: str):
    def parse(text: str) -> int:
        try:
            value = int(text, 10) if len(text) <= 12 else None
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected {what} in {low}..{high}, got {text[:20]!r}")
        return value

    parse.__name__ = what
    return parse


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.1 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"expected seconds in 0.1..3600, got {text[:20]!r}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    """Add `kms certs`, `kms serve` and `kms openapi`."""
    kms = sub.add_parser(GROUP, help="key management and ETSI GS QKD 014 key delivery")
    commands = kms.add_subparsers(dest="command", required=True)

    certs = commands.add_parser("certs", help="CA, KME server and SAE client certificates")
    certs.add_argument("dir", help="directory to write them to (made owner-only)")
    certs.add_argument("--station", required=True, help="the station whose KME they are for")
    certs.add_argument(
        "--sae",
        type=_sae_id,
        action="append",
        required=True,
        metavar="ID",
        help="an SAE id (give each application's)",
    )
    certs.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="NAME",
        help="a host name or address of the KME (localhost and 127.0.0.1 always)",
    )
    certs.add_argument(
        "--peer-kme",
        action="append",
        default=[],
        metavar="STATION",
        help="the station of a peer KME: write DIR/peer-kme-STATION/ (this CA, and the client "
        "certificate kme-STATION it shows this KME) to hand to that station",
    )
    certs.add_argument("--days", type=_int_range(1, 3650, "days"), default=365)
    certs.add_argument("--force", action="store_true", help="replace existing certificates")

    serve = commands.add_parser("serve", help="serve the station's keys over ETSI GS QKD 014")
    serve.add_argument("--station", required=True, metavar="STATION.yaml")
    serve.add_argument("--keys", required=True, metavar="DIR", help="the station's key store")
    serve.add_argument("--certs", required=True, metavar="DIR", help="from 'satqkd kms certs'")
    serve.add_argument(
        "--sae",
        type=_sae_id,
        action="append",
        required=True,
        metavar="ID",
        help="an SAE this KME serves (at least two; one with --peer-kme)",
    )
    serve.add_argument(
        "--mission",
        default=None,
        metavar="MISSION.yaml",
        help="the mission whose epsilons the keys' provenance records",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=_int_range(1, 65535, "a port"), default=DEFAULT_PORT)
    serve.add_argument("--key-size-bits", type=_int_range(64, 65536, "bits"), default=256)
    serve.add_argument("--peer", default="payload", help="the node the served keys are shared with")
    serve.add_argument(
        "--peer-kme",
        default=None,
        metavar="URL",
        help="the KME at the other end of --peer ogs-STATION (https://host:port): it serves the "
        "slave SAEs of this KME's masters, and this KME its masters' slaves",
    )
    serve.add_argument(
        "--peer-kme-certs",
        default=None,
        metavar="DIR",
        help="peer-kme-<this station>/ from the peer's 'satqkd kms certs --peer-kme'",
    )
    serve.add_argument(
        "--peer-sae",
        type=_sae_id,
        action="append",
        default=[],
        metavar="ID",
        help="an SAE the peer KME serves (with --peer-kme)",
    )
    serve.add_argument(
        "--import-interval-s",
        type=_interval,
        default=5.0,
        help="how often new confirmed keys are entered",
    )

    openapi = commands.add_parser("openapi", help="print or write the API's OpenAPI document")
    openapi.add_argument("--out", default=None, metavar="FILE")


def run(args: argparse.Namespace) -> int:
    """Run a `kms` command."""
    if args.command == "certs":
        return _certs(args)
    if args.command == "openapi":
        return _openapi(args)
    return _serve(args)


# ---- certificates ---------------------------------------------------------------------------


def kme_identity(station: str) -> str:
    """Get: the common name of a station's KME server certificate."""
    return KME_PREFIX + station


def write_kms_certificates(
    out_dir: str | Path,
    station: str,
    saes: list[str],
    *,
    hosts: list[str],
    days: int,
    force: bool,
    peer_kmes: list[str] | None = None,
) -> list[Path]:
    """Control: write ca.crt/.key, kme-<station>.crt/.key (server) and <sae>.crt/.key (client)
    into OUT_DIR, keys 0600 in a 0700 directory, and for each peer KME's station P the folder
    peer-kme-P/ (ca.crt and the client certificate kme-P.crt/.key P's KME shows this one); the
    paths written. ValueError (one line) if a file exists and not `force`, or an argument is
    bad. The CA code is the broker's."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    from satqkd import broker_security as certs

    if len(set(saes)) != len(saes):
        raise ValueError("--sae: each SAE id once")
    peers = list(peer_kmes or [])
    if station in peers or len(set(peers)) != len(peers):
        raise ValueError("--peer-kme: each peer station once, not this station")
    names = [
        certs._check_host("--host", h) for h in dict.fromkeys(["localhost", "127.0.0.1", *hosts])
    ]
    out = Path(out_dir)
    server = kme_identity(station)
    stems = [certs.CA_NAME, server, *saes]
    targets = [out / f"{stem}.{ext}" for stem in stems for ext in ("crt", "key")]
    targets += [out / f"peer-kme-{peer}" / f"{kme_identity(peer)}.key" for peer in peers]
    certs._refuse_overwrite(
        targets, force, "the KME certificates (every SAE then needs its new one)"
    )
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = certs._issue(f"satqkd {station} KME CA", ca_key, None, days, now)
    issued = {certs.CA_NAME: (ca, ca_key)}
    server_key = ec.generate_private_key(ec.SECP256R1())
    issued[server] = (
        certs._issue(
            server, server_key, (ca, ca_key), days, now, ExtendedKeyUsageOID.SERVER_AUTH, names
        ),
        server_key,
    )
    for sae in saes:
        key = ec.generate_private_key(ec.SECP256R1())
        issued[sae] = (
            certs._issue(sae, key, (ca, ca_key), days, now, ExtendedKeyUsageOID.CLIENT_AUTH),
            key,
        )
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    out.chmod(0o700)
    written = []
    for stem, (certificate, key) in issued.items():
        certs._write_file(out / f"{stem}.key", certs._pem_key(key), 0o600)
        certs._write_file(out / f"{stem}.crt", certs._pem_cert(certificate), 0o644)
        written += [out / f"{stem}.crt", out / f"{stem}.key"]
    for peer in peers:  # the peer KME is a client here, by the name no SAE may have
        name, key = kme_identity(peer), ec.generate_private_key(ec.SECP256R1())
        client = certs._issue(name, key, (ca, ca_key), days, now, ExtendedKeyUsageOID.CLIENT_AUTH)
        folder = out / f"peer-kme-{peer}"
        folder.mkdir(mode=0o700, exist_ok=True)
        folder.chmod(0o700)
        certs._write_file(folder / "ca.crt", certs._pem_cert(ca), 0o644)
        certs._write_file(folder / f"{name}.key", certs._pem_key(key), 0o600)
        certs._write_file(folder / f"{name}.crt", certs._pem_cert(client), 0o644)
        written += [folder / "ca.crt", folder / f"{name}.crt", folder / f"{name}.key"]
    return written


def _certs(args: argparse.Namespace) -> int:
    from satqkd.config import NAME_PATTERN

    for option, name in [("--station", args.station)] + [("--peer-kme", p) for p in args.peer_kme]:
        if re.fullmatch(NAME_PATTERN, name) is None:
            raise ConfigError(f"{option}: a station name matches {NAME_PATTERN}, got {name!r}")
    try:
        written = write_kms_certificates(
            args.dir,
            args.station,
            args.sae,
            hosts=args.host,
            days=args.days,
            force=args.force,
            peer_kmes=args.peer_kme,
        )
    except (ValueError, OSError) as exc:
        raise ConfigError(str(exc)) from None
    for path in written:
        print(path)
    return 0


# ---- the OpenAPI document -------------------------------------------------------------------


def openapi_document() -> dict[str, Any]:
    """Get: the OpenAPI document of the key delivery API (independent of any station)."""
    from satqkd_ogs.key_delivery import DeliverySettings, create_app
    from satqkd_runtime.key_management import KeyManagement

    with tempfile.TemporaryDirectory() as scratch:
        kms = KeyManagement(scratch)
        try:
            app = create_app(kms, DeliverySettings("kme-station", "payload", frozenset()))
            return app.openapi()
        finally:
            kms.close()


def openapi_text() -> str:
    """Get: the OpenAPI document as written to docs/etsi014-openapi.json."""
    return json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n"


def _openapi(args: argparse.Namespace) -> int:
    text = openapi_text()
    if args.out is None:
        sys.stdout.write(text)
        return 0
    try:
        Path(args.out).write_text(text)
    except OSError as exc:
        raise ConfigError(f"--out {args.out}: {exc.strerror or exc}") from None
    return 0


# ---- serving --------------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    import asyncio

    return asyncio.run(_serve_async(args))


def _required_files(certs_dir: Path, stems: list[str]) -> None:
    for stem in stems:
        for ext in ("crt", "key"):
            path = certs_dir / f"{stem}.{ext}"
            if not path.is_file():
                raise ConfigError(f"--certs {certs_dir}: no {path.name} (run 'satqkd kms certs')")


def _listen(host: str, port: int, kms: Any) -> Any:
    """Get: a socket listening on host:port; ConfigError (one line) if it cannot be had."""
    import socket

    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
    except OSError as exc:
        kms.close()
        raise ConfigError(f"--host {host} --port {port}: {exc.strerror or exc}") from None
    return listener


def _checked_serve_options(args: argparse.Namespace) -> tuple[str, dict[str, float | None]]:
    """Get: the station's KME identity and the epsilons the provenance records; ConfigError
    (one line) for a bad option or a missing file."""
    from satqkd.config import MissionConfig, StationConfig, load_model

    station = load_model(StationConfig, Path(args.station))
    eps: dict[str, float | None] = {"eps_sec": None, "eps_cor": None}
    if args.mission:
        protocol = load_model(MissionConfig, Path(args.mission)).protocol
        eps = {"eps_sec": protocol.eps_sec, "eps_cor": protocol.eps_cor}
    if args.peer_kme is None and (args.peer_kme_certs or args.peer_sae):
        raise ConfigError("--peer-kme-certs and --peer-sae go with --peer-kme")
    if args.peer_kme is None and len(set(args.sae)) < 2:
        raise ConfigError("--sae: give at least two SAEs (a key goes from a master to a slave)")
    if args.key_size_bits % 8:
        raise ConfigError(f"--key-size-bits: must be a multiple of 8, got {args.key_size_bits}")
    server = kme_identity(station.name)
    certs_dir = Path(args.certs)
    _required_files(certs_dir, [server])
    if not (certs_dir / "ca.crt").is_file():
        raise ConfigError(f"--certs {certs_dir}: no ca.crt (run 'satqkd kms certs')")
    if not Path(args.keys).is_dir():
        raise ConfigError(f"--keys {args.keys}: not a directory")
    if args.peer_kme is not None:
        _check_peer_kme(args, station.name)
    return server, eps


def _check_peer_kme(args: argparse.Namespace, station: str) -> None:
    """ConfigError (one line) unless the two-KME options fit together."""
    if not args.peer.startswith("ogs-") or args.peer == f"ogs-{station}":
        raise ConfigError(
            f"--peer {args.peer}: with --peer-kme, the keys are shared with another station "
            "(--peer ogs-STATION)"
        )
    if not re.fullmatch(r"https://[A-Za-z0-9.\-\[\]:]+(:[0-9]{1,5})?/?", args.peer_kme):
        raise ConfigError(f"--peer-kme: an https://host:port URL, got {args.peer_kme[:60]!r}")
    if not args.peer_sae:
        raise ConfigError("--peer-sae: name the SAEs the peer KME serves (at least one)")
    if set(args.peer_sae) & set(args.sae):
        raise ConfigError("--peer-sae: an SAE is served by one KME, not both")
    if args.peer_kme_certs is None:
        raise ConfigError(f"--peer-kme-certs: give peer-kme-{station}/ from the peer's KME")
    folder = Path(args.peer_kme_certs)
    _required_files(folder, [kme_identity(station)])
    if not (folder / "ca.crt").is_file():
        raise ConfigError(f"--peer-kme-certs {folder}: no ca.crt (the peer KME's CA)")
    if (folder / "ca.crt").read_bytes() == (Path(args.certs) / "ca.crt").read_bytes():
        raise ConfigError(
            f"--peer-kme-certs {folder}: this KME's own CA; give the folder peer-kme-{station}/ "
            "the peer's 'satqkd kms certs --peer-kme' wrote"
        )


def _peer_kme(args: argparse.Namespace, station_kme: str) -> Any:
    """Get: the PeerKme of the options (checked before)."""
    from satqkd_ogs.key_delivery.kme_sync import PeerKme

    folder = Path(args.peer_kme_certs)
    return PeerKme(
        kme_id=kme_identity(args.peer.removeprefix("ogs-")),
        url=args.peer_kme.rstrip("/"),
        ca_file=folder / "ca.crt",
        cert_file=folder / f"{station_kme}.crt",
        key_file=folder / f"{station_kme}.key",
    )


async def _serve_async(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import ssl

    from satqkd_ogs.key_delivery import DeliverySettings, KmeServer, create_app, server_config
    from satqkd_runtime.key_management import KeyManagement, KeyManagementError
    from satqkd_runtime.key_management_import import import_confirmed_keys
    from satqkd_runtime.key_management_sync import PairedKeyManagement
    from satqkd_runtime.keystore import KeyStore

    log = logging.getLogger("satqkd.kms")
    server, eps = _checked_serve_options(args)
    certs_dir, keys_dir = Path(args.certs), Path(args.keys)
    peer = None if args.peer_kme is None else _peer_kme(args, server)
    try:
        if peer is None:
            kms = KeyManagement(keys_dir / "kms", args.key_size_bits)
        else:
            kms = PairedKeyManagement(
                keys_dir / "kms",
                args.key_size_bits,
                peer=args.peer,
                own_kme=server,
                peer_kme=peer.kme_id,
            )
    except (KeyManagementError, OSError) as exc:
        raise ConfigError(str(exc)) from None
    store = KeyStore(keys_dir)
    entered = import_confirmed_keys(store, kms, **eps)
    settings = DeliverySettings(
        server,
        args.peer,
        frozenset(args.sae),
        peer_kme_id=None if peer is None else peer.kme_id,
        peer_sae_ids=frozenset(args.peer_sae),
    )
    try:
        app = create_app(kms, settings, peer)
    except (OSError, ssl.SSLError) as exc:
        kms.close()
        raise ConfigError(f"--peer-kme-certs {args.peer_kme_certs}: {exc}") from None
    config = server_config(
        app,
        host=args.host,
        port=args.port,
        ca_file=certs_dir / "ca.crt",
        cert_file=certs_dir / f"{server}.crt",
        key_file=certs_dir / f"{server}.key",
    )
    try:
        config.load()
    except (OSError, ssl.SSLError) as exc:
        kms.close()
        raise ConfigError(
            f"--certs {certs_dir}: cannot serve TLS with {server}.crt ({exc})"
        ) from None
    listener = _listen(args.host, args.port, kms)
    web = KmeServer(config)

    async def keep_entering() -> None:
        while not web.started and not web.should_exit:
            await asyncio.sleep(0.05)
        print(
            f"kms: serving ETSI GS QKD 014 on https://{args.host}:{args.port} as {server}; "
            f"{len(entered)} blocks entered, {kms.count(args.peer)} keys available for "
            f"{args.peer}",
            flush=True,
        )
        while not web.should_exit:
            await asyncio.sleep(args.import_interval_s)
            new = import_confirmed_keys(store, kms, **eps)
            if new:
                log.info("entered %d blocks, %d keys available", len(new), kms.count(args.peer))

    tasks = [asyncio.create_task(keep_entering())]
    stop_pushing = asyncio.Event()
    if app.state.sync is not None:  # notices a restart or a withdrawal left in the outbox
        tasks.append(asyncio.create_task(app.state.sync.keep_pushing(1.0, stop_pushing)))
    try:
        await web.serve(sockets=[listener])
    finally:
        stop_pushing.set()
        for task in tasks:
            task.cancel()
        counts = dict(sorted(app.state.delivery.counters.items()))
        print(f"kms: stopped; {counts or 'no requests'}; keys now {kms.counts()}", flush=True)
        kms.close()
    return 0 if web.started else 1
