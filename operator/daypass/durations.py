"""Go-style durations ("90s", "30m", "1h30m"), as the CRDs and the command line write them.

Parsing is durationpy's; this module only adds the rules Daypass needs on top: no negative
and no zero durations, and messages that say what a valid duration looks like.
"""

from __future__ import annotations

import re
from datetime import timedelta

import durationpy

# The same grammar the CRDs check at apply time: Go's units only, no sign, no days or weeks.
# durationpy alone also takes "1d", "1w" and "1h 30m", which the API server would refuse.
_GO_DURATION = re.compile(r"([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+")


class DurationError(ValueError):
    """A duration that is malformed, zero, negative or out of range."""


def parse_duration(text: str) -> timedelta:
    """Parse a Go-style duration; only positive durations are valid."""
    written = text.strip()
    if written.startswith("-"):
        raise DurationError(f"{text!r} is not a positive duration: write it like 90s, 30m or 1h30m")
    if not _GO_DURATION.fullmatch(written):
        raise DurationError(f"{text!r} is not a duration: write it like 90s, 30m or 1h30m")
    try:
        value = durationpy.from_str(written)
    except (durationpy.DurationError, ValueError, OverflowError) as error:
        raise DurationError(f"{text!r} is out of range: write it like 90s, 30m or 1h30m") from error
    if value <= timedelta(0):
        raise DurationError(f"{text!r} is not a positive duration: write it like 90s, 30m or 1h30m")
    return value


def format_duration(value: timedelta) -> str:
    """Write a duration the way a person would: 30m, 1h30m, 20s."""
    return str(durationpy.to_str(value))
