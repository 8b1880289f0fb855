"""Running a long-lived command until SIGINT or SIGTERM: the work is cancelled, so its
`finally` blocks and async exit stacks put every instrument in its safe state and close it."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Coroutine
from typing import Any


async def run_until_signalled(work: Coroutine[Any, Any, None]) -> None:
    """Control: run `work`; SIGINT or SIGTERM cancels it, and the cancellation ends here."""
    task = asyncio.create_task(work)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task
