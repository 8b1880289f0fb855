"""Declarative instrument command sets and the driver base class they run on.

A driver declares each command once, as in PyMeasure's `Instrument.control`: the get and set
command, a validator (range or discrete set), a value mapping or parser, and units. Because
drivers are async, a declared property is used as `await ptu.pan_speed.get()` and
`await ptu.pan_speed.set(1000)`. Its docstring begins with Control, Measure, Get or Set.

`CommandInstrument` is the common life cycle under every concrete driver: connect with a
timeout and an identity check, one exchange at a time, reconnect with exponential backoff when
the link drops, resynchronise after a timeout, and count what happened (F Prime style): commands
sent, instrument errors, timeouts, reconnects and `garbled_replies`.
"""

from __future__ import annotations

import asyncio
import math
import re
from abc import abstractmethod
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from drivers.interfaces import (
    Device,
    DeviceDisconnected,
    DeviceError,
    DeviceStatus,
    DeviceTimeout,
)
from drivers.transport import Transport
from satqkd_core.errors import InputError

DOC_PREFIXES = ("Control", "Measure", "Get", "Set")


# --- validators --------------------------------------------------------------------------------


def strict_range(value: Any, bounds: tuple[float, float], what: str) -> float:
    """Get `value` as a float if it lies in the closed interval `bounds`; InputError otherwise."""
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"{what}: expected a number in [{low:g}, {high:g}], got {value!r}")
    if not math.isfinite(value) or not low <= value <= high:
        raise InputError(f"{what}: {value!r} is outside [{low:g}, {high:g}]")
    return value


def strict_int_range(value: Any, bounds: tuple[int, int], what: str) -> int:
    """Get `value` as an int if it is a whole number in `bounds`; InputError otherwise."""
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise InputError(f"{what}: expected a whole number in [{low}, {high}], got {value!r}")
    if not low <= value <= high:
        raise InputError(f"{what}: {value!r} is outside [{low}, {high}]")
    return int(value)


def strict_discrete_set(value: Any, allowed: Iterable[Any], what: str) -> Any:
    """Get `value` if it is one of `allowed`; InputError otherwise."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise InputError(f"{what}: {value!r} is not one of {list(allowed)}")
    return value


Validator = Callable[[Any, Any, str], Any]


# --- declared commands -------------------------------------------------------------------------


@dataclass(frozen=True)
class CommandSpec:
    """One declared command: what to send, how to check the value, how to read the reply."""

    doc: str
    get_command: str | None = None
    set_command: str | None = None
    validator: Validator | None = None
    values: Any = None
    map_values: Mapping[Any, str] | None = None
    get_process: Callable[[str], Any] | None = None
    set_process: Callable[[Any], Any] | None = None
    units: str = ""


class CommandProperty:
    """A declared instrument command, bound per driver instance to async `get` / `set`."""

    def __init__(self, spec: CommandSpec) -> None:
        doc = spec.doc.strip()
        if not doc.startswith(DOC_PREFIXES):
            raise TypeError(f"command docstring must begin with {DOC_PREFIXES}, got {doc!r}")
        if spec.get_command is None and spec.set_command is None:
            raise TypeError("a command property needs a get command, a set command or both")
        self.spec = spec
        self.__doc__ = doc
        self.name = "<unbound>"

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        return BoundCommand(self, instance)

    @property
    def readable(self) -> bool:
        """Get: whether the property has a get command."""
        return self.spec.get_command is not None

    @property
    def writable(self) -> bool:
        """Get: whether the property has a set command."""
        return self.spec.set_command is not None


class BoundCommand:
    """A declared command on one driver: `await get(**params)`, `await set(value, **params)`."""

    def __init__(self, prop: CommandProperty, driver: CommandInstrument) -> None:
        self._prop = prop
        self._driver = driver
        self.__doc__ = prop.__doc__

    @property
    def units(self) -> str:
        """Get: the units of the value."""
        return self._prop.spec.units

    def _what(self) -> str:
        units = f" ({self.units})" if self.units else ""
        return f"{self._driver.name}.{self._prop.name}{units}"

    def encode(self, value: Any, **params: Any) -> str:
        """Get: the command text that would set `value` (validated)."""
        spec = self._prop.spec
        if spec.set_command is None:
            raise InputError(f"{self._what()} is read-only")
        if spec.validator is not None:
            value = spec.validator(value, spec.values, self._what())
        if spec.map_values is not None:
            if value not in spec.map_values:
                raise InputError(f"{self._what()}: {value!r} is not one of {list(spec.map_values)}")
            value = spec.map_values[value]
        if spec.set_process is not None:
            value = spec.set_process(value)
        return spec.set_command.format(value, **params)

    def decode(self, command: str, reply: str) -> Any:
        """Get: the value a reply means; DeviceError (counted as garbled) if it does not parse."""
        spec = self._prop.spec
        try:
            if spec.map_values is not None:
                inverse = {wire: value for value, wire in spec.map_values.items()}
                value = inverse[reply.strip()]
            else:
                value = reply.strip()
            if spec.get_process is not None:
                value = spec.get_process(value)
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            why = f"not a valid {self._prop.name}: {exc}"
            raise self._driver.garbled(command, reply, why) from None
        return value

    async def get(self, **params: Any) -> Any:
        """Measure: query the instrument and parse the reply."""
        spec = self._prop.spec
        if spec.get_command is None:
            raise InputError(f"{self._what()} is write-only")
        command = spec.get_command.format(**params)
        reply = await self._driver.ask(command)
        return self.decode(command, reply)

    async def set(self, value: Any, **params: Any) -> None:
        """Control: validate, encode and send the value."""
        await self._driver.send(self.encode(value, **params))


def control(
    get_command: str,
    set_command: str,
    doc: str,
    *,
    validator: Validator | None = None,
    values: Any = None,
    map_values: Mapping[Any, str] | None = None,
    get_process: Callable[[str], Any] | None = None,
    set_process: Callable[[Any], Any] | None = None,
    units: str = "",
) -> CommandProperty:
    """Get: a read-write declared command."""
    return CommandProperty(
        CommandSpec(
            doc,
            get_command,
            set_command,
            validator,
            values,
            map_values,
            get_process,
            set_process,
            units,
        )
    )


def measurement(
    get_command: str,
    doc: str,
    *,
    map_values: Mapping[Any, str] | None = None,
    get_process: Callable[[str], Any] | None = None,
    units: str = "",
) -> CommandProperty:
    """Get: a read-only declared command."""
    return CommandProperty(
        CommandSpec(doc, get_command, None, None, None, map_values, get_process, None, units)
    )


def setting(
    set_command: str,
    doc: str,
    *,
    validator: Validator | None = None,
    values: Any = None,
    map_values: Mapping[Any, str] | None = None,
    set_process: Callable[[Any], Any] | None = None,
    units: str = "",
) -> CommandProperty:
    """Get: a write-only declared command."""
    return CommandProperty(
        CommandSpec(doc, None, set_command, validator, values, map_values, None, set_process, units)
    )


def declared_commands(cls: type) -> dict[str, CommandProperty]:
    """Get: every declared command of a driver class, by attribute name (inherited included)."""
    found: dict[str, CommandProperty] = {}
    for klass in reversed(cls.__mro__):
        for name, value in vars(klass).items():
            if isinstance(value, CommandProperty):
                found[name] = value
    return found


# --- the driver base -----------------------------------------------------------------------------


@dataclass
class DriverCounters:
    """What a driver has seen since connect (or the last reset)."""

    commands_sent: int = 0
    instrument_errors: int = 0
    garbled_replies: int = 0
    timeouts: int = 0
    reconnects: int = 0
    stale_bytes_discarded: int = 0

    def as_dict(self) -> dict[str, int]:
        """Get: the counters as a plain mapping."""
        return dict(vars(self))


class CommandInstrument(Device):
    """A driver speaking a text command set over a Transport (one exchange at a time)."""

    #: regular expression the identity reply must match (checked at connect)
    identity_pattern: ClassVar[str] = ".+"
    #: read and discard stray input before every command (protocols with unsolicited events)
    drain_before_command: ClassVar[bool] = False

    def __init__(
        self,
        name: str,
        transport: Transport,
        *,
        timeout_s: float = 1.0,
        reconnect_attempts: int = 4,
        reconnect_backoff_s: float = 0.05,
        reconnect_backoff_max_s: float = 2.0,
    ) -> None:
        super().__init__(name)
        if not (math.isfinite(timeout_s) and timeout_s > 0):
            raise InputError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
        if reconnect_attempts < 0:
            raise InputError(f"reconnect_attempts must be >= 0, got {reconnect_attempts!r}")
        if not reconnect_backoff_s > 0 or reconnect_backoff_max_s < reconnect_backoff_s:
            raise InputError(
                "reconnect_backoff_s must be > 0 and <= reconnect_backoff_max_s, got "
                f"{reconnect_backoff_s!r} and {reconnect_backoff_max_s!r}"
            )
        self.transport = transport
        self.timeout_s = float(timeout_s)
        self.reconnect_attempts = int(reconnect_attempts)
        self.reconnect_backoff_s = float(reconnect_backoff_s)
        self.reconnect_backoff_max_s = float(reconnect_backoff_max_s)
        self.identity = ""
        self.counters = DriverCounters()
        # the most recent backoff delays, for status and tests (bounded: daemons run for months)
        self.reconnect_delays_s: deque[float] = deque(maxlen=64)
        self._lock = asyncio.Lock()
        self._resync_needed = False

    @property
    def garbled_replies(self) -> int:
        """Get: how many replies did not parse since connect."""
        return self.counters.garbled_replies

    @property
    def connected(self) -> bool:
        """Get: whether the transport is open."""
        return bool(self.transport.connected)

    def _label(self) -> str:
        return f"{self.name} ({self.transport.name})"

    # --- protocol hooks (each driver frames its own command set) ---------------------------

    @abstractmethod
    async def _transact(self, command: str, expect_reply: bool) -> str:
        """Control: send one command and return its reply text ('' when none is expected)."""

    @abstractmethod
    async def _handshake(self) -> str:
        """Control: query the identity (pass it through `_check_identity` at once), read what
        the driver needs (limits, resolution) and return the identity."""

    @abstractmethod
    async def _make_safe(self) -> None:
        """Control: leave the instrument in its safe state (called by close)."""

    @abstractmethod
    async def _health(self) -> tuple[bool, dict[str, Any]]:
        """Measure: whether the instrument is healthy, and readings that show it."""

    def _on_stale_input(self, data: bytes) -> None:
        """Control: handle bytes that arrived outside an exchange (default: count, discard)."""
        self.counters.stale_bytes_discarded += len(data)

    # --- helpers for drivers -------------------------------------------------------------------

    def garbled(self, command: str, reply: str | bytes, why: str) -> DeviceError:
        """Get: a DeviceError for a reply that does not parse (and count it)."""
        self.counters.garbled_replies += 1
        self._resync_needed = True
        return DeviceError(f"{self._label()}: garbled reply to {command!r}: {reply!r} ({why})")

    def instrument_error(self, command: str, message: str) -> DeviceError:
        """Get: a DeviceError for an error the instrument reported (and count it)."""
        self.counters.instrument_errors += 1
        return DeviceError(f"{self._label()}: {command!r} rejected: {message}")

    async def _read_line(self, terminator: bytes, command: str) -> str:
        raw = await self.transport.read_until(terminator, self.timeout_s)
        try:
            return raw[: -len(terminator)].decode("ascii")
        except UnicodeDecodeError:
            raise self.garbled(command, raw, "not ASCII") from None

    async def _roundtrip(self, command: str, expect_reply: bool) -> str:
        """Control: one counted command/reply (the caller holds the lock)."""
        self.counters.commands_sent += 1
        try:
            return await self._transact(command, expect_reply)
        except DeviceTimeout as exc:
            self.counters.timeouts += 1
            self._resync_needed = True  # a late reply must not answer the next command
            raise DeviceTimeout(
                f"{self._label()}: no reply to {command!r} within {self.timeout_s:g} s"
            ) from exc

    async def _drain(self) -> None:
        while True:
            try:
                stale = await self.transport.read_available(0.0)
            except DeviceTimeout:
                return
            self._on_stale_input(stale)

    # --- exchanges -------------------------------------------------------------------------------

    async def ask(self, command: str) -> str:
        """Measure: send a query and return the reply text."""
        return await self._exchange(command, expect_reply=True)

    async def send(self, command: str, *, idempotent: bool = True) -> None:
        """Control: send a command that has no reply value (errors still raise)."""
        await self._exchange(command, expect_reply=False, idempotent=idempotent)

    async def _exchange(self, command: str, expect_reply: bool, idempotent: bool = True) -> str:
        async with self._lock:
            return await self._exchange_locked(command, expect_reply, idempotent)

    async def _exchange_locked(self, command: str, expect_reply: bool, idempotent: bool) -> str:
        retried = False
        while True:
            try:
                if self._resync_needed or self.drain_before_command:
                    await self._drain()
                    self._resync_needed = False
                return await self._roundtrip(command, expect_reply)
            except DeviceDisconnected as exc:
                if retried:
                    raise
                await self._reconnect_locked(exc)
                if not idempotent:
                    raise DeviceDisconnected(
                        f"{self._label()}: link dropped during {command!r}; reconnected, "
                        "but the command was not repeated (it is not idempotent)"
                    ) from exc
                retried = True

    async def _reconnect_locked(self, cause: BaseException) -> None:
        delay_s = self.reconnect_backoff_s
        last: BaseException = cause
        for _ in range(self.reconnect_attempts):
            await asyncio.sleep(delay_s)
            self.reconnect_delays_s.append(delay_s)
            try:
                await self.transport.open(self.timeout_s)
                self._resync_needed = False
                self.identity = await self._handshake()
            except DeviceError as exc:
                last = exc
                delay_s = min(2.0 * delay_s, self.reconnect_backoff_max_s)
                continue
            self.counters.reconnects += 1
            return
        await self.transport.close()
        raise DeviceDisconnected(
            f"{self._label()}: link lost and not restored after {self.reconnect_attempts} "
            f"attempt(s): {last}"
        ) from cause

    # --- Device life cycle -----------------------------------------------------------------

    async def connect(self, timeout_s: float = 5.0) -> None:
        """Control: open the transport and check the instrument's identity."""
        try:
            async with asyncio.timeout(timeout_s), self._lock:
                await self.transport.open(timeout_s)
                self._resync_needed = False
                self.identity = await self._handshake()
        except TimeoutError as exc:  # DeviceTimeout included
            await self.transport.close()
            if isinstance(exc, DeviceTimeout):
                raise self._named(exc) from None
            raise DeviceTimeout(f"{self._label()}: did not answer within {timeout_s:g} s") from None
        except DeviceError as exc:
            await self.transport.close()
            raise self._named(exc) from None

    def _check_identity(self, identity: str) -> str:
        """Get: the identity if it matches `identity_pattern`; DeviceError otherwise.

        Handshakes call this straight after the identity query, before sending anything that
        a different instrument on the same port might misunderstand.
        """
        if not re.search(self.identity_pattern, identity):
            self.counters.instrument_errors += 1
            raise DeviceError(
                f"{self._label()}: identity {identity!r} is not the expected instrument "
                f"(pattern {self.identity_pattern!r})"
            )
        return identity

    def _named(self, exc: DeviceError) -> DeviceError:
        """Get: the error with this device's name in front, unless it already names it."""
        message = str(exc)
        if message.startswith(self.name):
            return exc
        return type(exc)(f"{self.name}: {message}")

    async def close(self) -> None:
        """Control: put the instrument in its safe state, then release the transport."""
        try:
            if self.transport.connected:
                await self._make_safe()
        except DeviceError:
            pass  # the link is going away anyway; the instrument's own watchdog takes over
        finally:
            await self.transport.close()

    async def status(self) -> DeviceStatus:
        """Measure: identity, health verdict and readings (never raises for a sick instrument)."""
        detail: dict[str, Any] = {}
        healthy = False
        if self.transport.connected:
            try:
                healthy, detail = await self._health()
            except DeviceError as exc:
                detail = {"error": str(exc)}
        else:
            detail = {"error": "not connected"}
        detail["counters"] = self.counters.as_dict()
        return DeviceStatus(self.name, self.identity, self.transport.connected, healthy, detail)

    def reset_counters(self) -> None:
        """Control: zero the counters (F Prime RESET-COUNTERS)."""
        self.counters = DriverCounters()


def parse_float(text: str) -> float:
    """Get: a finite float from a reply field (ValueError otherwise)."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not finite")
    return value


def parse_int(text: str) -> int:
    """Get: an int from a reply field (ValueError otherwise)."""
    return int(text.strip())
