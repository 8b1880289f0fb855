"""TLS settings of a bus connection (`mqtts://`): the broker is authenticated by its
certificate, the client by its own certificate and private key.

`BusTls` names three PEM files; `BusTls.ssl_context()` reads them once, when the bus is built,
so a missing, unreadable or malformed file is a one-line `ValueError` naming that file rather
than a connection that keeps failing. The context checks the broker's certificate against the
CA and the broker's host name against the certificate's names, and speaks TLS 1.2 or newer.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path


class _EncryptedKeyError(Exception):
    """The private key is encrypted: a daemon runs unattended and has no one to ask."""


def _no_password() -> bytes:
    raise _EncryptedKeyError


@dataclass(frozen=True)
class BusTls:
    """TLS settings of one client: the CA certificate that signed the broker's certificate,
    and this client's certificate and unencrypted private key (PEM files)."""

    ca_file: str | Path
    cert_file: str | Path
    key_file: str | Path

    def ssl_context(self) -> ssl.SSLContext:
        """Get: a client context holding these files; ValueError (one line naming the file)
        if one is missing, unreadable or not what it should be."""
        ca, cert, key = (
            _readable(name, value)
            for name, value in (
                ("ca_file", self.ca_file),
                ("cert_file", self.cert_file),
                ("key_file", self.key_file),
            )
        )
        try:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
        except ssl.SSLError as exc:
            raise ValueError(
                f"tls ca_file {ca}: not a PEM CA certificate ({_reason(exc)})"
            ) from None
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(cert, key, password=_no_password)
        except _EncryptedKeyError:
            raise ValueError(
                f"tls key_file {key}: the private key is encrypted; a daemon needs it unencrypted "
                "(owner-only file)"
            ) from None
        except ssl.SSLError as exc:
            raise ValueError(
                f"tls cert_file {cert}, key_file {key}: not a PEM certificate and its matching "
                f"private key ({_reason(exc)})"
            ) from None
        return context


def _readable(name: str, value: object) -> str:
    """Get: the path of a file this process can read; ValueError naming it otherwise."""
    if not isinstance(value, str | os.PathLike) or not str(value):
        raise ValueError(f"tls {name}: expected a file path, got {value!r}")
    path = Path(value)
    if not path.is_file():
        raise ValueError(f"tls {name} {path}: no such file")
    try:
        with path.open("rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise ValueError(f"tls {name} {path}: cannot read it ({exc.strerror})") from None
    return str(path)


def _reason(exc: ssl.SSLError) -> str:
    return str(exc.reason or exc.strerror or exc).lower().replace("_", " ")


def tls_context_for(url: str, scheme: str, tls: object) -> ssl.SSLContext | None:
    """Get: the TLS context of a bus to `url` (None for plain MQTT); ValueError if the url's
    scheme ('mqtt' or 'mqtts') and the TLS settings disagree, or a TLS file is missing,
    unreadable or malformed."""
    if scheme != "mqtts":
        if tls is not None:
            raise ValueError(
                f"tls: TLS settings given for the plain MQTT url {url!r}: use mqtts:// "
                "(or give no TLS settings)"
            )
        return None
    if tls is None:
        raise ValueError(
            f"url: {url!r} is MQTT over TLS and needs TLS settings "
            "(tls=BusTls(ca_file, cert_file, key_file))"
        )
    if not isinstance(tls, BusTls):
        raise ValueError(f"tls: expected BusTls(ca_file, cert_file, key_file), got {tls!r}")
    return tls.ssl_context()
