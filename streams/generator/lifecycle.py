"""Everything that happens to a pin regardless of searches: its content, later edits, VLM
captions (hours to days after the pin; some never, some re-captioned by a newer captioner),
the creator's save to a board, and saves by other users over the following days."""

from __future__ import annotations

import random
from collections.abc import Sequence

from schemas import BoardSave, Event, PinCaption, PinContent
from streams.generator import text
from streams.generator.boards import BoardBook
from streams.generator.world import DAY_S, Pin, Topic, User, World

CAPTIONER_V1 = "captioner-v1"
CAPTIONER_V2 = "captioner-v2"
NEVER_CAPTIONED = 0.10
RECAPTIONED = 0.20
CONTENT_UPDATED = 0.15
# Title styles: the full description, the noun and little else, or nothing useful.
FULL_TITLE = 0.55
NOUN_TITLE = 0.25
HAS_DESCRIPTION = 0.8
HAS_LINK_TITLE = 0.5
HAS_LINK_DESCRIPTION = 0.25
SAME_LANGUAGE_SAVER = 0.7


def _subset(items: Sequence[str], keep: float, rng: random.Random) -> list[str]:
    return [i for i in items if rng.random() < keep]


class PinLifecycle:
    def __init__(self, world: World, boards: BoardBook) -> None:
        self.world = world
        self.boards = boards
        self._rng = random.Random(f"freshlabel/pins/{world.seed}")
        self._by_lang: dict[str, list[User]] = {}
        for user in world.users:
            self._by_lang.setdefault(user.lang, []).append(user)

    def events(self) -> list[tuple[float, Event]]:
        """(seconds from the start, event) for every pin, in pin order (not time order)."""
        out: list[tuple[float, Event]] = []
        for pin in self.world.pins:
            self._pin_events(pin, out)
        return out

    def _user_for(self, lang: str, same_language: float) -> User:
        rng = self._rng
        pool = self._by_lang.get(lang)
        if pool and rng.random() < same_language:
            return rng.choice(pool)
        return rng.choice(self.world.users)

    def _content(self, pin: Pin, topic: Topic, t: float, first: bool) -> PinContent:
        rng = self._rng
        noun, lang, family = topic.nouns[pin.lang], pin.lang, topic.family
        if pin.low_quality:
            return PinContent(
                pin_id=pin.pin_id,
                title=text.spam_title(lang, rng),
                description=text.SPAM_DESCRIPTIONS[lang],
                updated_at=self.world.at(t),
            )
        r = rng.random()
        if not first:
            # An edit names the pin fully: sellers and bloggers improve, rarely worsen, titles.
            title = text.title(noun, pin.concepts, pin.extras, lang, rng)
        elif r < FULL_TITLE:
            kept = _subset(pin.concepts, 0.7, rng)
            title = text.title(noun, kept, _subset(pin.extras, 0.7, rng), lang, rng)
        elif r < FULL_TITLE + NOUN_TITLE:
            title = text.title(noun, pin.concepts[:1], (), lang, rng)
        else:
            title = text.vague_title(lang, rng)
        description = None
        if rng.random() < HAS_DESCRIPTION:
            description = text.description(
                noun, _subset(pin.concepts, 0.6, rng), pin.extras, lang, family, rng
            )
        link_title = None
        if rng.random() < HAS_LINK_TITLE:
            link_title = text.link_title(noun, pin.concepts, pin.extras, lang, family)
        link_description = None
        if rng.random() < HAS_LINK_DESCRIPTION:
            link_description = text.description(noun, pin.concepts, (), lang, family, rng)
        return PinContent(
            pin_id=pin.pin_id,
            title=title,
            description=description,
            link_title=link_title,
            link_description=link_description,
            updated_at=self.world.at(t),
        )

    def _save(self, pin: Pin, topic: Topic, user: User, t: float) -> BoardSave:
        board = self.boards.board_for(user, topic)
        return BoardSave(
            pin_id=pin.pin_id,
            board_id=board.board_id,
            board_title=board.title,
            user_id=user.user_id,
            event_time=self.world.at(t),
        )

    def _pin_events(self, pin: Pin, out: list[tuple[float, Event]]) -> None:
        rng = self._rng
        topic = self.world.topics[pin.topic]
        t0 = pin.created_s
        out.append((t0, self._content(pin, topic, t0, first=True)))
        creator = self._user_for(pin.lang, 1.0)
        t_pinned = t0 + rng.uniform(5.0, 120.0)
        out.append((t_pinned, self._save(pin, topic, creator, t_pinned)))
        if rng.random() >= NEVER_CAPTIONED:
            # Captioning runs in batches behind a queue: median ~8 h, 1 h to 5 days.
            delay = min(5 * DAY_S, max(3600.0, rng.lognormvariate(10.27, 0.9)))
            t_caption = t0 + delay
            caption = text.caption(
                topic.nouns["en"],
                _subset(pin.concepts, 0.85, rng),
                _subset(pin.extras, 0.7, rng),
                topic.family,
                detailed=False,
                rng=rng,
            )
            out.append((t_caption, self._caption(pin, caption, CAPTIONER_V1, t_caption)))
            if rng.random() < RECAPTIONED:
                t_v2 = t_caption + rng.uniform(2 * DAY_S, 10 * DAY_S)
                caption = text.caption(
                    topic.nouns["en"], pin.concepts, pin.extras, topic.family, True, rng
                )
                out.append((t_v2, self._caption(pin, caption, CAPTIONER_V2, t_v2)))
        if rng.random() < CONTENT_UPDATED:
            t_edit = t0 + rng.uniform(1 * DAY_S, 14 * DAY_S)
            out.append((t_edit, self._content(pin, topic, t_edit, first=False)))
        for _ in range(rng.choice((0, 0, 1, 1, 2, 3))):
            t_save = t0 + 600.0 + rng.expovariate(1 / (5 * DAY_S))
            saver = self._user_for(pin.lang, SAME_LANGUAGE_SAVER)
            out.append((t_save, self._save(pin, topic, saver, t_save)))

    def _caption(self, pin: Pin, caption: str, version: str, t: float) -> PinCaption:
        return PinCaption(
            pin_id=pin.pin_id,
            caption=caption,
            captioner_version=version,
            created_at=self.world.at(t),
        )
