"""Run a satqkd daemon that SIGKILLs itself just before it publishes a named message (tests).

    python -m tests.reliability.die_before NAME COUNT payload run ...

runs `satqkd payload run ...` as `python -m satqkd.cli` would, except that the COUNT-th time
(from 1) the process is about to publish a message named NAME (a QKD, telemetry or
telecommand message, or an event as `event:NAME`), it sends itself SIGKILL: the kill lands
at a named protocol step, not after a guessed sleep. What a real SIGKILL leaves happens: no
handler, `finally` or atexit of the daemon runs, the OS closes its sockets, the files it
fsynced are what it leaves. Used by test_kill_at_each_phase.py; the restart runs the plain
command.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from satqkd_core import dictionary as dct
from satqkd_core.codec import decode_envelope
from satqkd_runtime.bus import MessageBus


def message_name(payload: bytes) -> str:
    """Get: the name of an encoded message (events as `event:NAME`), or '' if undecodable."""
    try:
        envelope = decode_envelope(payload)
    except Exception:  # not ours to judge: the daemon publishes what it does
        return ""
    name = envelope.spec.name
    if name == "EVENT":
        name = "event:" + dct.event_by_id(envelope.fields["event_id"]).name
    return name


def arm(name: str, count: int) -> None:
    """Control: make this process SIGKILL itself before its `count`-th publish of `name`."""
    publish = MessageBus.publish
    seen = 0

    async def publish_or_die(self: MessageBus, topic: str, payload: bytes, *a: Any, **k: Any):
        nonlocal seen
        if message_name(payload) == name:
            seen += 1
            if seen == count:
                os.kill(os.getpid(), signal.SIGKILL)
        return await publish(self, topic, payload, *a, **k)

    MessageBus.publish = publish_or_die  # type: ignore[method-assign]


def main(argv: list[str]) -> int:
    """Control: arm the kill, then run the satqkd command line given after NAME COUNT."""
    if len(argv) < 3 or not argv[1].isdigit() or int(argv[1]) < 1:
        print("usage: python -m tests.reliability.die_before NAME COUNT SATQKD-ARGS...")
        return 2
    arm(argv[0], int(argv[1]))
    from satqkd.cli import main as satqkd_main

    return satqkd_main(argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
