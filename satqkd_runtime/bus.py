"""The message bus: the one wrapper around aiomqtt (>=2.5,<3) in the code base.

`MessageBus` owns one MQTT connection and keeps it alive: a background task connects,
restores every subscription, pumps incoming messages into a queue and, when the connection
drops (broker restart, network fault), reconnects with exponential backoff. Publishes made
while disconnected wait (up to `publish_timeout_s`) and are sent once the connection is back.

Ordering policy: publishes to one topic are sent one at a time, in call order, each waiting
for its broker acknowledgement (PUBACK at QoS 1), so a topic's messages reach the broker in
the order they were published even across a reconnect. Delivery is at least once: a message
whose acknowledgement was lost with the connection is sent again, so receivers must be
idempotent (QKD messages are, by sequence number).

Sessions: with `persistent_session=True` (default) the client keeps an MQTT 3.1.1 persistent
session (clean_session=0), so QoS 1 messages arriving while this client is briefly offline
are queued by the broker and delivered on reconnect. Any stale session left under the same
client id is discarded on entry and the session is discarded again on a clean exit.

Connection state: `connected`, `wait_connected()`, `wait_disconnected()` and
`stats.disconnects` let a daemon act on a lost link (the payload puts its source in its safe
state when the ground link stays down).

Transport: `mqtt://host[:port]` is plain TCP (port 1883 by default); `mqtts://host[:port]` is
TLS (port 8883 by default) and needs `tls=BusTls(ca_file, cert_file, key_file)`: the broker's
certificate is checked against the CA and the host name, and the client presents its own
certificate (a broker with `use_identity_as_username` takes the certificate's CN as the
client's identity, docs/broker.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar
from urllib.parse import urlsplit

import aiomqtt

from satqkd_runtime.bus_tls import BusTls, tls_context_for

__all__ = ["BusMessage", "BusStats", "BusTls", "MessageBus", "parse_mqtt_url"]

_log = logging.getLogger(__name__)
_T = TypeVar("_T")
_CLOSED = object()  # end-of-stream marker in the incoming queue


@dataclass
class BusStats:
    """Counters of one bus: payload messages and bytes each way, and reconnections."""

    published_messages: int = 0
    published_bytes: int = 0
    received_messages: int = 0
    received_bytes: int = 0
    reconnects: int = 0
    disconnects: int = 0


@dataclass(frozen=True)
class BusMessage:
    """One received message: its topic and payload bytes."""

    topic: str
    payload: bytes


class SubscriptionRefusedError(RuntimeError):
    """The broker refused a subscription (SUBACK failure code)."""


class _ConnectionLost(Exception):
    """The connection an operation was using went down before the operation finished."""


class _Connection:
    """One live broker connection and the event that tells when it ended."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.lost = asyncio.Event()


_DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
_URL_FORM = "'mqtt://host:port' or 'mqtts://host:port'"


def parse_mqtt_url(url: str) -> tuple[str, int]:
    """Get (host, port) from 'mqtt://host[:port]' (port 1883 if omitted) or
    'mqtts://host[:port]' (TLS, port 8883 if omitted); ValueError if bad."""
    return _split_mqtt_url(url)[1:]


def _split_mqtt_url(url: str) -> tuple[str, str, int]:
    """Get (scheme, host, port) of a broker url; ValueError naming the url if bad."""
    if not isinstance(url, str):
        raise ValueError(f"url: expected {_URL_FORM}, got {url!r}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"url: bad MQTT url {url!r} ({exc})") from None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"url: expected {_URL_FORM}, got {url!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"url: expected {_URL_FORM} with nothing else, got {url!r}")
    if port == 0:
        raise ValueError(f"url: port must be in 1..65535, got {url!r}")
    return parts.scheme, parts.hostname, _DEFAULT_PORTS[parts.scheme] if port is None else port


def _check_topic(topic: object, *, is_filter: bool) -> str:
    what = "topic_filter" if is_filter else "topic"
    if not isinstance(topic, str) or not topic or "\x00" in topic:
        raise ValueError(f"{what}: must be a non-empty string without NUL, got {topic!r}")
    if len(topic.encode("utf-8")) > 65535:
        raise ValueError(f"{what}: longer than 65535 bytes")
    if not is_filter and ("+" in topic or "#" in topic):
        raise ValueError(f"topic: wildcards are not allowed in a publish topic, got {topic!r}")
    if is_filter:
        levels = topic.split("/")
        for index, level in enumerate(levels):
            bad_hash = "#" in level and (level != "#" or index != len(levels) - 1)
            if bad_hash or ("+" in level and level != "+"):
                raise ValueError(f"topic_filter: misplaced wildcard in {topic!r}")
    return topic


def _check_qos(qos: object) -> int:
    if qos not in (0, 1, 2) or isinstance(qos, bool):
        raise ValueError(f"qos: must be 0, 1 or 2, got {qos!r}")
    return int(qos)


class MessageBus:
    """One MQTT client connection with reconnection, resubscription and counters."""

    def __init__(
        self,
        url: str,
        client_id: str,
        *,
        reconnect_min_s: float = 0.1,
        reconnect_max_s: float = 5.0,
        connect_timeout_s: float = 10.0,
        publish_timeout_s: float = 30.0,
        keepalive_s: int = 15,
        persistent_session: bool = True,
        tls: BusTls | None = None,
    ) -> None:
        self.url = url
        scheme, self._host, self._port = _split_mqtt_url(url)
        self.tls = tls
        self._tls_context = tls_context_for(url, scheme, tls)
        if not isinstance(client_id, str) or not client_id:
            raise ValueError(f"client_id: must be a non-empty string, got {client_id!r}")
        if not 0 < reconnect_min_s <= reconnect_max_s:
            raise ValueError(
                f"reconnect_min_s/reconnect_max_s: need 0 < min <= max, "
                f"got {reconnect_min_s}, {reconnect_max_s}"
            )
        for name, value in (
            ("connect_timeout_s", connect_timeout_s),
            ("publish_timeout_s", publish_timeout_s),
            ("keepalive_s", keepalive_s),
        ):
            if not value > 0 or not math.isfinite(value):
                raise ValueError(f"{name}: must be a positive finite number, got {value!r}")
        self.client_id = client_id
        self._reconnect_min_s = float(reconnect_min_s)
        self._reconnect_max_s = float(reconnect_max_s)
        self._connect_timeout_s = float(connect_timeout_s)
        self._publish_timeout_s = float(publish_timeout_s)
        self._keepalive_s = int(keepalive_s)
        self._persistent_session = persistent_session
        self.stats = BusStats()
        self._subscriptions: dict[str, int] = {}
        self._topic_locks: dict[str, asyncio.Lock] = {}
        self._incoming: asyncio.Queue[object] = asyncio.Queue()
        self._connection: _Connection | None = None
        self._connected = asyncio.Event()
        self._disconnected = asyncio.Event()
        self._disconnected.set()
        self._supervisor: asyncio.Task[None] | None = None
        self._last_error: BaseException | None = None
        self._failure: BaseException | None = None
        self._closing = False

    # ---- lifecycle ------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while a broker connection is up with every subscription restored."""
        return self._connection is not None

    async def wait_connected(self) -> None:
        """Wait until the broker connection is up; ConnectionError if the bus failed or closed."""
        while self._connection is None:
            if self._failure is not None:
                raise ConnectionError(f"bus {self.client_id} on {self.url} failed: {self._failure}")
            if self._supervisor is None:
                raise ConnectionError(f"bus {self.client_id} on {self.url} is not open")
            await self._connected.wait()
            if self._connection is None:
                await asyncio.sleep(0)  # set by a failure or a closing bus: checked above

    async def wait_disconnected(self) -> None:
        """Wait until the broker connection is down (returns at once while it is down)."""
        await self._disconnected.wait()

    async def __aenter__(self) -> MessageBus:
        """Connect (ConnectionError naming the url if no broker answers in connect_timeout_s)."""
        if self._supervisor is not None:
            raise RuntimeError(f"MessageBus {self.client_id!r} is already open")
        self._closing = False
        self._failure = None
        self._connected.clear()
        self._incoming = asyncio.Queue()  # drop the end marker of a previous session
        self._supervisor = asyncio.create_task(self._keep_connected(), name=f"bus-{self.client_id}")
        try:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for can lose a cancellation
            # that lands in the loop pass in which the awaited thing completes
            async with asyncio.timeout(self._connect_timeout_s):
                await self._wait_up()
        except BaseException as exc:
            await self._stop_supervisor()
            if isinstance(exc, TimeoutError):
                raise ConnectionError(
                    f"could not connect to MQTT broker {self.url} within "
                    f"{self._connect_timeout_s:g} s (last error: {self._last_error})"
                ) from None
            raise
        return self

    async def _wait_up(self) -> None:
        await self._connected.wait()
        if self._failure is not None:
            raise self._failure

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Disconnect, discard the persistent session and end every messages() iterator."""
        was_connected = self.connected
        try:
            await self._stop_supervisor()
            if self._persistent_session and was_connected:
                # Leave no session behind at the broker to queue messages for a client that left.
                with contextlib.suppress(aiomqtt.MqttError, OSError, TimeoutError):
                    async with asyncio.timeout(self._connect_timeout_s):
                        await self._discard_session()
        finally:
            self._incoming.put_nowait(_CLOSED)

    async def _stop_supervisor(self) -> None:
        self._closing = True
        task, self._supervisor = self._supervisor, None
        if task is not None:
            current = asyncio.current_task()
            cancels_before = current.cancelling() if current is not None else 0
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                # ours ended as asked; a cancel of the caller meanwhile (its timeout) is not
                # ours to swallow (one from before, a caller tearing down, is already handled)
                if current is not None and current.cancelling() > cancels_before:
                    raise

    # ---- public operations ----------------------------------------------------------------

    async def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Publish; waits (bounded by publish_timeout_s) through a disconnection, then sends."""
        topic = _check_topic(topic, is_filter=False)
        qos = _check_qos(qos)
        if not isinstance(payload, bytes | bytearray | memoryview):
            raise ValueError(f"payload: expected bytes, got {type(payload).__name__}")
        data = bytes(payload)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._publish_timeout_s
        lock = self._topic_locks.setdefault(topic, asyncio.Lock())
        async with lock:
            while True:
                connection = await self._wait_connection(deadline, f"publish to {topic!r}")
                try:
                    await self._unless_lost(
                        connection,
                        connection.client.publish(
                            topic, data, qos, timeout=max(deadline - loop.time(), 0.001)
                        ),
                    )
                except (aiomqtt.MqttError, _ConnectionLost) as exc:
                    self._last_error = exc
                    await self._pause_after_failure(connection, deadline)
                    continue
                self.stats.published_messages += 1
                self.stats.published_bytes += len(data)
                return

    async def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        """Subscribe; remembered, and restored after every reconnection."""
        topic_filter = _check_topic(topic_filter, is_filter=True)
        qos = _check_qos(qos)
        self._subscriptions[topic_filter] = qos
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._publish_timeout_s
        while True:
            connection = await self._wait_connection(deadline, f"subscribe to {topic_filter!r}")
            try:
                granted = await self._unless_lost(
                    connection,
                    connection.client.subscribe(
                        topic_filter, qos, timeout=max(deadline - loop.time(), 0.001)
                    ),
                )
            except (aiomqtt.MqttError, _ConnectionLost) as exc:
                self._last_error = exc
                await self._pause_after_failure(connection, deadline)
                continue
            try:
                _raise_if_refused(granted, [topic_filter], self.url)
            except SubscriptionRefusedError:
                # Forget it, or every reconnection would fail on the same refusal.
                self._subscriptions.pop(topic_filter, None)
                raise
            return

    async def messages(self) -> AsyncIterator[BusMessage]:
        """Yield received messages across reconnections; ends when the bus is closed."""
        while True:
            item = await self._incoming.get()
            if item is _CLOSED:
                self._incoming.put_nowait(_CLOSED)  # let any other iterator end too
                if self._failure is not None:
                    raise self._failure
                return
            yield item  # type: ignore[misc]

    # ---- connection management ------------------------------------------------------------

    def _client(self, *, clean_session: bool) -> aiomqtt.Client:
        return aiomqtt.Client(
            self._host,
            self._port,
            identifier=self.client_id,
            clean_session=clean_session,
            keepalive=self._keepalive_s,
            timeout=self._connect_timeout_s,
            logger=_log,
            tls_context=self._tls_context,
        )

    async def _discard_session(self) -> None:
        # MQTT 3.1.1 3.1.2.4: connecting with CleanSession=1 discards any stored session.
        async with self._client(clean_session=True):
            pass

    async def _keep_connected(self) -> None:
        """Background task: connect, restore subscriptions, pump messages, reconnect on loss."""
        delay = self._reconnect_min_s
        ever_connected = False
        try:
            while not self._closing:
                try:
                    if self._persistent_session and not ever_connected:
                        await self._discard_session()
                    client = self._client(clean_session=not self._persistent_session)
                    async with client:
                        _disable_nagle(client)
                        if self._subscriptions:
                            wanted = list(self._subscriptions.items())
                            granted = await client.subscribe(wanted)
                            _raise_if_refused(granted, [name for name, _ in wanted], self.url)
                        connection = _Connection(client)
                        if ever_connected:
                            self.stats.reconnects += 1
                            _log.warning("bus %s: reconnected to %s", self.client_id, self.url)
                        ever_connected = True
                        delay = self._reconnect_min_s
                        self._connection = connection
                        self._disconnected.clear()
                        self._connected.set()
                        try:
                            await self._pump(client)
                        finally:
                            self._connection = None
                            self._connected.clear()
                            self._disconnected.set()
                            if not self._closing:
                                self.stats.disconnects += 1
                            connection.lost.set()
                except (aiomqtt.MqttError, OSError) as exc:
                    self._last_error = exc
                    _log.info("bus %s: connection to %s failed: %s", self.client_id, self.url, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2.0, self._reconnect_max_s)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            # A bug or a refused subscription: end the stream loudly rather than hang readers.
            self._failure = exc
            self._connected.set()
            self._incoming.put_nowait(_CLOSED)
            raise

    async def _pump(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload
            if isinstance(payload, bytearray):
                payload = bytes(payload)
            elif not isinstance(payload, bytes):
                # paho hands us bytes for every message; an empty payload may arrive as None.
                payload = b"" if payload is None else str(payload).encode("utf-8")
            self.stats.received_messages += 1
            self.stats.received_bytes += len(payload)
            self._incoming.put_nowait(BusMessage(topic=message.topic.value, payload=payload))

    async def _wait_connection(self, deadline: float, what: str) -> _Connection:
        loop = asyncio.get_running_loop()
        while True:
            if self._failure is not None:
                raise ConnectionError(f"{what} on {self.url}: bus failed: {self._failure}")
            if self._supervisor is None:
                raise ConnectionError(f"{what} on {self.url}: the bus is not open")
            connection = self._connection
            if connection is not None:
                return connection
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ConnectionError(
                    f"{what}: MQTT broker {self.url} not reachable within "
                    f"{self._publish_timeout_s:g} s (last error: {self._last_error})"
                )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._connected.wait()

    async def _unless_lost(self, connection: _Connection, operation: Awaitable[_T]) -> _T:
        """Await an operation on a connection, failing fast if that connection goes down."""
        operation_task = asyncio.ensure_future(operation)
        lost_task = asyncio.ensure_future(connection.lost.wait())
        try:
            await asyncio.wait({operation_task, lost_task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (operation_task, lost_task):
                if not task.done():
                    task.cancel()
            await asyncio.gather(operation_task, lost_task, return_exceptions=True)
        if operation_task.done() and not operation_task.cancelled():
            return operation_task.result()
        raise _ConnectionLost("connection lost during the operation")

    async def _pause_after_failure(self, connection: _Connection, deadline: float) -> None:
        # Wait for the failed connection to be noticed as lost, but never spin or overrun.
        remaining = deadline - asyncio.get_running_loop().time()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, min(remaining, 1.0))):
                await connection.lost.wait()


def _raise_if_refused(granted: object, topic_filters: list[str], url: str) -> None:
    """Raise SubscriptionRefusedError if the broker refused (SUBACK 0x80) a subscription."""
    codes = list(granted) if isinstance(granted, list | tuple) else []
    for topic_filter, code in zip(topic_filters, codes, strict=False):
        value = getattr(code, "value", code)
        if isinstance(value, int) and value >= 0x80:
            raise SubscriptionRefusedError(
                f"broker {url} refused the subscription to {topic_filter!r}"
            )


def _disable_nagle(client: aiomqtt.Client) -> None:
    """Send small packets at once (TCP_NODELAY). With Nagle's algorithm on, a QoS 1 PUBACK
    waits for the peer's delayed ACK (~40 ms each way), so every request/response exchange
    (a Cascade round, say) took ~90 ms on loopback instead of ~1 ms. The broker needs the
    same (Mosquitto: `set_tcp_nodelay true`)."""
    # aiomqtt exposes no socket option; paho's socket() is the one public way to the socket
    sock = client._client.socket()
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
