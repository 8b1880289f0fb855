"""Protocol parameters of the tests that build one end of a pass by hand."""

from __future__ import annotations

from satqkd_core.pass_decisions import ProtocolParameters


def jinan1_params(reconciliation: str = "ldpc") -> ProtocolParameters:
    """Jinan-1's decoy intensities and probabilities, with the given reconciliation."""
    return ProtocolParameters(
        intensities=(0.8, 0.1, 0.0),
        probabilities=(0.5, 0.25, 0.25),
        eps_sec=1e-9,
        eps_cor=1e-15,
        qber_abort_threshold=0.11,
        ec_efficiency_estimate=1.16,
        reconciliation=reconciliation,
    )
