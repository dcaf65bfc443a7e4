"""Small builders the test modules share, so each test spells out only what it is about.

Nothing here starts a server or touches the network: a module of any tier may import it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

# The fields of an impression a test rarely cares about: one request, user, query and pin,
# at the first position, in the US.
_PLAIN = {"request_id": "r", "user_id": "u", "query": "q", "pin_id": "p", "position": 1}
_US = {"country": "US", "locale": "en-US"}


def impression_fields(impression_id: str, event_time: datetime, **fields: Any) -> dict[str, Any]:
    """The fields of a plain impression (`Impression(**...)`, `EnrichedImpression(**...)`).

    Args:
        impression_id: the impression's id.
        event_time: when it was shown.
        **fields: fields to override (`query=...`) or add (enriched features).

    Returns:
        Keyword arguments for an impression model.
    """
    return {**_PLAIN, **_US, "impression_id": impression_id, "event_time": event_time, **fields}
