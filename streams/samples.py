"""A small, fixed sample of every event type (multilingual), for the demo and tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from schemas import BoardSave, Engagement, Event, Impression, PinCaption, PinContent

_T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)

_PINS = [
    ("p-1", "Cozy knit sweater", "A chunky wool sweater for winter", "en"),
    ("p-2", "Receta de paella valenciana", "Arroz con pollo, conejo y judías verdes", "es"),
    (
        "p-3",
        "Weihnachtsplätzchen backen",
        "Butterplätzchen mit Zuckerguss für die Adventszeit",
        "de",
    ),
    ("p-4", "抹茶のパウンドケーキ", "しっとり美味しい抹茶スイーツのレシピ", "ja"),
]
_QUERIES = {
    "en": ("winter sweater", "US", "en-US"),
    "es": ("paella receta", "ES", "es-ES"),
    "de": ("plätzchen rezept", "DE", "de-DE"),
    "ja": ("抹茶 ケーキ", "JP", "ja-JP"),
}


def sample_events(per_pin: int = 5) -> list[Event]:
    events: list[Event] = []
    for i, (pin, title, desc, lang) in enumerate(_PINS):
        query, country, locale = _QUERIES[lang]
        events.append(
            PinContent(
                pin_id=pin,
                title=title,
                description=desc,
                link_title=None,
                updated_at=_T0 + timedelta(minutes=i),
            )
        )
        events.append(
            PinCaption(
                pin_id=pin,
                caption=f"a photo of {title}",
                captioner_version="vlm-1",
                created_at=_T0 + timedelta(hours=1, minutes=i),
            )
        )
        events.append(
            BoardSave(
                pin_id=pin,
                board_id=f"b-{i}",
                board_title=f"{title} ideas",
                user_id=f"u-{i}",
                event_time=_T0 + timedelta(hours=2, minutes=i),
            )
        )
        for n in range(per_pin):
            impression_id = f"imp-{pin}-{n}"
            at = _T0 + timedelta(hours=3, minutes=10 * n + i)
            events.append(
                Impression(
                    impression_id=impression_id,
                    request_id=f"req-{n}",
                    user_id=f"u-{n}",
                    query=query,
                    pin_id=pin,
                    position=n + 1,
                    country=country,
                    locale=locale,
                    event_time=at,
                )
            )
            if n % 2 == 0:
                events.append(
                    Engagement(
                        impression_id=impression_id,
                        query=query,
                        pin_id=pin,
                        action="click",
                        event_time=at + timedelta(seconds=5),
                    )
                )
    return events
