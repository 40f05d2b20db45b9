"""builtin:topics: SYNTHETIC 4-topic English sentences, 2,400 train / 600 test, test wording held out.

Dataset card (built-in, synthetic, offline).

What it is
    A SYNTHETIC English text-classification dataset. Every sentence is generated
    on the fly from hand-written sentence templates and hand-written word lists
    in this file; nothing is downloaded and no real-world text is included. The
    sentences are short (6-18 words), grammatical, capitalised and end with a
    period, e.g. "The goalkeeper talked about the penalty kick at the stadium
    after the derby."

Classes (4, balanced)
    ``sports``, ``business``, ``science``, ``food``.

Splits
    ``train``: 600 sentences per class (2,400 in total).
    ``test``:  150 sentences per class (600 in total).
    3,000 sentences overall, no duplicates within or across splits. Each split
    is shuffled deterministically, so any prefix of ``train`` is roughly
    class-balanced. ``generate(seed)`` is a pure function of ``seed``: the same
    seed gives the same output in any process, on any platform.

How the test wording is held out
    Each class has two disjoint vocabularies of topical words (people, things,
    places and events): one used only by ``train`` and one used only by
    ``test``. The two are close in meaning ("goalkeeper, stadium, touchdown" in
    train versus "umpire, arena, hat trick" in test; "banker, dividend" versus
    "financier, bond yield"), but no topical word of one split ever appears in
    the other split, not even inside a template. The two splits also use
    different sentence templates. The templates are shared by all classes and
    every class uses every template of its split equally often, so the only
    words common to both splits are template words (such as "the", "at",
    "about"), and those carry no information about the class. ``generate``
    checks the disjointness of the vocabularies every time it runs.

Intended use
    Measuring what a pretrained encoder's knowledge of language buys. A model
    trained from scratch on ``train`` can only learn the train vocabulary, which
    never occurs in ``test``, so it should score close to chance (0.25) on
    ``test``. A pretrained sentence encoder knows that "umpire" and "referee"
    or "financier" and "banker" belong together, so fine-tuning or probing it
    should reach high test accuracy. This is a deliberately adversarial,
    controlled probe of transfer, not a measure of real-world topic
    classification quality; do not report it as such.

Limitations
    Small, templated, and artificial: the sentences are repetitive, the topics
    are far apart, and the slot fillers are combined at random, so a sentence is
    grammatical but may be odd in meaning ("One cyclist from the bullpen asked a
    question about the touchdown."). The topical words were also chosen to share
    few stems or WordPiece pieces across the splits, but some character-level
    overlap remains (common endings such as "-er"), which can give a character-
    or subword-based scratch model a little signal above chance.

License
    Same as the project that ships this file (Apache-2.0).

Versioning
    ``VERSION`` is bumped whenever the generated content changes.
"""

from __future__ import annotations

import random
import re

NAME = "topics"
VERSION = 1
CLASSES = ["sports", "business", "science", "food"]

_TRAIN_PER_CLASS = 600
_TEST_PER_CLASS = 150

# Slots: {person}, {thing}, {place}, {event}.
# Every template must read naturally with every filler of every class.
_TEMPLATES = {
    "train": [
        "The {person} talked about the {thing} at the {place} after the {event}.",
        "After the {event}, the {person} was still thinking about the {thing}.",
        "Everyone at the {place} was discussing the {thing} before the {event}.",
        "The {person} said the {thing} was the main topic at the {place}.",
        "During the {event}, the {person} made a remark about the {thing}.",
        "One {person} from the {place} asked a question about the {thing}.",
        "Nobody at the {place} expected the {person} to mention the {thing}.",
        "The {person} arrived at the {place} early to prepare for the {event}.",
        "People at the {place} kept asking the {person} about the {thing}.",
        "The {person} was worried about the {thing} after the {event}.",
    ],
    "test": [
        "Following the {event}, the {person} gave a short interview about the {thing}.",
        "Reporters met the {person} at the {place} to ask about the {thing}.",
        "The {thing} became a big story at the {place} once the {event} ended.",
        "According to one {person}, the {thing} will matter for the next {event}.",
        "A local {person} wrote a long post about the {thing} and the {event}.",
        "Visitors to the {place} heard the {person} describe the {thing}.",
        "It was at the {place} that the {person} first noticed the {thing}.",
        "Before the {event} started, the {person} spoke briefly about the {thing}.",
        "On Friday the {person} visited the {place} ahead of the {event}.",
        "Many people thanked the {person} for explaining the {thing} so clearly.",
    ],
}

# Topical vocabulary: class -> split -> slot -> fillers. The train and test
# lists of every class are disjoint at the word level, and no word of one split's
# lists occurs anywhere in the other split (enforced by _check_vocabulary).
_VOCAB = {
    "sports": {
        "train": {
            "person": [
                "coach", "goalkeeper", "referee", "quarterback", "pitcher",
                "sprinter", "boxer", "midfielder", "linebacker", "shortstop",
                "cyclist", "wrestler", "swimmer", "defender", "point guard",
            ],
            "thing": [
                "penalty kick", "touchdown", "free throw", "league table",
                "playoff spot", "batting average", "winning streak", "corner kick",
                "slam dunk", "starting lineup", "offside rule", "halftime score",
                "field goal", "rebound", "home run",
            ],
            "place": [
                "stadium", "ballpark", "training ground", "gymnasium", "velodrome",
                "swimming pool", "bullpen", "football pitch", "running track",
                "boxing gym", "dugout", "basketball court",
            ],
            "event": [
                "match", "playoff game", "league final", "derby", "doubleheader",
                "title fight", "season opener", "track meet", "relay",
                "qualifying round", "semifinal", "penalty shootout",
            ],
        },
        "test": {
            "person": [
                "striker", "umpire", "jockey", "golfer", "skier", "hurdler",
                "flanker", "bowler", "weightlifter", "fencer", "rower",
                "pole vaulter", "catcher", "caddie", "leg spinner",
            ],
            "thing": [
                "hat trick", "tiebreak", "yellow card", "medal count",
                "knockout blow", "scrum", "leaderboard", "hockey puck",
                "tennis racket", "golf swing", "rugby tackle", "jump shot",
                "backhand", "volley", "stolen base",
            ],
            "place": [
                "arena", "speedway", "golf course", "skating rink", "ski slope",
                "squash club", "cricket oval", "clubhouse", "paddock",
                "hockey rink", "ski resort", "rowing club",
            ],
            "event": [
                "tournament", "world cup", "horse race", "olympic trials",
                "marathon", "regatta", "fencing bout", "grand prix",
                "knockout stage", "heavyweight bout", "cup tie", "ski jump",
            ],
        },
    },
    "business": {
        "train": {
            "person": [
                "banker", "accountant", "shareholder", "chief executive",
                "investor", "auditor", "stockbroker", "lender", "entrepreneur",
                "treasurer", "tax adviser", "fund manager", "sales director",
                "retailer", "landlord",
            ],
            "thing": [
                "quarterly profit", "stock price", "profit margin",
                "interest rate", "tax bill", "annual budget", "share buyback",
                "dividend", "loan", "mortgage", "payroll", "balance sheet",
                "sales forecast", "revenue target", "invoice",
            ],
            "place": [
                "bank", "stock exchange", "boardroom", "trading floor",
                "accounting firm", "tax office", "warehouse", "factory",
                "shopping mall", "investment bank", "savings bank",
                "branch office",
            ],
            "event": [
                "merger", "earnings call", "shareholder vote", "audit",
                "price war", "sales meeting", "budget review", "takeover bid",
                "stock split", "bankruptcy hearing", "layoff announcement",
                "product launch",
            ],
        },
        "test": {
            "person": [
                "financier", "bookkeeper", "equity partner", "company president",
                "venture capitalist", "trader", "tycoon", "creditor",
                "comptroller", "importer", "franchise owner", "realtor",
                "actuary", "insurance underwriter",
                "marketing strategist",
            ],
            "thing": [
                "turnover", "market capitalization", "cash flow", "credit rating",
                "inflation figures", "operating costs", "net income", "bond yield",
                "wage costs", "equity stake", "debt repayment",
                "capital expenditure", "commercial lease", "bottom line",
                "pension scheme",
            ],
            "place": [
                "brokerage", "finance ministry", "insurance company", "business incubator",
                "business park", "car dealership", "distribution center",
                "auction house", "commodities desk", "consultancy", "clearing house",
                "credit bureau",
            ],
            "event": [
                "acquisition", "analyst briefing", "rights issue", "recession",
                "bond auction", "debt restructuring", "proxy battle", "liquidation",
                "public offering", "wage negotiation", "market crash",
                "trade fair",
            ],
        },
    },
    "science": {
        "train": {
            "person": [
                "physicist", "chemist", "biologist", "astronomer",
                "laboratory technician", "geologist", "botanist", "ornithologist",
                "geneticist", "meteorologist", "mathematician", "zoologist",
                "postdoctoral fellow", "volcanologist", "microbiologist",
            ],
            "thing": [
                "hypothesis", "molecule", "genome", "particle", "chemical reaction",
                "cell culture", "DNA sample", "electron", "climate model",
                "formula", "protein", "enzyme", "isotope", "galaxy",
                "microscope slide",
            ],
            "place": [
                "laboratory", "observatory", "polar station", "particle accelerator",
                "marine laboratory", "science museum", "planetarium", "wind tunnel",
                "nuclear reactor", "greenhouse", "microscopy suite",
                "physics department",
            ],
            "event": [
                "experiment", "eclipse", "symposium", "peer review",
                "thesis defense", "grant review", "fieldwork", "gel electrophoresis",
                "meteor shower", "spectroscopy session", "lab meeting",
                "poster session",
            ],
        },
        "test": {
            "person": [
                "researcher", "oceanographer", "soil surveyor", "crystallographer",
                "space engineer", "cartographer", "inventor", "nobel laureate",
                "rocket scientist", "fossil hunter", "satellite operator",
                "research student", "ecology professor", "naturalist",
                "storm chaser",
            ],
            "thing": [
                "atom", "laser beam", "chromosome", "quark", "fossil", "virus strain",
                "black hole", "comet", "nebula", "mutation", "catalyst",
                "solar flare", "tectonic plate", "antibody", "specimen",
            ],
            "place": [
                "research institute", "space center", "dig site",
                "oceanographic institute", "earthquake center", "arboretum",
                "hadron collider", "radio antenna", "drilling platform",
                "vaccine institute", "research vessel", "fossil archive",
            ],
            "event": [
                "drug trial", "space mission", "expedition", "colloquium",
                "fossil dig", "computer simulation", "specimen collection",
                "sky survey", "research cruise", "vaccine study",
                "ice core drilling", "carbon dating",
            ],
        },
    },
    "food": {
        "train": {
            "person": [
                "chef", "baker", "waiter", "sommelier", "butcher", "barista",
                "grocer", "caterer", "food critic", "pastry chef", "cheesemaker",
                "dietitian", "pizza maker", "fishmonger", "bartender",
            ],
            "thing": [
                "recipe", "soup", "sauce", "dessert", "sourdough loaf", "pasta",
                "salad", "steak", "menu", "omelette", "curry", "roast chicken",
                "pancake", "lasagna", "apple pie",
            ],
            "place": [
                "food hall", "restaurant", "bakery", "cafe", "diner", "pizzeria",
                "steakhouse", "food court", "coffee shop", "culinary school",
                "dining hall", "cheese shop",
            ],
            "event": [
                "dinner service", "banquet", "brunch", "lunch rush",
                "food festival", "barbecue", "bake sale", "potluck",
                "breakfast shift", "cheese tasting", "culinary workshop",
                "pastry competition",
            ],
        },
        "test": {
            "person": [
                "cook", "confectioner", "brewer", "vintner", "patissier",
                "chocolatier", "taco vendor", "fruit seller", "pitmaster",
                "sushi master", "dishwasher", "busboy", "grillmaster",
                "tea grower", "spice merchant",
            ],
            "thing": [
                "stew", "broth", "casserole", "noodles", "risotto", "meatballs",
                "chocolate mousse", "dumplings", "burrito", "sushi roll", "tart",
                "fried rice", "grilled salmon", "porridge", "gazpacho",
            ],
            "place": [
                "bistro", "canteen", "brasserie", "noodle bar", "tea house",
                "farmers market", "deli", "creamery", "brewery", "winery",
                "sushi bar", "trattoria",
            ],
            "event": [
                "supper", "picnic", "feast", "oyster night", "tea party", "wine pairing",
                "buffet", "crab feast", "fondue night", "chili contest",
                "tapas evening", "harvest meal",
            ],
        },
    },
}

_WORD = re.compile(r"[a-z]+")
_SLOTS = ("person", "thing", "place", "event")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _split_words(split: str) -> tuple[list[str], list[str]]:
    """(topical words of ``split`` over all classes, template words of ``split``)."""
    topical = [
        w
        for cls in CLASSES
        for slot in _SLOTS
        for filler in _VOCAB[cls][split][slot]
        for w in _words(filler)
    ]
    template = [
        w
        for t in _TEMPLATES[split]
        for w in _words(re.sub(r"\{[a-z_]+\}", " ", t))
    ]
    return topical, template


def _check_vocabulary() -> None:
    """Fail loudly if a topical word of one split can occur in the other split."""
    train_topical, train_template = _split_words("train")
    test_topical, test_template = _split_words("test")
    train_all = set(train_topical) | set(train_template)
    test_all = set(test_topical) | set(test_template)
    leaks = sorted((set(train_topical) & test_all) | (set(test_topical) & train_all))
    if leaks:
        raise RuntimeError(f"topics: topical words shared between splits: {leaks}")
    for cls in CLASSES:
        for split in ("train", "test"):
            slots = _VOCAB[cls][split]
            if sorted(slots) != sorted(_SLOTS) or any(
                len(set(slots[s])) != len(slots[s]) or not slots[s] for s in _SLOTS
            ):
                raise RuntimeError(f"topics: bad word lists for {cls}/{split}")


def _sentence(template: str, fillers: dict[str, str]) -> str:
    text = template.format(**fillers)
    return text[0].upper() + text[1:]


def _make_split(
    rng: random.Random, split: str, per_class: int, seen: set[str]
) -> list[dict[str, str]]:
    templates = _TEMPLATES[split]
    rows = []
    for cls in CLASSES:
        vocab = _VOCAB[cls][split]
        for i in range(per_class):
            # Cycle through the templates so that every class uses every template
            # equally often: template words then carry no class information.
            template = templates[i % len(templates)]
            for _attempt in range(1000):
                fillers = {slot: rng.choice(vocab[slot]) for slot in _SLOTS}
                text = _sentence(template, fillers)
                if text not in seen:
                    break
            else:  # pragma: no cover - the word lists allow far more sentences
                raise RuntimeError(f"topics: ran out of distinct sentences ({cls}/{split})")
            seen.add(text)
            rows.append({"text": text, "label": cls})
    rng.shuffle(rows)
    return rows


def generate(seed: int = 0) -> dict[str, list[dict[str, str]]]:
    """Return {"train": [{"text": ..., "label": <class name>}, ...], "test": [...]}.

    Deterministic: depends only on ``seed`` (a private ``random.Random`` is used;
    the global random state is neither read nor changed).
    """
    _check_vocabulary()
    rng = random.Random(seed)
    seen: set[str] = set()
    train = _make_split(rng, "train", _TRAIN_PER_CLASS, seen)
    test = _make_split(rng, "test", _TEST_PER_CLASS, seen)
    return {"train": train, "test": test}
