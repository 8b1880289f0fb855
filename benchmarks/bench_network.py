"""The network simulation (issue 14, decision 0032).

- fibre_hop_relay_keys_per_s: 256-bit keys carried hop by hop over a 3-hop fibre trusted-node
  route (sim_backends.fibre_network: link keys taken at both ends of each hop from the nodes'
  SQLite key management stores, one-time pad per hop, the key filed at the user), per second;
- network_relay_scenario_wall_s (not with --quick): `satqkd sim network` on
  configs/scenarios/relay-xinglong-graz.yaml, seed 3: planning, two passes flown with the
  daemons (60 s QKD windows), one relay, the report and plots.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from itertools import pairwise
from pathlib import Path

__all__ = ["figures"]

_T0 = 1_796_601_600.0  # 2026-12-07T00:00:00Z
_ROUTE = ("graz", "vienna", "linz", "user")


def _fibre_rate(keys: int) -> float:
    from sim_backends.fibre_network import FibreLinkSpec, FibreNetwork

    with tempfile.TemporaryDirectory() as scratch:
        links = [FibreLinkSpec(a, b, 1e6, 256 * (keys + 1)) for a, b in pairwise(_ROUTE)]
        network = FibreNetwork(
            links, {n: Path(scratch) / n for n in _ROUTE}, seed=1, start_unix_s=_T0
        )
        network.advance_to(_T0 + 60.0)
        started = time.perf_counter()
        for k in range(keys):
            network.deliver("graz", "user", f"bench-{k}", os.urandom(32))
        elapsed = time.perf_counter() - started
        network.close()
    return keys / elapsed


def _relay_scenario_wall_s() -> float:
    from satqkd.cli import main

    scenario = Path(__file__).resolve().parents[1] / "configs/scenarios/relay-xinglong-graz.yaml"
    with tempfile.TemporaryDirectory() as scratch:
        status = main(["sim", "network", str(scenario), "--seed", "3", "--out", scratch, "--quiet"])
        if status != 0:
            raise RuntimeError(f"sim network ended with status {status}")
        return float(json.loads((Path(scratch) / "timing.json").read_text())["wall_s"])


def figures(quick: bool) -> list[dict]:
    """Get the network figures."""
    keys = 50 if quick else 200
    out = [
        {"name": "fibre_hop_relay_keys_per_s", "value": _fibre_rate(keys), "unit": "1/s",
         "params": {"hops": 3, "key_bits": 256, "keys": keys}},
    ]  # fmt: skip
    if not quick:
        out.append(
            {"name": "network_relay_scenario_wall_s", "value": _relay_scenario_wall_s(),
             "unit": "s", "params": {"scenario": "relay-xinglong-graz", "seed": 3}},
        )  # fmt: skip
    return out
