"""The base of every driver's options model: what a bench entry's `options:` block may hold.

Each driver declares its user-settable constructor options once, as a pydantic model beside its
class; the instrument registry (`drivers.registry`) names the model, so a bench file is
validated against exactly what the driver accepts, with its defaults.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class DriverOptions(BaseModel):
    """Options of a driver with none to set (the base of every driver's options model)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
