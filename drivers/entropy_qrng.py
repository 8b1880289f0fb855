"""A quantum random number generator that streams raw bytes over USB serial (CDC) or TCP.

Devices of the TrueRNG / OneRNG kind need no command: once the port is open they stream random
bytes as fast as the link takes them. The bytes are raw noise-source output, not full entropy:
the bench states their assessed min-entropy `min_entropy_bits_per_byte` (H, from an SP 800-90B
assessment of the device; there is no default, a wrong guess would silently weaken every key).

What the driver does with the stream (drivers/entropy_health.py has the standard's details):

- a pump task reads the stream as it arrives and runs the continuous health tests of NIST
  SP 800-90B section 4.4 on every raw byte that may become output: the Repetition Count Test
  (4.4.1) and the Adaptive Proportion Test (4.4.2, W = 512 for byte samples), with cutoffs for
  the stated H at alpha = 2^-40 by default (`alpha_exponent`, 20..40);
- `connect` returns once the start-up test (section 4.3) has passed over the first 1024 bytes,
  which are then discarded;
- tested bytes wait in a bounded pool (`pool_bytes`); while it is full, arriving bytes are
  dropped untested (they can never become output), so an idle node holds no growing buffer
  and its false-alarm rate follows what it draws, not how long it idles;
- `read(n, purpose)` takes ceil(n / 32) * ceil(320 / H) raw bytes from the pool, in order,
  never twice, and returns the first n bytes of the SHA-256 digests of consecutive
  ceil(320 / H)-byte chunks (vetted conditioning, SP 800-90B 3.1.5.1.1; 256 + 64 bits of
  min-entropy in per 256 bits out, SP 800-90C's condition for full-entropy output).

Any failure (a health test, a lost link, no byte within the read timeout while a read waits)
is sticky: every later `read` raises the same EntropyFailure until `close()` and `connect()`.
"""

from __future__ import annotations

import asyncio
import math
from typing import Annotated

from pydantic import Field

from drivers.entropy import DrawCounter, check_draw
from drivers.entropy_health import (
    OUTPUT_BLOCK_BYTES,
    STARTUP_SAMPLES,
    HealthTests,
    condition_sha256,
    raw_bytes_per_block,
)
from drivers.interfaces import (
    DeviceDisconnected,
    DeviceError,
    DeviceStatus,
    DeviceTimeout,
    EntropyFailure,
    EntropySource,
)
from drivers.options import DriverOptions
from drivers.transport import Transport
from drivers.transport_base import _check_timeout
from satqkd_core.errors import InputError

__all__ = ["SerialQrng", "SerialQrngOptions"]

QRNG_ALPHA_EXPONENT = 40  # the driver's default false-positive exponent (see alpha_exponent)
_POOL_MIN_BYTES = 4096
_POOL_MAX_BYTES = 64 << 20
_PUMP_POLL_S = 0.5


class SerialQrngOptions(DriverOptions):
    """Options of a streaming QRNG: its assessed raw min-entropy (required) and the pool."""

    #: assessed min-entropy H of one raw byte, 0 < H <= 8 (SP 800-90B assessment of the device)
    min_entropy_bits_per_byte: Annotated[float, Field(gt=0.0, le=8.0)]
    #: tested raw bytes held ready for reads
    pool_bytes: Annotated[int, Field(ge=_POOL_MIN_BYTES, le=_POOL_MAX_BYTES)] = 1 << 20
    #: the health tests' false-positive rate per sample is 2^-alpha_exponent (SP 800-90B: 20
    #: to 40). 40 by default: a pass draws megabytes and a failure is sticky, so at 2^-20 a
    #: perfect source would stop about once per pass
    alpha_exponent: Annotated[int, Field(ge=20, le=40)] = QRNG_ALPHA_EXPONENT


class SerialQrng(EntropySource):
    """A streaming QRNG behind health tests and SHA-256 conditioning (see the module)."""

    def __init__(
        self,
        name: str,
        transport: Transport,
        *,
        min_entropy_bits_per_byte: float,
        timeout_s: float = 1.0,
        pool_bytes: int = 1 << 20,
        alpha_exponent: int = QRNG_ALPHA_EXPONENT,
    ) -> None:
        super().__init__(name)
        if not isinstance(transport, Transport):
            raise InputError(f"{name}: transport must be a Transport, got {transport!r}")
        if (
            isinstance(pool_bytes, bool)
            or not isinstance(pool_bytes, int)
            or not (_POOL_MIN_BYTES <= pool_bytes <= _POOL_MAX_BYTES)
        ):
            raise InputError(
                f"{name}: pool_bytes must be an int in {_POOL_MIN_BYTES}..{_POOL_MAX_BYTES}, "
                f"got {pool_bytes!r}"
            )
        self.transport = transport
        self.timeout_s = _check_timeout(timeout_s)
        if self.timeout_s == 0.0:
            raise InputError(f"{name}: timeout_s must be > 0")
        # the first monitor validates H and alpha; a new one is made at each connect
        self._health = HealthTests(
            min_entropy_bits_per_byte, alpha_exponent=alpha_exponent, label=self._label()
        )
        self.min_entropy_bits_per_byte = self._health.h
        self.alpha_exponent = alpha_exponent
        self.raw_bytes_per_block = raw_bytes_per_block(self._health.h)
        self.pool_bytes = pool_bytes
        self.raw_bytes_dropped = 0
        self._pool = bytearray()
        self._arrived = asyncio.Event()
        self._read_lock = asyncio.Lock()
        self._pump_task: asyncio.Task[None] | None = None
        # the pump also stops on this flag: wait_for in Python 3.11 can swallow a cancellation
        # that lands as data arrives, and a fast stream makes that likely
        self._pumping = False
        self._failure: EntropyFailure | None = None
        self._connected = False
        self._counter = DrawCounter()

    def _label(self) -> str:
        return f"{self.name} ({self.transport.name})"

    # --- life cycle ----------------------------------------------------------------------------

    @property
    def seeded(self) -> bool:
        """Get: False: a physical noise source."""
        return False

    @property
    def health(self) -> HealthTests:
        """Get: the health tests of the current connection (cutoffs, samples tested)."""
        return self._health

    @property
    def failure(self) -> EntropyFailure | None:
        """Get: the failure that stopped the source since the last connect, if any."""
        return self._failure

    async def connect(self, timeout_s: float = 5.0) -> None:
        """Control: open the stream, restart the health tests and wait for the start-up test
        over the first 1024 bytes (EntropyFailure if it fails, DeviceTimeout if the bytes do
        not arrive within `timeout_s`)."""
        timeout_s = _check_timeout(timeout_s)
        await self._stop()
        self._health = HealthTests(
            self.min_entropy_bits_per_byte, alpha_exponent=self.alpha_exponent,
            label=self._label(),
        )  # fmt: skip
        self._failure = None
        self._pool.clear()
        self.raw_bytes_dropped = 0
        self._arrived = asyncio.Event()
        await self.transport.open(timeout_s)
        self._connected = True
        self._pumping = True
        self._pump_task = asyncio.create_task(self._pump(), name=f"pump {self.name}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not self._health.started:
            failure = self.failure  # set by the pump meanwhile
            if failure is not None:
                await self._stop()
                raise failure
            remaining = deadline - loop.time()
            self._arrived.clear()
            try:
                async with asyncio.timeout(max(remaining, 0.0)):  # not wait_for (issue 13)
                    await self._arrived.wait()
            except TimeoutError:
                tested = self._health.samples_tested
                await self._stop()
                raise DeviceTimeout(
                    f"{self._label()}: start-up test needs {STARTUP_SAMPLES} bytes, "
                    f"{tested} arrived within {timeout_s:g} s"
                ) from None

    async def close(self) -> None:
        """Control: stop the pump and close the port (a failure is forgotten at connect)."""
        await self._stop()

    async def _stop(self) -> None:
        self._connected = False
        self._pumping = False
        caller_cancelled = False
        task, self._pump_task = self._pump_task, None
        if task is not None:
            current = asyncio.current_task()
            cancels_before = current.cancelling() if current is not None else 0
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                # ours ended as asked; a cancel of the caller meanwhile (its timeout) is not
                # ours to swallow: raised again below, once the rest is closed
                caller_cancelled = current is not None and current.cancelling() > cancels_before
        self._pool.clear()
        self._arrived.set()  # a waiting read wakes up and sees the source closed
        await self.transport.close()
        if caller_cancelled:
            raise asyncio.CancelledError

    async def status(self) -> DeviceStatus:
        """Measure: connection, health-test state and cutoffs (unhealthy once failed)."""
        detail: dict[str, object] = {
            "h_bits_per_byte": self.min_entropy_bits_per_byte,
            "rct_cutoff": self._health.rct_cutoff,
            "apt_cutoff": self._health.apt_cutoff,
            "raw_tested": self._health.samples_tested,
        }
        if self._failure is not None:
            detail["error"] = str(self._failure)
        return DeviceStatus(
            self.name,
            f"streaming QRNG on {self.transport.name}",
            self._connected,
            self._connected and self._failure is None,
            detail,
        )

    # --- the stream ----------------------------------------------------------------------------

    def _fail(self, failure: EntropyFailure) -> EntropyFailure:
        if self._failure is None:
            self._failure = failure
            self._pool.clear()  # nothing drawn after a failure, not even tested bytes
        self._arrived.set()
        return self._failure

    async def _pump(self) -> None:
        """Read the stream, test what may become output, keep it in the pool."""
        try:
            while self._pumping:
                try:
                    chunk = await self.transport.read_available(_PUMP_POLL_S)
                except DeviceTimeout:
                    continue  # a quiet stream is only a failure when a read waits on it
                if self._pumping:
                    self._take(chunk)
        except EntropyFailure as failure:
            self._fail(failure)
        except DeviceError as exc:
            self._fail(EntropyFailure(f"{self._label()}: stream lost: {exc}"))
        except Exception as exc:  # a bug must stop the source, never let it deliver silently
            self._fail(EntropyFailure(f"{self._label()}: stream reader failed: {exc!r}"))

    def _take(self, chunk: bytes) -> None:
        room = self.pool_bytes - len(self._pool)
        startup_left = max(0, STARTUP_SAMPLES - self._health.samples_tested)
        usable = len(chunk) - startup_left
        if usable > room:  # pool full: the excess can never be output; not tested, not kept
            self.raw_bytes_dropped += usable - max(room, 0)
            chunk = chunk[: startup_left + max(room, 0)]
        if not chunk:
            return
        self._health.check(chunk)
        self._pool += chunk[startup_left:]
        self._arrived.set()

    # --- reads ---------------------------------------------------------------------------------

    def _raise_if_unusable(self) -> None:
        if self._failure is not None:
            raise self._failure
        if not self._connected:
            raise DeviceDisconnected(f"{self._label()}: not connected")

    async def read(self, n_bytes: int, purpose: str) -> bytes:
        """Get: `n_bytes` conditioned bytes for `purpose`; EntropyFailure if the source has
        failed or fails meanwhile (then the raw bytes taken are discarded)."""
        prefix = check_draw(n_bytes, purpose)
        self._raise_if_unusable()
        blocks = math.ceil(n_bytes / OUTPUT_BLOCK_BYTES)
        needed = blocks * self.raw_bytes_per_block
        async with self._read_lock:
            raw = bytearray()
            while len(raw) < needed:
                self._raise_if_unusable()
                if self._pool:
                    take = min(needed - len(raw), len(self._pool))
                    raw += self._pool[:take]
                    del self._pool[:take]
                    continue
                self._arrived.clear()
                try:
                    async with asyncio.timeout(self.timeout_s):
                        await self._arrived.wait()
                except TimeoutError:
                    raise self._fail(
                        EntropyFailure(
                            f"{self._label()}: stream stalled: no random byte within "
                            f"{self.timeout_s:g} s; the source stays failed until it is "
                            "reconnected"
                        )
                    ) from None
            self._raise_if_unusable()
        output = condition_sha256(raw, self.raw_bytes_per_block)[:n_bytes]
        self._counter.record(prefix, n_bytes)
        return output

    @property
    def drawn_bytes(self) -> dict[str, int]:
        """Get: bytes delivered so far, by purpose prefix."""
        return self._counter.by_prefix
