"""Argument types the command line's areas share, so one rule holds for every verb."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

# Appended to the help of every option that takes `iso_time`.
ISO_TIME = "ISO time like 2026-10-20T12:00:00+00:00; without a zone it means UTC"


def iso_time(text: str) -> datetime:
    """An argparse type: an ISO 8601 date or time, aware; a naive one is taken as UTC.

    Raises:
        argparse.ArgumentTypeError: not an ISO time (argparse reports it, exit 2).
    """
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO time; write it like 2026-10-20T12:00:00+00:00 "
            "(or 2026-10-20, UTC)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
