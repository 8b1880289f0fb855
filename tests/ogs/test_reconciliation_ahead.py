"""What error correction needs regardless of the pass's key is loaded while the pass runs, not
after LOS (decision 0039): both ends' `prepare_reconciliation` loads the LDPC mother codes in a
worker thread for an LDPC mission, does nothing for Cascade, and logs (does not raise) a load
that fails, which the exchange after LOS then meets again."""

from __future__ import annotations

import logging
import threading
from types import SimpleNamespace

import pytest

from satqkd_ogs.reconciliation import Reconciliation
from satqkd_payload.session import PayloadSession
from tests.protocol_params import jinan1_params


def _station(reconciliation: str) -> SimpleNamespace:
    return SimpleNamespace(params=jinan1_params(reconciliation), plan=SimpleNamespace(plan_id=7))


def _payload(reconciliation: str) -> SimpleNamespace:
    return SimpleNamespace(params=jinan1_params(reconciliation), plan_id=7)


ENDS = [
    pytest.param("satqkd_ogs.reconciliation", Reconciliation, _station, id="station"),
    pytest.param("satqkd_payload.session", PayloadSession, _payload, id="payload"),
]


@pytest.mark.parametrize(("module", "cls", "make"), ENDS)
async def test_an_ldpc_mission_loads_its_codes_off_the_event_loop(
    monkeypatch: pytest.MonkeyPatch, module: str, cls: type, make
) -> None:
    threads: list[int] = []
    monkeypatch.setattr(f"{module}.mother_codes", lambda: threads.append(threading.get_ident()))
    await cls.prepare_reconciliation(make("ldpc"))
    assert len(threads) == 1 and threads[0] != threading.get_ident()
    await cls.prepare_reconciliation(make("cascade"))
    assert len(threads) == 1  # Cascade has nothing to load


@pytest.mark.parametrize(("module", "cls", "make"), ENDS)
async def test_a_code_load_that_fails_is_logged_not_raised(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    module: str,
    cls: type,
    make,
) -> None:
    def broken() -> None:
        raise OSError("r91_n64k.npz: unreadable")

    monkeypatch.setattr(f"{module}.mother_codes", broken)
    with caplog.at_level(logging.ERROR):
        await cls.prepare_reconciliation(make("ldpc"))
    assert "plan 7: LDPC codes not loaded ahead: r91_n64k.npz: unreadable" in caplog.text
