"""A deterministic synthetic product catalogue, so the demo, tests and benchmarks need no outside data.

Run: ``python -m training.engine.synthetic --n 1000 --out var/synthetic.jsonl [--format csv] [--seed 0]``

Pure Python, part of the engine (which imports no Django): the engine CLI builds bases from it, and the
demo, the catalogue import tests and the benchmarks use it as their data.

Each product has the keys of the reference data set (``../shared/data/amazon_items.jsonl``): ``id, title,
category, text, price, details, source``. Prices are drawn from a model the text reveals, so that a
TF-IDF baseline (and a fine-tuned LM) can learn something: every category has nouns with a base price,
brands come in budget/mid/premium tiers, adjectives and features carry multipliers, and a log-normal
noise keeps it from being trivially exact. Texts are 40-120 words, sometimes with a part number or an
Amazon-style boilerplate phrase, so the curation rules have something to scrub.

The stream is prefix-stable: the first k products of ``generate_products(n, seed)`` are the same for
every ``n >= k``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SOURCE = "synthetic"
PRICE_MIN = 0.5
PRICE_MAX = 999.0
FIELDS = ("id", "title", "category", "text", "price", "details", "source")

# category -> (nouns with a base price in dollars, materials, uses)
_CATALOGUE: dict[str, tuple[list[tuple[str, float]], list[str], list[str]]] = {
    "Appliances": (
        [
            ("Refrigerator Water Filter", 24),
            ("Dishwasher Rack Wheel Kit", 11),
            ("Countertop Microwave Oven", 130),
            ("Stand Mixer", 240),
            ("Chest Freezer", 380),
            ("Espresso Machine", 320),
            ("Dryer Vent Cleaning Kit", 19),
            ("Range Hood Insert", 290),
            ("Portable Ice Maker", 150),
            ("Washing Machine Drain Pump", 42),
            ("Oven Door Gasket", 16),
            ("Air Fryer", 95),
        ],
        [
            "stainless steel",
            "BPA-free plastic",
            "tempered glass",
            "food-grade silicone",
            "enamel-coated steel",
        ],
        [
            "busy kitchens",
            "small apartments",
            "family meals",
            "meal prep",
            "laundry rooms",
            "office breakrooms",
        ],
    ),
    "Musical_Instruments": (
        [
            ("Guitar Strings Set", 9),
            ("Instrument Patch Cable", 14),
            ("Acoustic Guitar", 260),
            ("Digital Piano", 520),
            ("Studio Condenser Microphone", 180),
            ("Guitar Effects Pedal", 110),
            ("Drum Practice Pad", 28),
            ("Violin Shoulder Rest", 21),
            ("Powered Studio Monitor", 230),
            ("Ukulele", 75),
            ("Clip-On Tuner", 12),
        ],
        ["solid spruce", "rosewood", "nickel-plated steel", "oxygen-free copper", "die-cast zinc", "maple"],
        [
            "stage performances",
            "home studios",
            "rehearsals",
            "beginners",
            "touring musicians",
            "music lessons",
        ],
    ),
    "Tools_and_Home_Improvement": (
        [
            ("Cordless Drill Driver", 120),
            ("Mesh Tarp", 35),
            ("Socket Wrench Set", 65),
            ("LED Shop Light", 32),
            ("Laser Level", 90),
            ("Table Saw", 560),
            ("Tape Measure", 11),
            ("Wet/Dry Shop Vacuum", 130),
            ("Smart Door Lock", 170),
            ("Utility Knife", 9),
            ("Air Compressor", 240),
            ("Ceiling Fan", 190),
        ],
        ["hardened steel", "chrome vanadium", "aluminum alloy", "polypropylene", "ABS housing", "brass"],
        ["workshops", "job sites", "home repairs", "garages", "renovation projects", "weekend DIY"],
    ),
    "Video_Games": (
        [
            ("Wireless Controller", 55),
            ("Gaming Headset", 70),
            ("Racing Wheel", 260),
            ("Console Charging Dock", 25),
            ("Mechanical Gaming Keyboard", 95),
            ("Collector's Edition Game", 120),
            ("Thumb Grip Caps", 7),
            ("Handheld Console Case", 18),
            ("Gaming Monitor", 380),
            ("VR Headset Strap", 35),
        ],
        ["soft-touch plastic", "braided nylon", "memory foam", "brushed aluminum", "EVA hard shell"],
        ["competitive play", "long gaming sessions", "couch co-op", "streamers", "travel", "esports"],
    ),
    "Handmade_Products": (
        [
            ("Ceramic Coffee Mug", 24),
            ("Leather Journal", 38),
            ("Beaded Bracelet", 18),
            ("Walnut Cutting Board", 70),
            ("Knitted Throw Blanket", 110),
            ("Sterling Silver Necklace", 85),
            ("Soy Wax Candle", 16),
            ("Hand-Painted Wall Art", 160),
            ("Macrame Plant Hanger", 22),
            ("Quilted Wall Hanging", 240),
        ],
        ["reclaimed wood", "full-grain leather", "sterling silver", "organic cotton", "hand-thrown clay"],
        ["gifts", "home decor", "weddings", "birthdays", "cozy evenings", "housewarming"],
    ),
    "Toys_and_Games": (
        [
            ("Building Block Set", 45),
            ("Plush Teddy Bear", 17),
            ("Strategy Board Game", 40),
            ("Remote Control Car", 60),
            ("Wooden Puzzle", 14),
            ("Kids Ride-On Car", 260),
            ("Dollhouse", 140),
            ("Card Game", 12),
            ("Outdoor Playset", 480),
            ("Science Kit", 33),
        ],
        ["non-toxic plastic", "solid wood", "soft polyester", "recycled cardboard", "steel frame"],
        ["family game night", "toddlers", "classrooms", "birthday parties", "rainy days", "ages 8 and up"],
    ),
    "Health_and_Personal_Care": (
        [
            ("Electric Toothbrush", 60),
            ("Digital Thermometer", 15),
            ("Blood Pressure Monitor", 45),
            ("Massage Gun", 120),
            ("Vitamin D3 Supplement", 13),
            ("Hair Dryer", 75),
            ("Heating Pad", 30),
            ("Pulse Oximeter", 25),
            ("Knee Brace", 20),
        ],
        ["medical-grade silicone", "hypoallergenic fabric", "ceramic", "latex-free rubber", "soft neoprene"],
        ["daily wellness", "travel", "recovery", "seniors", "home care", "athletes"],
    ),
    "Office_Products": (
        [
            ("Ballpoint Pens", 9),
            ("Ergonomic Office Chair", 230),
            ("Label Maker", 40),
            ("Paper Shredder", 90),
            ("Standing Desk Converter", 170),
            ("Laminator", 45),
            ("Spiral Notebooks", 11),
            ("Monitor Stand", 35),
            ("Laser Printer", 260),
            ("Whiteboard", 55),
        ],
        ["recycled paper", "steel mesh", "bamboo", "high-density foam", "aluminum"],
        ["home offices", "classrooms", "small businesses", "students", "conference rooms", "remote work"],
    ),
    "Cell_Phones_and_Accessories": (
        [
            ("Phone Case", 12),
            ("Screen Protector", 8),
            ("Wireless Charger", 25),
            ("USB-C Cable", 9),
            ("Power Bank", 35),
            ("Car Phone Mount", 18),
            ("Bluetooth Earbuds", 60),
            ("Smartwatch Band", 14),
            ("Unlocked Smartphone", 420),
        ],
        ["shockproof TPU", "tempered glass", "braided nylon", "vegan leather", "aluminum alloy"],
        ["commuters", "road trips", "outdoor adventures", "the office", "workouts", "everyday carry"],
    ),
}
_CATEGORIES = list(_CATALOGUE)

# Tiered vocabulary: the words a model can use to tell cheap from expensive.
_BRANDS: list[tuple[list[str], float, str]] = [
    (["Valuline", "EconoMax", "BasicHome", "Thriftwise", "Dollarly", "Simplee"], 0.6, "budget"),
    (["Northbay", "Corvex", "Halden", "Lumora", "Tessaro", "Brightfield"], 1.0, "mid"),
    (
        ["Aurelius", "Stratton Pro", "Veridian Elite", "Kessler & Wolfe", "Maison Royale", "Titanis"],
        1.8,
        "premium",
    ),
]
_ADJECTIVES: list[tuple[list[str], float]] = [
    (["Compact", "Basic", "Lightweight", "Mini", "Everyday", "Simple"], 0.75),
    (["Durable", "Classic", "Versatile", "Standard", "Reliable", "Modern"], 1.0),
    (["Professional", "Premium", "Heavy-Duty", "Commercial-Grade", "Deluxe", "Luxury"], 1.45),
]
# (title suffix, body sentence, price multiplier)
_FEATURES: list[tuple[str, str, float]] = [
    ("with Wi-Fi", "Smart Wi-Fi control lets you manage it from the companion app", 1.35),
    ("Stainless Steel", "Stainless steel construction resists rust and corrosion", 1.2),
    ("Set of 2", "Comes as a set of two matching units", 1.6),
    ("Pack of 4", "This value pack contains four pieces", 1.9),
    ("Replacement Part", "A direct-fit replacement part that installs in minutes", 0.7),
    ("with Carrying Case", "A padded carrying case keeps everything together", 1.1),
    ("Energy Star", "Energy Star certified for lower running costs", 1.15),
    ("Bluetooth", "Bluetooth connectivity pairs instantly with phones and tablets", 1.25),
    ("Rechargeable", "The rechargeable battery lasts up to 20 hours on a charge", 1.2),
    ("Travel Size", "Travel size fits easily in a backpack or carry-on", 0.8),
    ("Extra Large", "The extra large size offers more room and capacity", 1.3),
    ("Limited Edition", "A limited edition finish made in small numbers", 1.5),
]
_TIER_SENTENCES = {
    "budget": [
        "An affordable choice for occasional use",
        "Simple design with no frills at a price that fits any budget",
        "A good starter option that gets the job done",
    ],
    "mid": [
        "Balanced performance and value for everyday use",
        "A dependable pick backed by thousands of happy customers",
        "Thoughtful details make it easy to live with",
    ],
    "premium": [
        "Engineered with precision components for years of reliable daily use",
        "Hand-finished and inspected for a flawless, luxurious feel",
        "Our flagship model with the best materials we have ever used",
    ],
}
_GENERIC_SENTENCES = [
    "Easy to clean and simple to set up out of the box",
    "Customer support is available seven days a week",
    "Includes a quick start guide and all mounting hardware",
    "Designed and tested to meet strict safety standards",
    "Its sleek finish blends in with any decor",
    "Quiet operation means it will not disturb the household",
    "Satisfaction guaranteed or your money back within thirty days",
    "Ships in frustration-free recyclable packaging",
]
_COLORS = ["Black", "White", "Silver", "Navy Blue", "Red", "Forest Green", "Gray", "Walnut", "Rose Gold"]
_BOILERPLATE = [
    "Batteries Included? No",
    "Batteries Required? No",
    "Is Discontinued By Manufacturer No",
    "Date First Available March 3, 2021",
]
_PART_CHARS = "ABCDEFGHJKLMNPRSTUVWXYZ"


def _round_price(raw: float, rng: random.Random) -> float:
    """Shop-like prices: mostly .99/.95 endings, whole dollars for larger ones."""
    raw = min(max(raw, PRICE_MIN), PRICE_MAX)
    if raw < 2:
        return round(raw, 2)
    ending = rng.random()
    if ending < 0.55:
        price = math.floor(raw) + 0.99
    elif ending < 0.75:
        price = math.floor(raw) + 0.95
    else:
        price = float(round(raw))
    return round(min(max(price, PRICE_MIN), PRICE_MAX), 2)


def _part_number(rng: random.Random) -> str:
    chars = _PART_CHARS
    rand = rng.random
    a, b, c = (chars[int(rand() * len(chars))] for _ in range(3))
    return f"{a}{b}{1000 + int(rand() * 99000)}{c}"


def generate_products(n: int, seed: int = 0) -> Iterator[dict[str, Any]]:
    """Yield ``n`` deterministic products (same ``seed`` → same products, in the same order)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    rand = rng.random

    # random.choice/sample/randint cost microseconds each; indexing with rand() keeps a million
    # products within tens of seconds.
    def pick(items: list[Any]) -> Any:
        return items[int(rand() * len(items))]

    encode = json.JSONEncoder(separators=(", ", ": ")).encode
    for i in range(n):
        category = pick(_CATEGORIES)
        nouns, materials, uses = _CATALOGUE[category]
        noun, base = pick(nouns)
        brands, brand_mult, tier = pick(_BRANDS)
        brand = pick(brands)
        adjectives, adj_mult = pick(_ADJECTIVES)
        adjective = pick(adjectives)
        features = [pick(_FEATURES)]
        if rand() < 0.4:
            second = pick(_FEATURES)
            if second is not features[0]:
                features.append(second)
        mult = brand_mult * adj_mult
        for feature in features:
            mult *= feature[2]
        # log-normal noise (sigma ~0.22) from two uniforms: cheaper than rng.gauss, same spread
        noise = math.exp((rand() + rand() + rand() - 1.5) * 0.38)
        price = _round_price(base * mult * noise, rng)

        material = pick(materials)
        use = pick(uses)
        use2 = pick(uses)
        color = pick(_COLORS)
        title = f"{brand} {adjective} {noun} {features[0][0]}, {color}"
        sentences = [
            f"The {brand} {noun.lower()} is a {adjective.lower()} choice for {use}",
            f"Made from {material} in {color.lower()}",
            *(feature[1] for feature in features),
            pick(_TIER_SENTENCES[tier]),
            f"Perfect for {use2}",
        ]
        start = int(rand() * len(_GENERIC_SENTENCES))
        sentences.extend(_GENERIC_SENTENCES[start : start + int(rand() * 5)])
        if rand() < 0.35:
            sentences.append(f"Item model number {_part_number(rng)}")
        if rand() < 0.25:
            sentences.append(pick(_BOILERPLATE))
        width, height = 2 + int(rand() * 38), 1 + int(rand() * 29)
        weight = round(0.1 + rand() * 25 * (base / 200 + 0.2), 1)
        sentences.append(f"Dimensions {width} x {height} inches, weight {weight} pounds")
        yield {
            "id": f"syn{seed}-{i:07d}",
            "title": title,
            "category": category,
            "text": f"{title}\n" + ". ".join(sentences) + ".",
            "price": price,
            "details": encode(
                {"Brand": brand, "Color": color, "Material": material, "Item Weight": f"{weight} pounds"}
            ),
            "source": SOURCE,
        }


def write_jsonl(path: str | Path, n: int, seed: int = 0) -> Path:
    """Write ``n`` products as JSON Lines, streaming (memory does not grow with ``n``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dumps = json.JSONEncoder(ensure_ascii=False).encode
    with path.open("w", encoding="utf-8") as out:
        for product in generate_products(n, seed):
            out.write(dumps(product))
            out.write("\n")
    return path


def write_csv(path: str | Path, n: int, seed: int = 0) -> Path:
    """Write ``n`` products as CSV with a header row (the columns of ``FIELDS``), streaming."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(generate_products(n, seed))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a deterministic synthetic product catalogue.")
    parser.add_argument("--n", type=int, default=1000, help="number of products")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same catalogue)")
    parser.add_argument("--out", type=Path, required=True, help="output file")
    parser.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    args = parser.parse_args(argv)
    writer = write_csv if args.format == "csv" else write_jsonl
    path = writer(args.out, args.n, args.seed)
    print(f"wrote {args.n} products to {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
