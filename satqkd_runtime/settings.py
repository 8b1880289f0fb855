"""What the daemons' settings share: how they are validated and the rules common to both.

Each daemon declares its settings once, beside it (`satqkd_payload.settings`,
`satqkd_ogs.settings`), as frozen pydantic dataclasses: defaults and allowed ranges in one place,
checked whenever settings are built (from a profile by the app, by `dataclasses.replace`, or
directly in a test). The app's configuration models compose these classes for the sections of
the mission and station profiles that set them, so a YAML file and a daemon built in code obey
the same rules.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field

__all__ = ["SETTINGS_CONFIG", "HousekeepingPeriod", "Seconds"]

#: pydantic configuration of every settings class: an unknown name is an error, not ignored
SETTINGS_CONFIG = ConfigDict(extra="forbid")

#: a positive, finite duration in seconds (up to a day)
Seconds = Annotated[float, Field(gt=0.0, le=86_400.0, allow_inf_nan=False)]

#: period of a node's housekeeping telemetry, seconds
HousekeepingPeriod = Annotated[float, Field(gt=0.0, le=3600.0, allow_inf_nan=False)]
