"""Durations as policies, requests and the command line write them: Go-style, positive only."""

from __future__ import annotations

from datetime import timedelta

import pytest
from daypass.durations import DurationError, format_duration, parse_duration

HINT = "write it like 90s, 30m or 1h30m"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("30m", timedelta(minutes=30)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1.5h", timedelta(hours=1, minutes=30)),
        ("300ms", timedelta(milliseconds=300)),
        ("4h", timedelta(hours=4)),
        ("1h0m0s", timedelta(hours=1)),
        ("720h", timedelta(days=30)),
    ],
)
def test_go_style_durations_parse(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "forever",
        "",
        "5",  # a number without a unit
        "1d",  # Go has no days; the CRDs refuse them too
        "1w",
        "1h 30m",
        "30 minutes",
    ],
)
def test_malformed_durations_are_rejected_with_an_example_of_a_valid_one(text: str) -> None:
    with pytest.raises(DurationError) as raised:
        parse_duration(text)

    assert f"{text!r} is not a duration" in str(raised.value)
    assert HINT in str(raised.value)


@pytest.mark.parametrize("text", ["-5m", "0s", "0h0m"])
def test_zero_and_negative_durations_are_rejected(text: str) -> None:
    with pytest.raises(DurationError) as raised:
        parse_duration(text)

    assert f"{text!r} is not a positive duration" in str(raised.value)
    assert HINT in str(raised.value)


def test_an_absurdly_long_duration_is_a_duration_error_not_a_crash() -> None:
    with pytest.raises(DurationError, match=HINT):
        parse_duration("9999999999999999999999h")


def test_duration_error_is_a_value_error() -> None:
    # Callers that only know ValueError (argument parsers) still catch it.
    with pytest.raises(ValueError):
        parse_duration("forever")


@pytest.mark.parametrize(
    ("value", "written"),
    [
        (timedelta(minutes=30), "30m"),
        (timedelta(hours=1, minutes=30), "1h30m"),
        (timedelta(seconds=20), "20s"),
        (timedelta(hours=8), "8h"),
        (timedelta(milliseconds=300), "300ms"),
    ],
)
def test_format_duration_writes_durations_the_way_people_do(value: timedelta, written: str) -> None:
    assert format_duration(value) == written


@pytest.mark.parametrize(
    "value",
    [
        timedelta(seconds=1),
        timedelta(seconds=90),
        timedelta(hours=1, minutes=30),
        timedelta(days=2, seconds=7),
        timedelta(hours=4, seconds=1, microseconds=500),
        timedelta(milliseconds=300),
    ],
)
def test_format_duration_round_trips_through_parse(value: timedelta) -> None:
    assert parse_duration(format_duration(value)) == value
