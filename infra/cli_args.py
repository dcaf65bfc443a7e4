"""Argument types the command line's areas share, so one rule holds for every verb."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

# Appended to the help of every option that takes `iso_time`.
ISO_TIME = "ISO time like 2026-10-20T12:00:00+00:00; without a zone it means UTC"


def parse_time(text: str) -> datetime:
    """An ISO 8601 date or time, aware; a naive one is taken as UTC.

    Raises:
        ValueError: not an ISO time (the message shows the form to write).
    """
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is not an ISO time; write it like 2026-10-20T12:00:00+00:00 "
            "(or 2026-10-20, UTC)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def iso_time(text: str) -> datetime:
    """`parse_time` as an argparse type (argparse shows the message, exit 2)."""
    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
