"""Users' boards: which board a user saves a pin to, and what the user called it."""

from __future__ import annotations

import random
from dataclasses import dataclass

from streams.generator import text
from streams.generator.world import Topic, User

# How a user files a topic's pins: a board about the topic, about its family, or a catch-all.
TOPIC_BOARD_SHARE = 0.6
FAMILY_BOARD_SHARE = 0.3


@dataclass(frozen=True, slots=True)
class Board:
    board_id: str
    user_id: str
    title: str


class BoardBook:
    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._rng = random.Random(f"freshlabel/boards/{seed}")
        self._by_key: dict[tuple[int, str], Board] = {}
        self._choice: dict[tuple[int, int], Board] = {}

    def __len__(self) -> int:
        return len(self._by_key)

    def board_for(self, user: User, topic: Topic) -> Board:
        chosen = self._choice.get((user.index, topic.index))
        if chosen is None:
            chosen = self._new_choice(user, topic)
            self._choice[(user.index, topic.index)] = chosen
        return chosen

    def _new_choice(self, user: User, topic: Topic) -> Board:
        rng = self._rng
        r = rng.random()
        noun = topic.nouns.get(user.lang)
        if r < TOPIC_BOARD_SHARE and noun is not None:
            key = (user.index, f"topic:{topic.id}")
            title = text.topic_board_title(noun, user.lang, rng)
        elif r < TOPIC_BOARD_SHARE + FAMILY_BOARD_SHARE or noun is None:
            key = (user.index, f"family:{topic.family}")
            title = text.family_board_title(topic.family, user.lang, rng)
        else:
            key = (user.index, "generic")
            title = text.generic_board_title(user.lang, rng)
        board = self._by_key.get(key)
        if board is None:
            board = Board(f"b{self.seed}-{len(self._by_key):06d}", user.user_id, title)
            self._by_key[key] = board
        return board
