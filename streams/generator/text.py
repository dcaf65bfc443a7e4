"""Render concepts as text: query strings, pin titles/descriptions, VLM captions, board titles.

Everything takes an explicit `random.Random`, so the same draws give the same words. Titles
and descriptions each show only part of a pin's concepts (and some titles say nothing at
all), so a model has to combine title, description, caption and boards to judge a pin.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from streams.generator.vocabulary import CONCEPTS, KIND_ORDER

_KIND_RANK = {kind: n for n, kind in enumerate(KIND_ORDER)}

# Titles that say nothing about the pin: only the caption and boards tell what it shows.
VAGUE_TITLES: dict[str, tuple[str, ...]] = {
    "en": ("Love this!", "Saved for later", "My new favorite", "Weekend project", "So pretty 😍")
    + ("Obsessed", "Inspo", "Just perfect"),
    "es": ("¡Me encanta!", "Para después", "Mi nuevo favorito", "Proyecto de fin de semana")
    + ("Qué bonito 😍", "Inspiración"),
    "fr": ("J'adore !", "À garder", "Mon nouveau coup de cœur", "Projet du week-end")
    + ("Trop joli 😍", "Inspiration"),
    "de": ("Liebe ich!", "Für später", "Mein neuer Favorit", "Wochenendprojekt", "So schön 😍")
    + ("Inspiration",),
    "ja": ("これ好き！", "あとで見る", "お気に入り", "週末プロジェクト", "かわいい😍"),
}

# Low-quality pins read like spam; their hidden grade is one lower.
SPAM_TITLES: dict[str, tuple[str, ...]] = {
    "en": ("BEST PRICE!!! Click here", "Limited offer - buy now", "You won't believe this!!!"),
    "es": ("¡¡OFERTA!! Haz clic aquí", "Oferta limitada - compra ya"),
    "fr": ("PROMO !!! Cliquez ici", "Offre limitée - achetez vite"),
    "de": ("ANGEBOT!!! Jetzt klicken", "Nur heute - jetzt kaufen"),
    "ja": ("激安！！今すぐクリック", "期間限定セール"),
}
SPAM_DESCRIPTIONS: dict[str, str] = {
    "en": "Huge discounts, free gift with every order. Visit our shop now!!!",
    "es": "Descuentos enormes y regalo con cada pedido. ¡¡Visita nuestra tienda!!",
    "fr": "Remises énormes, cadeau offert à chaque commande. Visitez notre boutique !!!",
    "de": "Riesige Rabatte, Geschenk zu jeder Bestellung. Jetzt im Shop vorbeischauen!!!",
    "ja": "大幅割引、全品プレゼント付き。今すぐショップへ！！",
}

# {thing} is the rendered noun phrase; {Thing} the same, first letter upper-case.
TITLE_TEMPLATES: dict[str, tuple[str, ...]] = {
    "en": ("{Thing}", "{Thing} ideas", "The perfect {thing}", "{Thing} inspo"),
    "es": ("{Thing}", "Ideas: {thing}", "Inspiración: {thing}"),
    "fr": ("{Thing}", "Idées : {thing}", "Inspiration : {thing}"),
    "de": ("{Thing}", "{Thing} – Ideen", "Inspiration: {thing}"),
    "ja": ("{thing}", "{thing}のアイデア", "おしゃれな{thing}"),
}

DESCRIPTION_TEMPLATES: dict[str, dict[str, tuple[str, ...]]] = {
    "en": {
        "home": (
            "{Thing} for your home.",
            "Decor ideas: {thing}.",
            "How to style this {thing}.",
        ),
        "food": ("Recipe: {thing}, step by step.", "Homemade {thing} in a few steps.")
        + ("The best {thing} recipe.",),
        "fashion": ("Outfit idea: {thing}.", "How to wear this {thing} this season."),
        "party": ("{Thing} ideas for this year.", "Make it festive with this {thing}."),
    },
    "es": {
        "home": ("{Thing} para tu hogar.", "Ideas para decorar con {thing}.")
        + ("Cómo combinar {thing}.",),
        "food": ("Receta: {thing}, paso a paso.", "{Thing} casero en pocos pasos.")
        + ("La mejor receta: {thing}.",),
        "fashion": ("Idea de outfit: {thing}.", "Cómo llevar {thing} esta temporada."),
        "party": ("Ideas de {thing} para este año.", "Dale un toque festivo: {thing}."),
    },
    "fr": {
        "home": ("{Thing} pour votre intérieur.", "Idées déco : {thing}.")
        + ("Comment associer {thing}.",),
        "food": ("Recette : {thing}, étape par étape.", "{Thing} fait maison.")
        + ("La meilleure recette : {thing}.",),
        "fashion": ("Idée de tenue : {thing}.", "Comment porter {thing} cette saison."),
        "party": ("Idées {thing} pour cette année.", "Une touche festive : {thing}."),
    },
    "de": {
        "home": ("{Thing} für dein Zuhause.", "Wohnideen: {thing}.", "So kombinierst du {thing}."),
        "food": ("Rezept: {thing}, Schritt für Schritt.", "Selbstgemacht: {thing}.")
        + ("Das beste Rezept: {thing}.",),
        "fashion": ("Outfit-Idee: {thing}.", "So trägst du {thing} diese Saison."),
        "party": ("{Thing} – Ideen für dieses Jahr.", "Festlich: {thing}."),
    },
    "ja": {
        "home": ("お部屋に{thing}を。", "{thing}でおしゃれなインテリアに。", "{thing}のコーデ術。"),
        "food": ("{thing}のレシピ。", "手作り{thing}の作り方。", "絶品{thing}レシピ。"),
        "fashion": ("{thing}のコーデ。", "今季の{thing}の着こなし。"),
        "party": ("今年の{thing}アイデア。", "{thing}で華やかに。"),
    },
}

# Blog or shop names shown as a link title, per language and family.
SITES: dict[str, dict[str, str]] = {
    "en": {"home": "Home & Nest", "food": "The Weeknight Kitchen", "fashion": "Style Notes"}
    | {"party": "Festive Living"},
    "es": {"home": "Casa Bonita", "food": "Cocina Fácil", "fashion": "Moda al Día"}
    | {"party": "Días de Fiesta"},
    "fr": {"home": "Maison Douce", "food": "Cuisine Maison", "fashion": "Mode & Co"}
    | {"party": "Jours de Fête"},
    "de": {"home": "Wohnglück", "food": "Küchenliebe", "fashion": "Modeblog"}
    | {"party": "Festtage"},
    "ja": {"home": "暮らしノート", "food": "おうちごはん", "fashion": "ファッション通信"}
    | {"party": "イベント手帖"},
}

# What a captioner sees around the object, per family (captions are English, like most VLMs).
SCENES: dict[str, tuple[str, ...]] = {
    "home": ("in a bright living room", "against a white wall", "in a cozy bedroom")
    + ("next to a large window", "in a styled showroom"),
    "food": ("on a wooden table", "on a white plate", "in a rustic kitchen")
    + ("on a marble countertop",),
    "fashion": ("worn by a model on a city street", "on a hanger against a plain wall")
    + ("in a flat lay on a white background",),
    "party": ("with candles and string lights", "on a festive table")
    + ("in a decorated living room", "on a front porch at night"),
}
CAPTION_DETAILS: dict[str, str] = {
    "home": "The photo shows the whole piece from the front.",
    "food": "Close-up food photography in natural light.",
    "fashion": "Full-length shot in natural light.",
    "party": "Festive setting with warm lights.",
}

# Board titles: about the pin's topic, about its family, or about nothing in particular.
TOPIC_BOARD_TEMPLATES: dict[str, tuple[str, ...]] = {
    "en": ("{noun}", "{noun} ideas", "my {noun}", "{noun} inspo", "dream {noun}"),
    "es": ("{noun}", "ideas {noun}", "mi {noun}", "{noun} ❤"),
    "fr": ("{noun}", "idées {noun}", "inspiration {noun}", "{noun} ❤"),
    "de": ("{noun}", "{noun} Ideen", "meine {noun}", "{noun} ❤"),
    "ja": ("{noun}", "{noun}アイデア", "好きな{noun}"),
}
# Board names about a family of things in general, per language and family.
FAMILY_BOARDS: dict[str, dict[str, tuple[str, str]]] = {
    "en": {
        "home": ("home decor", "living room ideas"),
        "food": ("recipes", "yum"),
        "fashion": ("outfits", "style"),
        "party": ("holidays", "party ideas"),
    },
    "es": {
        "home": ("decoración hogar", "ideas casa"),
        "food": ("recetas", "cocina"),
        "fashion": ("outfits", "moda"),
        "party": ("fiestas", "celebraciones"),
    },
    "fr": {
        "home": ("déco maison", "idées salon"),
        "food": ("recettes", "miam"),
        "fashion": ("tenues", "mode"),
        "party": ("fêtes", "idées fête"),
    },
    "de": {
        "home": ("Wohnideen", "Einrichtung"),
        "food": ("Rezepte", "lecker"),
        "fashion": ("Outfits", "Mode"),
        "party": ("Feiertage", "Partyideen"),
    },
    "ja": {
        "home": ("インテリア", "部屋づくり"),
        "food": ("レシピ", "おいしい"),
        "fashion": ("コーデ", "ファッション"),
        "party": ("イベント", "パーティー"),
    },
}
GENERIC_BOARDS: dict[str, tuple[str, ...]] = {
    "en": ("favorites", "stuff", "to buy", "random"),
    "es": ("favoritos", "cosas", "para comprar"),
    "fr": ("favoris", "en vrac", "à acheter"),
    "de": ("Favoriten", "Sammlung", "kaufen"),
    "ja": ("お気に入り", "いろいろ", "ほしいもの"),
}


def _ordered(concepts: Sequence[str]) -> list[str]:
    return sorted(concepts, key=lambda c: _KIND_RANK[CONCEPTS[c].kind])


def _upper_first(text: str) -> str:
    return text[:1].upper() + text[1:]


def noun_phrase(noun: str, concepts: Sequence[str], extras: Sequence[str], lang: str) -> str:
    """The noun with its attribute phrases in the language's order ("sillón azul de lino")."""
    before: list[str] = []
    after: list[str] = []
    for cid in _ordered(concepts):
        text, is_before = CONCEPTS[cid].phrase(lang)
        (before if is_before else after).append(text)
    # Extra terms come from English query logs, so they only ever precede an English noun.
    before.extend(extras)
    if lang == "ja":
        return "".join(before) + noun + "".join(after)
    return " ".join([*before, noun, *after])


def query_text(noun: str, concepts: Sequence[str], lang: str, rng: random.Random) -> str:
    """Keyword-style query: English puts attributes first, other languages after the noun."""
    words = [CONCEPTS[c].word(lang) for c in concepts]
    rng.shuffle(words)
    noun = noun.lower()
    parts = [*words, noun] if lang == "en" else [noun, *words]
    return " ".join(parts)


def title(
    noun: str, concepts: Sequence[str], extras: Sequence[str], lang: str, rng: random.Random
) -> str:
    thing = noun_phrase(noun, concepts, extras, lang)
    template = rng.choice(TITLE_TEMPLATES[lang])
    return template.format(thing=thing, Thing=_upper_first(thing))


def vague_title(lang: str, rng: random.Random) -> str:
    return rng.choice(VAGUE_TITLES[lang])


def spam_title(lang: str, rng: random.Random) -> str:
    return rng.choice(SPAM_TITLES[lang])


def description(
    noun: str,
    concepts: Sequence[str],
    extras: Sequence[str],
    lang: str,
    family: str,
    rng: random.Random,
) -> str:
    thing = noun_phrase(noun, concepts, extras, lang)
    template = rng.choice(DESCRIPTION_TEMPLATES[lang][family])
    return template.format(thing=thing, Thing=_upper_first(thing))


def link_title(
    noun: str, concepts: Sequence[str], extras: Sequence[str], lang: str, family: str
) -> str:
    return f"{_upper_first(noun_phrase(noun, concepts, extras, lang))} | {SITES[lang][family]}"


def caption(
    noun_en: str,
    concepts: Sequence[str],
    extras: Sequence[str],
    family: str,
    detailed: bool,
    rng: random.Random,
) -> str:
    """An English VLM-style caption; the detailed (newer captioner) one adds a sentence."""
    thing = noun_phrase(noun_en.lower(), concepts, extras, "en")
    scene = rng.choice(SCENES[family])
    if detailed:
        subject = f"{_article(thing)} {thing}".strip()
        return f"{_upper_first(subject)} {scene}. {CAPTION_DETAILS[family]}"
    subject = f"{_article(thing)} {thing}".strip()
    return f"a photo of {subject} {scene}"


def _article(phrase: str) -> str:
    words = phrase.split()
    if words and words[-1].endswith("s") and not words[-1].endswith("ss"):
        return ""  # plural: "a photo of christmas cookies"
    return "an" if phrase[:1].lower() in "aeiou" else "a"


def topic_board_title(noun: str, lang: str, rng: random.Random) -> str:
    title_text = rng.choice(TOPIC_BOARD_TEMPLATES[lang]).format(noun=noun)
    # People type board names in lower case about half of the time.
    return title_text.lower() if lang != "de" and rng.random() < 0.5 else title_text


def family_board_title(family: str, lang: str, rng: random.Random) -> str:
    return rng.choice(FAMILY_BOARDS[lang][family])


def generic_board_title(lang: str, rng: random.Random) -> str:
    return rng.choice(GENERIC_BOARDS[lang])
