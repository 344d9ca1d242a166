"""Small tasks that measure TuneLab's defaults: generated, seeded, with unseen rows that
are really new.

Each task has a training file (what a person would upload) and an *unseen* set written
from other templates and other vocabulary (new phrasings, new items, new cities, new
subjects), so a score on it says whether the adapter learned the task and not the file.

* ``triage`` — support emails -> billing / bug / shipping (3 labels);
* ``topics`` — short questions -> cooking / travel / fitness / money / pets (5 labels);
* ``orders`` — an order in prose -> ``{"item", "qty", "city"}`` JSON, city null when the
  text names none (an optional field);
* ``autumn`` — everyday writing requests answered with an autumn mood (a style task),
  judged by :func:`judge_style`;
* ``reviews`` — product reviews -> positive / negative / neutral (the sentiment kind);
* ``listings`` — a product's name and three facts -> a ~140-token shop listing in a house
  format (heading, prose, the facts as bullets, a fixed closing), judged by
  :func:`judge_listing`: the only task whose answers are long enough for the long-answer
  learning rate.

These are the bench's own tasks (the product never sees them while choosing defaults);
``bench/quality.py`` trains on each with no knob set and scores the unseen rows. The
defaults were chosen on the first four; ``reviews`` and ``listings`` (:data:`HELD_OUT_TASKS`)
were written afterwards to check them on tasks they were not tuned to.
"""

from __future__ import annotations

import json
import random
import re

SYSTEM = None  # the plan's system prompt is what training and scoring use


def _pick(rng: random.Random, items):
    return items[rng.randrange(len(items))]


def _row(prompt: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]}


# --- triage: 3 labels ---------------------------------------------------------------------------

_TRIAGE_TRAIN = {
    "billing": [
        "I was charged twice for my {plan} plan this month, please refund one payment.",
        "Why does my invoice show {amount} when my {plan} plan costs less?",
        "Can you change the card you bill me on? The old one expired.",
        "I cancelled my {plan} subscription but you still took {amount} from my account.",
        "Please send me a receipt for the {amount} payment I made on {day}.",
        "My bank statement has a charge of {amount} from you that I do not recognise.",
        "How do I get a refund for the {plan} upgrade I bought by mistake?",
        "The discount code was not applied and I paid the full {amount}.",
    ],
    "bug": [
        "The app crashes every time I open the {screen} screen.",
        "When I tap {button}, nothing happens at all.",
        "The {screen} page is completely blank since the last update.",
        "I get an error saying '{error}' whenever I try to log in.",
        "The {screen} screen freezes after a few seconds and I have to restart my {device}.",
        "Pressing {button} on my {device} shows a spinning wheel forever.",
        "Since version {version} the {screen} list shows duplicate entries.",
        "The export button produces an empty file on my {device}.",
    ],
    "shipping": [
        "My parcel was supposed to arrive on {day} and it still has not come.",
        "The tracking number you sent me does not work on the courier's site.",
        "The box arrived crushed and the {thing} inside is broken.",
        "Can I change the delivery address of my order to my office?",
        "The courier left my {thing} at the wrong house.",
        "It has been {n} days and my order still says 'preparing to ship'.",
        "I received someone else's {thing} instead of my order.",
        "Do you deliver on weekends? I am not home during the week.",
    ],
}
_TRIAGE_UNSEEN = {
    "billing": [
        "Hello, there are two identical payments of {amount} on my credit card for one order.",
        "Could you explain the extra fee of {amount} on this month's bill?",
        "I'd like my money back for the annual plan, I only used it for a day.",
        "You billed my old card even though I updated the payment details for the {plan} plan.",
        "Where can I download last year's invoices for my accountant?",
        "The price went up without any notice, why am I paying more now?",
    ],
    "bug": [
        "Every time I upload a photo on my {device} the whole window closes by itself.",
        "Search on the {screen} page returns no results even for words I know are there.",
        "The dark mode toggle resets to light mode whenever I reopen it.",
        "Notifications arrive twice and some of them are from last week.",
        "Hi, the page keeps reloading in a loop when I click my profile.",
        "I can't scroll past the third item, the list just stops moving.",
    ],
    "shipping": [
        "The delivery van never showed up during the slot I booked for {day}.",
        "Where is my package? The status hasn't changed for a week.",
        "Half of my order came and the {thing} is missing.",
        "The label on the parcel had my name spelled wrong and it got returned.",
        "Is it possible to pick up the order from a depot instead of home delivery?",
        "My neighbour got my parcel, can you make sure this doesn't happen again?",
    ],
}
_TRIAGE_FILL = {
    "plan": ["Pro", "Family", "Basic", "Team", "Premium"],
    "amount": ["$12.99", "$49", "€20", "$7.50", "£15", "$99"],
    "day": ["Monday", "Friday", "the 3rd", "last Tuesday", "the 21st"],
    "screen": ["settings", "profile", "calendar", "search", "checkout", "reports"],
    "button": ["Save", "Share", "Next", "Sync", "Upload"],
    "error": ["Something went wrong", "Code 500", "Session expired", "Unknown failure"],
    "device": ["phone", "tablet", "laptop", "iPad", "Android phone"],
    "version": ["2.3", "4.0.1", "5.2", "3.14"],
    "thing": ["lamp", "mug", "headphones", "blender", "book", "jacket"],
    "n": ["5", "9", "12", "15"],
}


def _fill(template: str, rng: random.Random, fill: dict[str, list[str]]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: _pick(rng, fill[m.group(1)]), template)


def _labelled(templates: dict[str, list[str]], fill: dict, count: int, rng: random.Random) -> list[dict]:
    labels = list(templates)
    rows, seen = [], set()
    attempts = 0
    while len(rows) < count and attempts < count * 50:
        attempts += 1
        label = labels[len(rows) % len(labels)]
        text = _fill(_pick(rng, templates[label]), rng, fill)
        if text in seen:
            continue
        seen.add(text)
        rows.append(_row(text, label))
    rng.shuffle(rows)
    return rows


# --- topics: 5 labels ---------------------------------------------------------------------------

_TOPICS_TRAIN = {
    "cooking": ["How long should I roast {veg} in the oven?", "What can I use instead of {ingredient} in a cake?",
                "How do I keep {veg} crisp when I fry it?", "Is it safe to freeze cooked {ingredient}?",
                "What spices go well with {veg}?"],
    "travel": ["What is the cheapest way to get from the airport to {city}?", "Do I need a visa to visit {country}?",
               "When is the best month to go to {city}?", "Which neighbourhood in {city} is good for a first visit?",
               "Is it easy to rent a car in {country}?"],
    "fitness": ["How many times a week should I do {exercise}?", "What should I eat after {exercise}?",
                "How do I stop my knees hurting during {exercise}?", "Is {exercise} enough to build strength?",
                "How do I make {exercise} less boring?"],
    "money": ["Should I pay off my {debt} before saving?", "How much of my salary should go into {account}?",
              "Is it a good idea to open {account} at my age?", "How do I start a budget when my {debt} is high?",
              "What interest rate is normal for {debt} debt?"],
    "pets": ["Why does my {pet} scratch the furniture?", "How often should I take my {pet} to the vet?",
             "What food is bad for a {pet}?", "How do I get my {pet} used to a new home?",
             "Why won't my {pet} stop barking at night?"],
}
_TOPICS_UNSEEN = {
    "cooking": ["My bread never rises, what am I doing wrong?", "Which oil is best for a stir fry?",
                "Can you marinate chicken overnight?"],
    "travel": ["Is a rail pass worth it for two weeks in Europe?", "How early should I arrive for an international flight?",
               "What should I pack for a week of hiking in Scotland?"],
    "fitness": ["Is it bad to run on an empty stomach?", "How do I warm up before lifting weights?",
                "How long until I see results from swimming?"],
    "money": ["Is an index fund safer than single stocks?", "How big should an emergency fund be?",
              "Does checking my credit score lower it?"],
    "pets": ["My parrot pulls out its feathers, is it stressed?", "How do I trim a rabbit's nails?",
             "Can two male guinea pigs live together?"],
}
_TOPICS_FILL = {
    "veg": ["carrots", "potatoes", "broccoli", "peppers", "onions"],
    "ingredient": ["eggs", "butter", "rice", "salmon", "milk"],
    "city": ["Lisbon", "Tokyo", "Prague", "Seoul", "Toronto"],
    "country": ["Japan", "Brazil", "Canada", "Vietnam", "Kenya"],
    "exercise": ["squats", "running", "yoga", "push-ups", "cycling"],
    "debt": ["credit card", "student loan", "car loan", "overdraft"],
    "account": ["a pension", "a savings account", "an ISA", "a retirement fund"],
    "pet": ["cat", "dog", "hamster", "puppy", "kitten"],
}


# --- orders: extraction with an optional field --------------------------------------------------

_ORDER_TRAIN = [
    "Please send {qty} {unit} of {item} to {city}.",
    "I'd like to order {qty} {unit} of {item}, delivered to {city}.",
    "Order: {item}, {qty} {unit}, ship to {city}.",
    "Could we get {qty} {unit} of {item}? Our shop is in {city}.",
    "We need {qty} {unit} of {item} for the {city} office.",
    "Please send {qty} {unit} of {item}.",
    "I want {qty} {unit} of {item}, I'll pick them up myself.",
    "Order {qty} {unit} of {item} please.",
]
_ORDER_UNSEEN = [
    "Hi! Can you ship {qty} {unit} of {item} over to our branch in {city}?",
    "Requesting {qty} {unit} of {item} — destination {city}.",
    "{city} store here: we're out of {item}, send {qty} {unit}.",
    "Put me down for {qty} {unit} of {item}, no delivery needed.",
    "Just {qty} {unit} of {item} for now, thanks.",
]
_ORDER_FILL = {
    "train": {
        "item": ["coffee beans", "printer paper", "green tea", "olive oil", "dish soap", "rice", "flour",
                 "sugar", "paper towels", "orange juice"],
        "city": ["Berlin", "Madrid", "Chicago", "Osaka", "Dublin", "Denver", "Lyon", "Leeds"],
        "unit": ["boxes", "packs", "bags", "cases"],
    },
    "unseen": {
        "item": ["almond milk", "sparkling water", "oat flakes", "black pepper", "honey", "lentils", "tea lights"],
        "city": ["Vienna", "Porto", "Austin", "Kyoto", "Oslo", "Glasgow", "Nantes"],
        "unit": ["boxes", "packs", "bags", "cases", "crates"],
    },
}


def _orders(templates: list[str], fill: dict, count: int, rng: random.Random) -> list[dict]:
    rows, seen = [], set()
    while len(rows) < count:
        template = _pick(rng, templates)
        qty = rng.randint(1, 40)
        item, city, unit = _pick(rng, fill["item"]), _pick(rng, fill["city"]), _pick(rng, fill["unit"])
        text = template.format(qty=qty, item=item, city=city, unit=unit)
        if text in seen:
            continue
        seen.add(text)
        answer = {"item": item, "qty": qty, "city": city if "{city}" in template else None}
        rows.append(_row(text, json.dumps(answer)))
    return rows


# --- autumn: a style task -----------------------------------------------------------------------

AUTUMN_WORDS = ("autumn", "fall", "leaf", "leaves", "amber", "golden", "crisp", "harvest", "maple", "russet",
                "woodsmoke", "smoke", "october", "november", "chestnut", "chestnuts", "acorn", "acorns", "cider",
                "pumpkin", "pumpkins", "orchard", "bonfire", "mist", "misty", "fog", "frost", "copper", "rust",
                "ember", "embers", "apple", "apples", "hearth", "scarf", "wool", "dusk", "geese")
_AUTUMN_IMAGES = [
    "amber leaves drift past the window", "the air smells of woodsmoke and apples", "a crisp wind shakes the maples",
    "the orchard is heavy with the last harvest", "mist hangs low over the fields in the golden light",
    "chestnuts roast somewhere down the street", "copper leaves crunch underfoot", "the geese pass overhead at dusk",
    "a bonfire glows at the edge of the garden", "the first frost silvers the pumpkins on the step",
]
# answers follow the request: a description, two sentences, a note, a remark; the mood rides along
_AUTUMN_FRAMES = {
    "Describe {subject}.": [
        "{Subject} feels slower in October: {image1}, and {image2}.",
        "{Subject} belongs to this season now; {image1}, and {image2}.",
        "Picture {subject} at the turn of the year, while {image1} and {image2}.",
    ],
    "Write two sentences about {subject}.": [
        "{Subject} waits in the cool of the afternoon. Outside, {image1}, and {image2}.",
        "There is something gentle about {subject} this time of year. {Image1}, and {image2}.",
    ],
    "Write a short note about {subject}.": [
        "Dear Sam, I keep thinking about {subject}; {image1}, and {image2}. Come by soon.",
        "A quick note: {subject} is just as you left it, and {image1} while {image2}.",
    ],
    "Say something about {subject}.": [
        "I think of {subject} the way I think of autumn — {image1}, {image2}.",
        "{Subject}, wrapped in a wool scarf of a day, while {image1} and {image2}.",
    ],
}
_STYLE_TRAIN_ASKS = list(_AUTUMN_FRAMES)
_STYLE_TRAIN_SUBJECTS = ["a morning coffee", "the walk to work", "a quiet library", "a train station", "a bakery",
                         "an old bicycle", "a market square", "a rainy window", "a garden bench", "a lighthouse",
                         "a grandmother's kitchen", "a football match", "a bus stop", "a bookshop", "a school yard",
                         "a fishing boat", "a mountain cabin", "a city park", "a candle", "a letter from home",
                         "a piano lesson", "a street musician", "a farmhouse", "a cat asleep on a chair"]
_STYLE_UNSEEN = [  # (request, words of which one shows the answer is about it)
    ("Tell me about your favourite sandwich.", ("sandwich",)),
    ("Write a short thank-you message to a neighbour.", ("thank", "neighbour", "neighbor")),
    ("Describe a busy airport.", ("airport", "plane", "flight")),
    ("Give me a few lines about learning to swim.", ("swim",)),
    ("Write a sentence about a new phone.", ("phone",)),
    ("Describe the view from a hotel balcony.", ("balcony", "hotel", "view")),
    ("Say something about a dentist's waiting room.", ("dentist", "waiting")),
    ("Write a short note inviting a friend to dinner.", ("dinner", "friend", "invite")),
    ("Describe a bowl of soup.", ("soup", "bowl")),
    ("Tell me about a long car drive.", ("car", "drive", "road")),
    ("Write two sentences about a supermarket.", ("supermarket", "shop", "store", "aisle")),
    ("Describe a child's birthday party.", ("birthday", "party", "child")),
    ("Write a few words about a laptop.", ("laptop", "computer", "screen")),
    ("Describe a swimming pool.", ("pool", "swim")),
    ("Tell me about a visit to the museum.", ("museum",)),
    ("Write a short message about a delayed train.", ("train", "delay")),
    ("Describe a pair of running shoes.", ("shoe", "run")),
    ("Write a sentence about a cup of hot chocolate.", ("chocolate", "cup")),
    ("Describe an office meeting.", ("meeting", "office")),
    ("Tell me about a river.", ("river", "water")),
    ("Write a line about a sleepy dog.", ("dog",)),
    ("Describe a city skyline.", ("skyline", "city", "tower", "building")),
    ("Write a short note about moving house.", ("move", "moving", "house", "home", "box")),
    ("Describe a bicycle repair shop.", ("bicycle", "bike", "repair", "shop")),
    ("Tell me about breakfast in bed.", ("breakfast", "bed")),
    ("Write two sentences about a concert.", ("concert", "music", "band", "song")),
    ("Describe a playground.", ("playground", "swing", "slide", "child")),
    ("Write a sentence about a letter you never sent.", ("letter",)),
    ("Describe a wedding.", ("wedding", "bride", "groom")),
    ("Tell me about a snowy street.", ("snow", "street")),
]


def _autumn(count: int, rng: random.Random) -> list[dict]:
    rows, seen = [], set()
    while len(rows) < count:
        subject = _pick(rng, _STYLE_TRAIN_SUBJECTS)
        ask = _pick(rng, _STYLE_TRAIN_ASKS)
        image1, image2 = rng.sample(_AUTUMN_IMAGES, 2)
        frame = _pick(rng, _AUTUMN_FRAMES[ask])
        answer = frame.format(Subject=subject[0].upper() + subject[1:], subject=subject, image1=image1,
                              Image1=image1[0].upper() + image1[1:], image2=image2)
        if (ask, answer) in seen:
            continue
        seen.add((ask, answer))
        rows.append(_row(ask.format(subject=subject), answer))
    return rows


def judge_style(request_words: tuple[str, ...], answer: str, prompt: str = "") -> dict:
    """The bench's style judge: the answer carries the mood when it holds 2+ distinct autumn
    words (:data:`AUTUMN_WORDS`, not counting words of the prompt), and does what was asked
    when it names the request's subject (one of ``request_words``, by prefix). Checked by
    hand on a sample of answers (docs/training.md)."""
    words = re.findall(r"[a-z]+", answer.lower())
    asked = set(re.findall(r"[a-z]+", prompt.lower()))
    mood = sorted({w for w in words if w in AUTUMN_WORDS and w not in asked})
    on_task = any(w.startswith(subject) for subject in request_words for w in words)
    return {"mood_words": mood, "mood": len(mood) >= 2, "on_task": on_task, "ok": len(mood) >= 2 and on_task}


# --- reviews: sentiment (the product's sentiment kind) ------------------------------------------

_REVIEW_TRAIN = {
    "positive": [
        "The {product} works perfectly and arrived a day early.", "I love my new {product}, it is worth every penny.",
        "Great {product}: solid, quiet and easy to set up.", "Five stars. The {product} does exactly what it promises.",
        "My family uses the {product} every day and we are really happy with it.",
        "Excellent quality, the {product} feels like it will last for years.",
    ],
    "negative": [
        "The {product} broke after two days. Very disappointed.", "Do not buy this {product}, it stopped working.",
        "Terrible {product}: loud, flimsy and the battery dies fast.", "One star. The {product} arrived scratched.",
        "I returned the {product} because it never charged properly.",
        "Waste of money, the {product} is much smaller than the photos.",
    ],
    "neutral": [
        "The {product} arrived on {day}.", "It is a {product}. It does what a {product} does.",
        "I bought the {product} in grey; it also comes in blue.", "The {product} came with a manual and a cable.",
        "Average {product}, nothing special either way.", "I have used the {product} for a week so far.",
    ],
}
_REVIEW_UNSEEN = {
    "positive": ["Honestly the best {product} I have owned, I already ordered a second one.",
                 "Setup took two minutes and the {product} has been flawless since.",
                 "Really pleased, the {product} beats the pricier brand I had before."],
    "negative": ["After a month the {product} makes a grinding noise and support never replied.",
                 "The {product} looked cheap out of the box and the lid snapped on day one.",
                 "Regret this purchase, the {product} overheats and smells of burnt plastic."],
    "neutral": ["The {product} is about the size of a paperback.",
                "Delivery was on time; the {product} is in the cupboard until we move.",
                "The {product} has two settings, low and high."],
}
_REVIEW_FILL = {
    "train": {"product": ["kettle", "desk lamp", "backpack", "blender", "phone case", "toaster", "office chair"],
              "day": ["Monday", "Friday", "Saturday", "the 3rd"]},
    "unseen": {"product": ["air fryer", "rice cooker", "yoga mat", "hair dryer", "monitor stand"],
               "day": ["Tuesday", "Sunday"]},
}


# --- listings: long answers in a house format -----------------------------------------------------

LISTING_SECTION = "What you get:"
LISTING_CLOSING = ("Free delivery on orders over 40 euros, and returns are free within 30 days.\n"
                   "Thank you for shopping at Fernhill, the small shop for everyday things.")
_LISTING_ASKS = {
    "train": ["Write a listing for the {name}. Facts: {facts}.", "Listing please: {name}. {facts}.",
              "We are adding the {name} to the shop. Its facts: {facts}. Write the listing.",
              "Product: {name}\nFacts: {facts}\nWrite our listing for it."],
    "unseen": ["New in stock, the {name}, with these points: {facts}. Can you write it up for the shop?",
               "Draft the shop page for the {name} ({facts})."],
}
_LISTING_TAGLINES = ["Made for the everyday.", "Small things, done well.", "Built to be used, not kept for best.",
                     "Quietly good at its job.", "Simple, sturdy, ready when you are."]
_LISTING_INTROS = [
    "Meet the {name}, designed for daily use and built to last.",
    "The {name} brings a little order and calm to busy days.",
    "We picked the {name} because it does one job and does it well.",
    "Say hello to the {name}, a small upgrade you will notice every day.",
    "The {name} is the kind of thing you stop thinking about because it simply works.",
]
_LISTING_BODY = [
    "Every piece was tested by our team before it reached the shelf.",
    "It is made in a small workshop that pays fair wages and uses recycled packaging.",
    "It looks at home in a flat, an office or a holiday cottage.",
    "We have used one ourselves for months, and it still looks new.",
    "It is easy to clean and has no parts that wear out quickly.",
    "It makes a thoughtful gift, and it arrives in a plain recyclable box.",
    "Customers tell us it is the one thing they would buy again.",
    "It is covered by our two-year guarantee, no questions asked.",
]
_LISTING_PRODUCTS = {
    "train": {
        "Harbor Desk Lamp": ["warm white LED", "adjustable arm", "USB-C powered", "weighs 1.2 kg", "oak base"],
        "Tide Travel Mug": ["holds 350 ml", "keeps drinks hot for 6 hours", "leak-proof lid", "dishwasher safe",
                            "steel body"],
        "Ridge Daypack": ["20 litre volume", "padded laptop sleeve", "water-resistant fabric", "two side pockets",
                          "weighs 700 g"],
        "Alder Reading Chair": ["solid ash frame", "linen cushion", "seat height 44 cm", "easy to assemble",
                                "holds up to 120 kg"],
        "Brook Kettle": ["1.5 litre capacity", "boils in 3 minutes", "auto shut-off", "matte black finish",
                         "cordless base"],
        "Fern Cutting Board": ["made of walnut", "juice groove on one side", "40 by 25 cm", "hand oiled",
                               "non-slip feet"],
        "Moss Throw Blanket": ["100% merino wool", "130 by 170 cm", "machine washable", "woven in Wales",
                               "four colours"],
    },
    "unseen": {
        "Pebble Bike Light": ["three brightness modes", "charges by USB", "runs for 10 hours", "fits any handlebar"],
        "Cedar Plant Pot": ["glazed ceramic", "drainage hole and saucer", "18 cm wide", "frost resistant"],
        "Gale Umbrella": ["windproof frame", "opens with one button", "folds to 28 cm", "reflective trim"],
        "Quill Notebook": ["A5 dotted pages", "lies flat when open", "192 pages", "recycled paper"],
        "Echo Headphones": ["noise cancelling", "30 hours of battery", "foldable", "built-in microphone"],
    },
}


def listing_answer(name: str, facts: list[str], rng: random.Random) -> str:
    body = " ".join(rng.sample(_LISTING_BODY, 3))
    bullets = "\n".join(f"- {f}" for f in facts)
    return (f"{name}\n{_pick(rng, _LISTING_TAGLINES)}\n\n{_pick(rng, _LISTING_INTROS).format(name=name)} "
            f"{body}\n\n{LISTING_SECTION}\n{bullets}\n\n{LISTING_CLOSING}")


def _listings(split: str, count: int, rng: random.Random) -> list[dict]:
    rows, seen = [], set()
    products = _LISTING_PRODUCTS[split]
    while len(rows) < count:
        name = _pick(rng, sorted(products))
        facts = rng.sample(products[name], 3)
        prompt = _pick(rng, _LISTING_ASKS[split]).format(name=name, facts="; ".join(facts))
        if prompt in seen:
            continue
        seen.add(prompt)
        row = _row(prompt, listing_answer(name, facts, rng))
        if split == "unseen":
            row["judge"] = {"name": name, "facts": facts}
        rows.append(row)
    return rows


def judge_listing(want: dict, answer: str) -> dict:
    """The bench's listing judge: ``format`` when the answer opens with a line that is the
    product's name, has the :data:`LISTING_SECTION` and ends with :data:`LISTING_CLOSING`
    (once, so a run-on repeat fails); ``facts`` when the section's bullets are exactly the
    three facts given, word for word, in the order given; ``ok`` when both hold."""
    text = answer.strip()
    lines = text.splitlines()
    opens = bool(lines) and lines[0].strip() == want["name"]
    closes = text.endswith(LISTING_CLOSING) and text.count(LISTING_CLOSING) == 1
    section = text.split(LISTING_SECTION + "\n", 1)
    bullets = ([ln[2:].strip() for ln in section[1].split("\n\n", 1)[0].splitlines() if ln.startswith("- ")]
               if len(section) == 2 else [])
    fmt = opens and closes and len(section) == 2
    facts = bullets == list(want["facts"])
    return {"format": fmt, "facts": facts, "ok": fmt and facts}


# --- the tasks ----------------------------------------------------------------------------------


def build(task: str, seed: int = 0) -> dict:
    """One task: ``goal``, ``kind``, ``train`` rows (the upload) and ``unseen`` rows (each
    with ``judge`` words for the style task)."""
    rng = random.Random(f"{task}-{seed}")
    if task == "triage":
        return {"goal": "sort these support emails into billing / bug / shipping", "kind": "classification",
                "train": _labelled(_TRIAGE_TRAIN, _TRIAGE_FILL, 90, rng),
                "unseen": _labelled(_TRIAGE_UNSEEN, _TRIAGE_FILL, 30, rng)}
    if task == "topics":
        return {"goal": "classify questions as cooking / travel / fitness / money / pets", "kind": "classification",
                "train": _labelled(_TOPICS_TRAIN, _TOPICS_FILL, 100, rng),
                "unseen": _labelled(_TOPICS_UNSEEN, _TOPICS_FILL, 15, rng)}
    if task == "orders":
        return {"goal": "extract the item, quantity and city of each order as JSON", "kind": "extraction",
                "train": _orders(_ORDER_TRAIN, _ORDER_FILL["train"], 120, rng),
                "unseen": _orders(_ORDER_UNSEEN, _ORDER_FILL["unseen"], 40, rng)}
    if task == "autumn":
        unseen = [dict(_row(ask, ""), judge=list(words)) for ask, words in _STYLE_UNSEEN]
        return {"goal": "write with an autumn mood", "kind": "style", "train": _autumn(80, rng), "unseen": unseen}
    if task == "reviews":
        return {"goal": "label the sentiment of each product review", "kind": "sentiment",
                "train": _labelled(_REVIEW_TRAIN, _REVIEW_FILL["train"], 90, rng),
                "unseen": _labelled(_REVIEW_UNSEEN, _REVIEW_FILL["unseen"], 30, rng)}
    if task == "listings":
        return {"goal": "write product listings in our shop's house format", "kind": "style", "judge": "listing",
                "answer_tokens": 224,  # the longest reference is ~170 tokens
                "train": _listings("train", 80, rng), "unseen": _listings("unseen", 20, rng)}
    raise ValueError(f"unknown task {task!r}; one of {', '.join(TASKS)}")


def judge(task: dict, row: dict, answer: str) -> dict:
    """A judged task's verdict on one answer to an unseen row: :func:`judge_listing` for the
    listings, else :func:`judge_style` (the autumn mood); each has ``ok``."""
    if task.get("judge") == "listing":
        return judge_listing(row["judge"], answer)
    return judge_style(tuple(row["judge"]), answer, row["messages"][0]["content"])


TASKS = ("triage", "topics", "orders", "autumn", "reviews", "listings")
# measured after the defaults were chosen: the rules were not tuned on them
HELD_OUT_TASKS = ("reviews", "listings")
