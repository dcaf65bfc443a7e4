"""The words of the synthetic world: markets, attribute concepts, topics and seasons.

A concept (blue, velvet, vegan, ...) is language-independent: queries and pins carry concept
ids, and each language renders them its own way (a query word, a title phrase before or after
the noun). Hidden relevance is computed on concepts, so the same intent in Spanish and in
English grades the same while a text model still has to read the words to learn it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

LANGS: tuple[str, ...] = ("en", "es", "fr", "de", "ja")


@dataclass(frozen=True)
class Market:
    country: str
    locale: str
    lang: str
    weight: float


# Share of users per market: English-speaking markets are ~54% of users.
MARKETS: tuple[Market, ...] = (
    Market("US", "en-US", "en", 34),
    Market("GB", "en-GB", "en", 9),
    Market("CA", "en-CA", "en", 4),
    Market("AU", "en-AU", "en", 4),
    Market("IN", "en-IN", "en", 3),
    Market("ES", "es-ES", "es", 7),
    Market("MX", "es-MX", "es", 7),
    Market("AR", "es-AR", "es", 2),
    Market("FR", "fr-FR", "fr", 8),
    Market("CA", "fr-CA", "fr", 1),
    Market("DE", "de-DE", "de", 9),
    Market("AT", "de-AT", "de", 2),
    Market("CH", "de-CH", "de", 1),
    Market("JP", "ja-JP", "ja", 9),
)

# Language of a new pin of a multilingual topic.
PIN_LANG_WEIGHTS: tuple[tuple[str, float], ...] = (
    ("en", 0.52),
    ("es", 0.12),
    ("fr", 0.11),
    ("de", 0.12),
    ("ja", 0.13),
)

# Kinds a pin has one value of at most: a query for "blue" and a red pin conflict.
EXCLUSIVE_KINDS = frozenset({"color", "material", "style", "flavor", "audience", "theme"})

# Order of attribute phrases in a title ("modern blue velvet armchair").
KIND_ORDER = (
    "effort",
    "diet",
    "style",
    "color",
    "material",
    "flavor",
    "theme",
    "place",
    "audience",
)

# id: (kind, en, es, fr, de, ja) -- the query word in each language.
_CONCEPT_ROWS: dict[str, tuple[str, str, str, str, str, str]] = {
    "blue": ("color", "blue", "azul", "bleu", "blau", "青"),
    "red": ("color", "red", "rojo", "rouge", "rot", "赤"),
    "white": ("color", "white", "blanco", "blanc", "weiß", "白"),
    "black": ("color", "black", "negro", "noir", "schwarz", "黒"),
    "green": ("color", "green", "verde", "vert", "grün", "緑"),
    "pink": ("color", "pink", "rosa", "rose", "rosa", "ピンク"),
    "grey": ("color", "grey", "gris", "gris", "grau", "グレー"),
    "beige": ("color", "beige", "beige", "beige", "beige", "ベージュ"),
    "yellow": ("color", "yellow", "amarillo", "jaune", "gelb", "黄色"),
    "orange": ("color", "orange", "naranja", "orange", "orange", "オレンジ"),
    "gold": ("color", "gold", "dorado", "doré", "gold", "ゴールド"),
    "silver": ("color", "silver", "plateado", "argenté", "silber", "シルバー"),
    "wood": ("material", "wood", "madera", "bois", "holz", "木製"),
    "velvet": ("material", "velvet", "terciopelo", "velours", "samt", "ベルベット"),
    "leather": ("material", "leather", "cuero", "cuir", "leder", "レザー"),
    "linen": ("material", "linen", "lino", "lin", "leinen", "リネン"),
    "rattan": ("material", "rattan", "ratán", "rotin", "rattan", "ラタン"),
    "marble": ("material", "marble", "mármol", "marbre", "marmor", "大理石"),
    "metal": ("material", "metal", "metal", "métal", "metall", "メタル"),
    "wool": ("material", "wool", "lana", "laine", "wolle", "ウール"),
    "cotton": ("material", "cotton", "algodón", "coton", "baumwolle", "コットン"),
    "silk": ("material", "silk", "seda", "soie", "seide", "シルク"),
    "ceramic": ("material", "ceramic", "cerámica", "céramique", "keramik", "陶器"),
    "glass": ("material", "glass", "cristal", "verre", "glas", "ガラス"),
    "cashmere": ("material", "cashmere", "cachemira", "cachemire", "kaschmir", "カシミヤ"),
    "modern": ("style", "modern", "moderno", "moderne", "modern", "モダン"),
    "rustic": ("style", "rustic", "rústico", "rustique", "rustikal", "カントリー"),
    "boho": ("style", "boho", "boho", "bohème", "boho", "ボヘミアン"),
    "vintage": ("style", "vintage", "vintage", "vintage", "vintage", "ヴィンテージ"),
    "minimalist": (
        "style",
        "minimalist",
        "minimalista",
        "minimaliste",
        "minimalistisch",
        "ミニマル",
    ),
    "scandinavian": ("style", "scandinavian", "nórdico", "scandinave", "skandinavisch", "北欧"),
    "industrial": (
        "style",
        "industrial",
        "industrial",
        "industriel",
        "industrial",
        "インダストリアル",
    ),
    "elegant": ("style", "elegant", "elegante", "élégant", "elegant", "エレガント"),
    "chocolate": ("flavor", "chocolate", "chocolate", "chocolat", "schokolade", "チョコ"),
    "vanilla": ("flavor", "vanilla", "vainilla", "vanille", "vanille", "バニラ"),
    "lemon": ("flavor", "lemon", "limón", "citron", "zitrone", "レモン"),
    "strawberry": ("flavor", "strawberry", "fresa", "fraise", "erdbeer", "いちご"),
    "matcha": ("flavor", "matcha", "matcha", "matcha", "matcha", "抹茶"),
    "cinnamon": ("flavor", "cinnamon", "canela", "cannelle", "zimt", "シナモン"),
    "apple": ("flavor", "apple", "manzana", "pomme", "apfel", "りんご"),
    "tomato": ("flavor", "tomato", "tomate", "tomate", "tomate", "トマト"),
    "garlic": ("flavor", "garlic", "ajo", "ail", "knoblauch", "ガーリック"),
    "mushroom": ("flavor", "mushroom", "champiñones", "champignons", "pilze", "きのこ"),
    "cheese": ("flavor", "cheese", "queso", "fromage", "käse", "チーズ"),
    "pumpkin": ("flavor", "pumpkin", "calabaza", "citrouille", "kürbis", "かぼちゃ"),
    "pistachio": ("flavor", "pistachio", "pistacho", "pistache", "pistazie", "ピスタチオ"),
    "chicken": ("flavor", "chicken", "pollo", "poulet", "hähnchen", "チキン"),
    "vegan": ("diet", "vegan", "vegano", "vegan", "vegan", "ヴィーガン"),
    "glutenfree": (
        "diet",
        "gluten-free",
        "sin gluten",
        "sans gluten",
        "glutenfrei",
        "グルテンフリー",
    ),
    "easy": ("effort", "easy", "fácil", "facile", "einfach", "簡単"),
    "quick": ("effort", "quick", "rápido", "rapide", "schnell", "時短"),
    "diy": ("effort", "diy", "diy", "diy", "diy", "diy"),
    "budget": ("effort", "budget", "baratos", "pas cher", "günstig", "プチプラ"),
    "kids": ("audience", "kids", "niños", "enfants", "kinder", "子供"),
    "women": ("audience", "women", "mujer", "femme", "damen", "レディース"),
    "men": ("audience", "men", "hombre", "homme", "herren", "メンズ"),
    "baby": ("audience", "baby", "bebé", "bébé", "baby", "ベビー"),
    "witch": ("theme", "witch", "bruja", "sorcière", "hexe", "魔女"),
    "skeleton": ("theme", "skeleton", "esqueleto", "squelette", "skelett", "ガイコツ"),
    "ghost": ("theme", "ghost", "fantasma", "fantôme", "gespenst", "おばけ"),
    "vampire": ("theme", "vampire", "vampiro", "vampire", "vampir", "ヴァンパイア"),
    "outdoor": ("place", "outdoor", "exterior", "extérieur", "draußen", "屋外"),
}

# How a title phrases a concept of each kind: (template, goes before the noun).
# {w} is the word, {W} the word capitalized (German nouns).
_PHRASE_PATTERNS: dict[str, dict[str, tuple[str, bool]]] = {
    "en": {
        "color": ("{w}", True),
        "material": ("{w}", True),
        "style": ("{w}", True),
        "flavor": ("{w}", True),
        "diet": ("{w}", True),
        "effort": ("{w}", True),
        "audience": ("for {w}", False),
        "theme": ("{w}", True),
        "place": ("{w}", True),
    },
    "es": {
        "color": ("{w}", False),
        "material": ("de {w}", False),
        "style": ("estilo {w}", False),
        "flavor": ("de {w}", False),
        "diet": ("{w}", False),
        "effort": ("{w}", False),
        "audience": ("para {w}", False),
        "theme": ("de {w}", False),
        "place": ("{w}", False),
    },
    "fr": {
        "color": ("{w}", False),
        "material": ("en {w}", False),
        "style": ("style {w}", False),
        "flavor": ("au {w}", False),
        "diet": ("{w}", False),
        "effort": ("{w}", False),
        "audience": ("pour {w}", False),
        "theme": ("thème {w}", False),
        "place": ("d'{w}", False),
    },
    "de": {
        "color": ("in {W}", False),
        "material": ("aus {W}", False),
        "style": ("im {w}en Stil", False),
        "flavor": ("mit {W}", False),
        "diet": ("{w}", False),
        "effort": ("{w}e", True),
        "audience": ("für {W}", False),
        "theme": ("mit {W}", False),
        "place": ("für {w}", False),
    },
    "ja": {
        "color": ("{w}の", True),
        "material": ("{w}の", True),
        "style": ("{w}な", True),
        "flavor": ("{w}の", True),
        "diet": ("{w}", True),
        "effort": ("{w}", True),
        "audience": ("{w}用の", True),
        "theme": ("{w}の", True),
        "place": ("{w}用の", True),
    },
}

# Where the pattern reads wrong: (concept, lang) -> title phrase.
_PHRASE_OVERRIDES: dict[tuple[str, str], str] = {
    ("wood", "en"): "wooden",
    ("diy", "en"): "DIY",
    ("diy", "es"): "DIY",
    ("diy", "fr"): "DIY",
    ("diy", "de"): "DIY",
    ("diy", "ja"): "DIY",
    ("budget", "en"): "budget",
    ("denim", "fr"): "en jean",
    ("vanilla", "fr"): "à la vanille",
    ("strawberry", "fr"): "à la fraise",
    ("cinnamon", "fr"): "à la cannelle",
    ("apple", "fr"): "aux pommes",
    ("tomato", "fr"): "à la tomate",
    ("garlic", "fr"): "à l'ail",
    ("mushroom", "fr"): "aux champignons",
    ("pumpkin", "fr"): "à la citrouille",
    ("pistachio", "fr"): "à la pistache",
    ("strawberry", "de"): "mit Erdbeeren",
    ("apple", "de"): "mit Äpfeln",
    ("tomato", "de"): "mit Tomaten",
    ("pistachio", "de"): "mit Pistazien",
    ("boho", "de"): "im Boho-Stil",
    ("vintage", "de"): "im Vintage-Stil",
    ("industrial", "de"): "im Industrial-Stil",
    ("easy", "de"): "einfache",
    ("quick", "de"): "schnelle",
    ("budget", "de"): "günstige",
    ("modern", "ja"): "モダンな",
    ("elegant", "ja"): "エレガントな",
    ("easy", "ja"): "簡単",
    ("quick", "ja"): "時短",
    ("wood", "ja"): "木製",
    ("ceramic", "ja"): "陶器の",
    ("outdoor", "ja"): "屋外用",
}

# English spellings met in real query logs that mean a concept ("gray" chair, "wooden" desk).
ENGLISH_ALIASES: dict[str, str] = {
    "gray": "grey",
    "wooden": "wood",
    "velour": "velvet",
    "modern": "modern",
    "mid-century": "vintage",
    "farmhouse": "rustic",
    "scandi": "scandinavian",
    "gluten": "glutenfree",
    "kid": "kids",
    "kids": "kids",
    "childrens": "kids",
    "womens": "women",
    "mens": "men",
    "outdoors": "outdoor",
}


@dataclass(frozen=True)
class Concept:
    id: str
    kind: str
    words: dict[str, str]
    # lang -> (title phrase, goes before the noun)
    phrases: dict[str, tuple[str, bool]]

    def word(self, lang: str) -> str:
        return self.words[lang]

    def phrase(self, lang: str) -> tuple[str, bool]:
        return self.phrases[lang]


def _build_concepts() -> dict[str, Concept]:
    concepts: dict[str, Concept] = {}
    for cid, (kind, *words) in _CONCEPT_ROWS.items():
        by_lang = dict(zip(LANGS, words, strict=True))
        phrases: dict[str, tuple[str, bool]] = {}
        for lang, word in by_lang.items():
            template, before = _PHRASE_PATTERNS[lang][kind]
            text = _PHRASE_OVERRIDES.get(
                (cid, lang), template.format(w=word, W=word[:1].upper() + word[1:])
            )
            phrases[lang] = (text, before)
        concepts[cid] = Concept(cid, kind, by_lang, phrases)
    return concepts


CONCEPTS: dict[str, Concept] = _build_concepts()


@dataclass(frozen=True)
class Season:
    """Popularity bump around a yearly date: rises over `rise_days`, falls over `fall_days`."""

    name: str
    month: int
    day: int
    rise_days: float
    fall_days: float
    # Multiplier far from the peak (evergreen topics with a mild lean use a high floor).
    floor: float


SEASONS: dict[str, Season] = {
    s.name: s
    for s in (
        Season("halloween", 10, 31, 21, 3, 0.02),
        Season("thanksgiving", 11, 26, 18, 2, 0.03),
        Season("advent", 12, 1, 20, 6, 0.02),
        Season("christmas", 12, 24, 35, 4, 0.03),
        Season("new_year", 12, 31, 14, 2, 0.02),
        Season("valentine", 2, 14, 18, 2, 0.02),
        Season("summer", 7, 15, 45, 45, 0.05),
        Season("winter", 1, 15, 75, 60, 0.5),
    )
}


@dataclass(frozen=True)
class TopicSpec:
    """A built-in topic: its head noun per language (title form) and the concepts it takes."""

    id: str
    family: str
    # en, es, fr, de, ja
    nouns: tuple[str, str, str, str, str]
    concepts: tuple[str, ...]
    season: str | None = None
    # Fraction of the simulated span after which the topic exists (a new trend), else None.
    emerges_at: float | None = None
    # Extra English head nouns used by some queries ("couch" for sofa).
    synonyms: tuple[str, ...] = field(default=())

    def noun(self, lang: str) -> str:
        return self.nouns[LANGS.index(lang)]


_HOME_COLORS = ("blue", "white", "black", "green", "pink", "grey", "beige", "yellow")
_STYLES = ("modern", "rustic", "boho", "vintage", "minimalist", "scandinavian", "industrial")

TOPICS: tuple[TopicSpec, ...] = (
    # home
    TopicSpec(
        "armchair",
        "home",
        ("armchair", "sillón", "fauteuil", "Sessel", "アームチェア"),
        (*_HOME_COLORS, "velvet", "leather", "linen", "rattan", "wood", *_STYLES),
        synonyms=("accent chair",),
    ),
    TopicSpec(
        "sofa",
        "home",
        ("sofa", "sofá", "canapé", "Sofa", "ソファ"),
        (*_HOME_COLORS, "velvet", "leather", "linen", *_STYLES),
        synonyms=("couch",),
    ),
    TopicSpec(
        "coffee_table",
        "home",
        ("coffee table", "mesa de centro", "table basse", "Couchtisch", "ローテーブル"),
        ("wood", "marble", "glass", "metal", "rattan", "black", "white", *_STYLES),
    ),
    TopicSpec(
        "dining_table",
        "home",
        ("dining table", "mesa de comedor", "table à manger", "Esstisch", "ダイニングテーブル"),
        ("wood", "marble", "glass", "metal", "white", "black", *_STYLES),
    ),
    TopicSpec(
        "bed",
        "home",
        ("bed frame", "cama", "lit", "Bett", "ベッド"),
        ("wood", "metal", "velvet", "linen", "rattan", "white", "grey", *_STYLES),
    ),
    TopicSpec(
        "bookshelf",
        "home",
        ("bookshelf", "estantería", "bibliothèque", "Bücherregal", "本棚"),
        ("wood", "metal", "white", "black", "modern", "rustic", "industrial", "scandinavian"),
    ),
    TopicSpec(
        "rug",
        "home",
        ("rug", "alfombra", "tapis", "Teppich", "ラグ"),
        (*_HOME_COLORS, "wool", "cotton", "rattan", *_STYLES),
        synonyms=("carpet",),
    ),
    TopicSpec(
        "pillow",
        "home",
        ("throw pillow", "cojín", "coussin", "Kissen", "クッション"),
        (*_HOME_COLORS, "velvet", "linen", "cotton", "boho", "vintage", "modern", "scandinavian"),
        synonyms=("cushion",),
    ),
    TopicSpec(
        "lamp",
        "home",
        ("floor lamp", "lámpara", "lampe", "Lampe", "ランプ"),
        ("metal", "rattan", "ceramic", "glass", "gold", "black", "white", *_STYLES),
    ),
    TopicSpec(
        "mirror",
        "home",
        ("wall mirror", "espejo", "miroir", "Spiegel", "鏡"),
        ("gold", "black", "silver", "wood", "rattan", "metal", "modern", "vintage", "boho"),
    ),
    TopicSpec(
        "curtains",
        "home",
        ("curtains", "cortinas", "rideaux", "Vorhänge", "カーテン"),
        (*_HOME_COLORS, "linen", "velvet", "cotton", "boho", "modern", "minimalist"),
        synonyms=("drapes",),
    ),
    TopicSpec(
        "houseplant",
        "home",
        ("houseplant", "planta de interior", "plante d'intérieur", "Zimmerpflanze", "観葉植物"),
        ("easy", "ceramic", "rattan", "boho", "modern", "minimalist", "scandinavian"),
    ),
    TopicSpec(
        "wall_art",
        "home",
        ("wall art", "cuadro", "tableau", "Wandbild", "アートポスター"),
        ("blue", "green", "pink", "black", "beige", "boho", "vintage", "modern", "minimalist"),
    ),
    TopicSpec(
        "bathroom_vanity",
        "home",
        ("bathroom vanity", "mueble de baño", "meuble de salle de bain", "Waschtisch", "洗面台"),
        ("wood", "marble", "white", "black", "modern", "rustic", "industrial", "minimalist"),
    ),
    # food
    TopicSpec(
        "cake",
        "food",
        ("cake", "tarta", "gâteau", "Kuchen", "ケーキ"),
        ("chocolate", "vanilla", "lemon", "strawberry", "matcha", "apple", "vegan", "glutenfree"),
    ),
    TopicSpec(
        "cookies",
        "food",
        ("cookies", "galletas", "biscuits", "Kekse", "クッキー"),
        ("chocolate", "vanilla", "cinnamon", "matcha", "lemon", "vegan", "glutenfree", "easy"),
    ),
    TopicSpec(
        "pasta",
        "food",
        ("pasta", "pasta", "pâtes", "Nudeln", "パスタ"),
        ("tomato", "garlic", "mushroom", "cheese", "lemon", "chicken", "vegan", "quick", "easy"),
    ),
    TopicSpec(
        "salad",
        "food",
        ("salad", "ensalada", "salade", "Salat", "サラダ"),
        ("lemon", "chicken", "cheese", "apple", "vegan", "quick", "easy"),
        season="summer",
    ),
    TopicSpec(
        "soup",
        "food",
        ("soup", "sopa", "soupe", "Suppe", "スープ"),
        ("tomato", "mushroom", "pumpkin", "garlic", "chicken", "vegan", "easy"),
        season="winter",
    ),
    TopicSpec(
        "bread",
        "food",
        ("bread", "pan", "pain", "Brot", "パン"),
        ("garlic", "cheese", "cinnamon", "pumpkin", "glutenfree", "vegan", "easy"),
    ),
    TopicSpec(
        "smoothie",
        "food",
        ("smoothie", "batido", "smoothie", "Smoothie", "スムージー"),
        ("strawberry", "matcha", "apple", "green", "vegan", "quick"),
        season="summer",
    ),
    # fashion
    TopicSpec(
        "sweater",
        "fashion",
        ("sweater", "jersey", "pull", "Pullover", "セーター"),
        ("beige", "grey", "black", "green", "red", "wool", "cashmere", "cotton", "vintage")
        + ("minimalist", "women", "men"),
        season="winter",
        synonyms=("jumper",),
    ),
    TopicSpec(
        "dress",
        "fashion",
        ("dress", "vestido", "robe", "Kleid", "ワンピース"),
        ("black", "red", "white", "blue", "linen", "silk", "cotton", "velvet", "boho", "vintage")
        + ("elegant", "minimalist"),
    ),
    TopicSpec(
        "sneakers",
        "fashion",
        ("sneakers", "zapatillas", "baskets", "Sneaker", "スニーカー"),
        ("white", "black", "grey", "pink", "leather", "vintage", "minimalist", "women", "men")
        + ("kids",),
        synonyms=("trainers",),
    ),
    TopicSpec(
        "handbag",
        "fashion",
        ("handbag", "bolso", "sac à main", "Handtasche", "ハンドバッグ"),
        ("black", "beige", "pink", "gold", "leather", "rattan", "vintage", "minimalist", "elegant"),
    ),
    TopicSpec(
        "coat",
        "fashion",
        ("coat", "abrigo", "manteau", "Mantel", "コート"),
        ("black", "beige", "grey", "wool", "cashmere", "leather", "elegant", "minimalist")
        + ("vintage", "women", "men"),
        season="winter",
    ),
    TopicSpec(
        "earrings",
        "fashion",
        ("earrings", "pendientes", "boucles d'oreilles", "Ohrringe", "ピアス"),
        ("gold", "silver", "elegant", "minimalist", "boho", "vintage", "diy"),
    ),
    # holidays and seasons
    TopicSpec(
        "halloween_costume",
        "party",
        ("halloween costume", "disfraz de halloween", "déguisement d'halloween")
        + ("Halloween-Kostüm", "ハロウィン仮装"),
        ("witch", "skeleton", "ghost", "vampire", "kids", "women", "men", "baby", "easy", "diy"),
        season="halloween",
    ),
    TopicSpec(
        "halloween_decor",
        "party",
        ("halloween decorations", "decoración de halloween", "décoration d'halloween")
        + ("Halloween-Deko", "ハロウィン飾り"),
        ("ghost", "skeleton", "witch", "pumpkin", "black", "orange", "outdoor", "diy", "easy"),
        season="halloween",
    ),
    TopicSpec(
        "pumpkin_pie",
        "food",
        ("pumpkin pie", "tarta de calabaza", "tarte à la citrouille", "Kürbiskuchen")
        + ("かぼちゃパイ",),
        ("cinnamon", "vegan", "glutenfree", "easy"),
        season="thanksgiving",
    ),
    TopicSpec(
        "thanksgiving_table",
        "party",
        ("thanksgiving table", "mesa de acción de gracias", "table de thanksgiving")
        + ("Thanksgiving-Tischdeko", "感謝祭テーブル"),
        ("rustic", "elegant", "gold", "orange", "white", "diy", "budget"),
        season="thanksgiving",
    ),
    TopicSpec(
        "christmas_tree",
        "party",
        ("christmas tree", "árbol de navidad", "sapin de noël", "Weihnachtsbaum")
        + ("クリスマスツリー",),
        ("white", "gold", "red", "silver", "rustic", "scandinavian", "minimalist", "diy"),
        season="christmas",
    ),
    TopicSpec(
        "christmas_cookies",
        "food",
        ("christmas cookies", "galletas de navidad", "biscuits de noël", "Weihnachtsplätzchen")
        + ("クリスマスクッキー",),
        ("cinnamon", "chocolate", "vanilla", "easy", "vegan", "glutenfree"),
        season="christmas",
    ),
    TopicSpec(
        "gift_ideas",
        "party",
        ("gift ideas", "ideas de regalo", "idées cadeaux", "Geschenkideen", "プレゼント"),
        ("kids", "women", "men", "diy", "budget"),
        season="christmas",
    ),
    TopicSpec(
        "advent_calendar",
        "party",
        ("advent calendar", "calendario de adviento", "calendrier de l'avent")
        + ("Adventskalender", "アドベントカレンダー"),
        ("diy", "kids", "chocolate", "budget"),
        season="advent",
    ),
    TopicSpec(
        "new_year_outfit",
        "fashion",
        ("new year's eve outfit", "outfit de nochevieja", "tenue du réveillon", "Silvester-Outfit")
        + ("年越しコーデ",),
        ("gold", "black", "silver", "silk", "velvet", "elegant", "women", "men"),
        season="new_year",
    ),
    TopicSpec(
        "beach_outfit",
        "fashion",
        ("beach outfit", "look de playa", "tenue de plage", "Strandoutfit", "ビーチコーデ"),
        ("white", "linen", "cotton", "boho", "women", "men"),
        season="summer",
    ),
    TopicSpec(
        "bbq",
        "food",
        ("bbq recipes", "recetas de barbacoa", "recettes barbecue", "Grillrezepte", "バーベキュー"),
        ("easy", "vegan", "garlic", "lemon", "quick", "chicken"),
        season="summer",
    ),
    TopicSpec(
        "valentines_gift",
        "party",
        ("valentine's day gift", "regalo de san valentín", "cadeau saint-valentin")
        + ("Valentinstag-Geschenk", "バレンタインギフト"),
        ("diy", "chocolate", "red", "pink", "men", "women", "budget"),
        season="valentine",
    ),
    # trends that appear mid-run (concept drift: new terms, new pins)
    TopicSpec(
        "dubai_chocolate",
        "food",
        ("dubai chocolate", "chocolate de dubái", "chocolat de dubaï", "Dubai-Schokolade")
        + ("ドバイチョコ",),
        ("pistachio", "easy", "vegan", "quick", "diy"),
        emerges_at=0.3,
    ),
    TopicSpec(
        "dopamine_decor",
        "home",
        ("dopamine decor", "decoración dopamina", "déco dopamine", "Dopamin-Deko")
        + ("ドーパミンインテリア",),
        ("pink", "yellow", "green", "orange", "boho", "modern", "velvet", "diy"),
        emerges_at=0.5,
    ),
    TopicSpec(
        "quiet_luxury",
        "fashion",
        ("quiet luxury outfit", "outfit lujo silencioso", "tenue luxe discret")
        + ("Quiet-Luxury-Outfit", "クワイエットラグジュアリー"),
        ("beige", "grey", "cashmere", "wool", "silk", "minimalist", "elegant", "women", "men"),
        emerges_at=0.6,
    ),
)

# Concepts that contradict each other in one intent ("vegan chicken salad").
INCOMPATIBLE: frozenset[frozenset[str]] = frozenset(
    {frozenset({"vegan", "chicken"}), frozenset({"vegan", "cheese"})}
)

FAMILIES: tuple[str, ...] = ("home", "food", "fashion", "party")

# Words that carry no intent in a query ("chairs for kids" -> chair, kids).
STOPWORDS = frozenset(
    {"a", "an", "and", "the", "for", "with", "of", "in", "on", "to", "by", "set", "&", "-", "x"}
)
