"""Serving the key delivery app over HTTPS with client certificates (uvicorn).

The TLS handshake checks a client certificate against the SAE CA when one is presented
(`CERT_OPTIONAL`, so that a caller without one gets the standard's 401 rather than a failed
handshake; a certificate from another CA fails the handshake). uvicorn does not pass the peer
certificate to the app, so the HTTP protocol below reads it from the connection once and puts
its common name into the state every request of that connection carries.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from satqkd_ogs.key_delivery.app import SAE_STATE_KEY


def peer_common_name(transport: asyncio.BaseTransport) -> str | None:
    """Get: the common name of the verified client certificate of a TLS connection, if any."""
    ssl_object = transport.get_extra_info("ssl_object")
    certificate = ssl_object.getpeercert() if ssl_object is not None else None
    if not certificate:
        return None
    for rdn in certificate.get("subject", ()):
        for name, value in rdn:
            if name == "commonName":
                return str(value)
    return None


class SaeIdentityProtocol(H11Protocol):
    """HTTP/1.1 whose requests carry the client certificate's common name in their state."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.app_state = {**self.app_state, SAE_STATE_KEY: peer_common_name(transport)}


def server_config(
    app: Any,
    *,
    host: str,
    port: int,
    ca_file: str | Path,
    cert_file: str | Path,
    key_file: str | Path,
) -> uvicorn.Config:
    """Get: a uvicorn configuration serving `app` over TLS 1.2+ with SAE client certificates."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=SaeIdentityProtocol,
        ssl_certfile=str(cert_file),
        ssl_keyfile=str(key_file),
        ssl_ca_certs=str(ca_file),
        ssl_cert_reqs=ssl.CERT_OPTIONAL,
        ssl_version=ssl.PROTOCOL_TLS_SERVER,
        log_level="warning",
        access_log=False,
        lifespan="off",
        server_header=False,
    )


class KmeServer(uvicorn.Server):
    """uvicorn's server, but SIGINT and SIGTERM end it cleanly (exit status 0, the key store
    closed by the caller) instead of being raised again once it stopped."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # signals reach the main thread only (a server run in a thread)
            return
        loop = asyncio.get_running_loop()
        stops = (signal.SIGINT, signal.SIGTERM)
        for number in stops:
            loop.add_signal_handler(number, self.handle_exit, number, None)
        try:
            yield
        finally:
            for number in stops:
                loop.remove_signal_handler(number)
