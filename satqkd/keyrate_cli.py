"""`satqkd keyrate estimate FILE.json`: finite-key length from observed decoy-state counts,
given as a counts request (docs/keyrate.md) or as a pass's report.json (its counts taken as
docs/keyrate.md describes)."""

from __future__ import annotations

import json
import math
import os
import stat
import sys
from typing import Any

from satqkd_core.errors import InputError
from satqkd_core.finite_key import finite_key_length, parse_keyrate_request

_PREFIX = "satqkd keyrate estimate: "
EXIT_OK = 0
EXIT_USAGE = 2
MAX_BYTES = 4 * 1024 * 1024  # a counts file is a few hundred bytes


def _error(message: str) -> int:
    print(_PREFIX + message, file=sys.stderr)
    return EXIT_USAGE


def _observed_error_rate(errors: tuple[int, ...], detections: tuple[int, ...]) -> float:
    total = sum(detections)
    return sum(errors) / total if total else 0.0


def keyrate_estimate_from_request(request: Any) -> dict[str, Any]:
    """Return the result object for a keyrate request (docs/keyrate.md) (raises InputError)."""
    stats, eps_sec, eps_cor, leak_ec_bits, bounds = parse_keyrate_request(request)
    result = finite_key_length(stats, eps_sec, eps_cor, leak_ec_bits, bounds)
    out = result.as_dict()
    # Context a reader needs to judge the result without the input file at hand.
    out.update(
        {
            "n_x": sum(stats.x_detections),
            "n_z": sum(stats.z_detections),
            "qber_x": _observed_error_rate(stats.x_errors, stats.x_detections),
            "qber_z": _observed_error_rate(stats.z_errors, stats.z_detections),
            "leak_ec_bits": leak_ec_bits,
            "eps_sec": eps_sec,
            "eps_cor": eps_cor,
            "reference": "Lim, Curty, Walenta, Xu, Zbinden, PRA 89, 022307 (2014), Eqs. (1)-(5)",
        }
    )
    return out


REPORT_SCHEMA_PREFIX = "satqkd.pass-report/"


def _report_field(report: Any, *path: str | int) -> Any:
    value = report
    for part in path:
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            value = None
        if value is None:
            name = ".".join(str(p) for p in path)
            raise InputError(f"report: {name} is missing (null or absent): no counts to estimate")
    return value


def request_from_report(report: Any) -> dict[str, Any]:
    """Get: the counts request (docs/keyrate.md) of a pass report: counts per intensity from
    quantum.by_intensity, probabilities from the pulses sent at each intensity, eps_sec and
    eps_cor from the epsilon budget, leak_ec_bits as the leak plus the verification tag
    (InputError naming the field a report lacks)."""
    rows = _report_field(report, "quantum", "by_intensity")
    if not isinstance(rows, list) or len(rows) != 3:
        raise InputError("report: quantum.by_intensity must have 3 rows (signal, decoy, vacuum)")
    x_known = bool(report["quantum"].get("x_errors_known"))

    def column(name: str) -> list[Any]:
        return [_report_field(rows, k, name) for k in range(3)]

    sent = column("sent")
    total_sent = sum(sent) if all(isinstance(s, int) for s in sent) else 0
    if total_sent <= 0:
        raise InputError("report: quantum.by_intensity[].sent must be pulse counts, not all 0")
    z_errors = column("z_errors")
    x_errors = (
        [e - z for e, z in zip(column("errors"), z_errors, strict=True)] if x_known else [0] * 3
    )
    terms = {
        row.get("term"): row.get("epsilon")
        for row in _report_field(report, "postprocessing", "epsilon_budget", "terms")
        if isinstance(row, dict)
    }
    try:
        eps_sec = float(terms["parameter_estimation"]) + float(terms["privacy_amplification"])
        eps_cor = float(terms["verification"])
    except (KeyError, TypeError, ValueError):
        raise InputError(
            "report: postprocessing.epsilon_budget.terms lacks parameter_estimation, "
            "privacy_amplification or verification"
        ) from None
    pp = report["postprocessing"]
    leak = _report_field(pp, "leak_ec_bits") + _report_field(pp, "verification_tag_bits")
    return {
        "intensities": column("mu"),
        "probabilities": [s / total_sent for s in sent],
        "x": {"detections": column("x_detections"), "errors": x_errors},
        "z": {"detections": column("z_detections"), "errors": z_errors},
        "eps_sec": eps_sec,
        "eps_cor": eps_cor,
        "leak_ec_bits": leak,
        "bounds": (pp.get("finite_key") or {}).get("bounds", "hoeffding"),
    }


def run_keyrate_estimate(path: str) -> int:
    """Print the finite-key estimate for the request in the JSON file at path; return exit code."""
    try:
        text = _read_bounded(path)
    except FileNotFoundError:
        return _error(f"{path}: no such file")
    except IsADirectoryError:
        return _error(f"{path}: is a directory, not a JSON file")
    except PermissionError:
        return _error(f"{path}: permission denied")
    except UnicodeDecodeError:
        return _error(f"{path}: not UTF-8 text")
    except OSError as exc:
        return _error(f"{path}: cannot read ({exc.strerror or exc})")
    except ValueError as exc:  # not a regular file, or too large
        return _error(f"{path}: {exc}")
    try:
        # Reject NaN/Infinity literals: they are not JSON and no count or epsilon may be one.
        request = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        return _error(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}")
    except InputError as exc:
        return _error(f"{path}: {exc}")
    except RecursionError:
        return _error(f"{path}: invalid JSON: nested too deeply")
    except ValueError as exc:  # e.g. an integer literal of thousands of digits
        return _error(f"{path}: invalid JSON: {' '.join(str(exc).split())[:120]}")
    try:
        schema = request.get("schema") if isinstance(request, dict) else None
        if isinstance(schema, str) and schema.startswith(REPORT_SCHEMA_PREFIX):
            request = request_from_report(request)
        out = keyrate_estimate_from_request(request)
    except InputError as exc:
        return _error(str(exc))
    except (OverflowError, ZeroDivisionError, ValueError):
        return _error("the bounds cannot be computed for these counts")
    if not all(math.isfinite(v) for v in out.values() if isinstance(v, float)):
        return _error("the bounds are not finite for these counts")
    print(json.dumps(out, indent=2))
    return EXIT_OK


def _read_bounded(path: str) -> str:
    """The UTF-8 text of a regular file of at most MAX_BYTES (never /dev/zero or a FIFO)."""
    info = os.stat(path)
    if stat.S_ISDIR(info.st_mode):
        raise IsADirectoryError(path)
    if not stat.S_ISREG(info.st_mode):
        raise ValueError("not a regular file")
    with open(path, "rb") as handle:
        data = handle.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise ValueError(f"larger than {MAX_BYTES} bytes")
    return data.decode("utf-8")


def _reject_constant(name: str) -> float:
    raise InputError(f"invalid JSON constant {name}")
