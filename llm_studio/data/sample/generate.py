"""Generate the shipped sample dataset `sample-qa` (train.csv, validation.csv in this folder).

    python -m llm_studio.data.sample.generate          # rewrites both files, byte for byte the same

A closed world of 90 short facts in 7 kinds (small sums, capitals, opposites, irregular plurals,
word reversal, meters -> centimeters, hours -> minutes), each asked with 4 phrasings (templates).
Train holds every fact under 3 of its 4 phrasings; the held-out phrasing of 50 facts is the
validation set. Every template is seen in train with other facts, so validation measures whether a
model learned the facts across phrasings (what a tiny model fine-tuned for minutes on CPU can do),
not generalization to new facts. Answers are one word or number, so exact match is a fair metric.
Train also holds 15 multi-turn threads (id/parent_id; two of them branch) built from train phrasings.
"""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path

SEED = 42
HERE = Path(__file__).resolve().parent
COLUMNS = ("id", "parent_id", "system", "prompt", "answer")
SYSTEM = "You are a quiz assistant. Answer with one word or number."
N_VALIDATION = 50
N_THREADS = 15

# Each phrasing ends with the fact's subject, so phrasings differ in their opening words only: what a
# tiny model must learn is the subject -> answer mapping, and that the opening words do not matter.
TEMPLATES = {
    "add": ("What is {x} + {y}?", "Add {x} and {y}.", "Compute {x} plus {y}.", "What is the sum of {x} and {y}?"),
    "capital": ("What is the capital of {x}?", "Name the capital city of {x}.",
                "Which city is the capital of {x}?", "Tell me the capital of {x}."),
    "opposite": ("What is the opposite of {x}?", "Give the antonym of {x}.",
                 "Name a word that means the opposite of {x}.", "Which word is the opposite of {x}?"),
    "plural": ("What is the plural of {x}?", "Give the plural form of {x}.", "Write the plural of {x}.",
               "What do you call more than one {x}?"),
    "reverse": ("Reverse the word {x}.", "Spell the word backwards: {x}.", "What is the reverse of {x}?",
                "Write the letters in reverse order: {x}."),
    "centimeters": ("How many centimeters are in {x} meters?", "Convert to centimeters: {x} meters.",
                    "Give in centimeters: {x} meters.", "How many centimeters make {x} meters?"),
    "minutes": ("How many minutes are in {x} hours?", "Convert to minutes: {x} hours.",
                "Give in minutes: {x} hours.", "How many minutes make {x} hours?"),
}
CAPITALS = {"France": "Paris", "Italy": "Rome", "Spain": "Madrid", "Germany": "Berlin", "Japan": "Tokyo",
            "Egypt": "Cairo", "Peru": "Lima", "Kenya": "Nairobi", "Canada": "Ottawa", "Norway": "Oslo",
            "Greece": "Athens", "Russia": "Moscow", "China": "Beijing", "Chile": "Santiago",
            "Poland": "Warsaw", "Cuba": "Havana"}
OPPOSITES = {"hot": "cold", "big": "small", "up": "down", "fast": "slow", "light": "dark", "happy": "sad",
             "open": "closed", "early": "late", "full": "empty", "wet": "dry", "loud": "quiet",
             "hard": "soft", "rich": "poor", "true": "false"}
PLURALS = {"mouse": "mice", "child": "children", "foot": "feet", "tooth": "teeth", "man": "men",
           "woman": "women", "goose": "geese", "person": "people", "box": "boxes", "city": "cities",
           "leaf": "leaves", "knife": "knives"}
REVERSE_WORDS = ("cat", "dog", "sun", "book", "tree", "fish", "star", "milk", "door", "lamp", "bird", "rain")
THREAD_LINKS = ("Next question: {q}", "And now: {q}", "One more. {q}")


def facts(rng: random.Random) -> dict[str, list[dict]]:
    """kind -> [{"fields": {...}, "answer": str}], in a fixed order."""
    pairs = sorted(rng.sample([(x, y) for x in range(1, 10) for y in range(1, 10)], 20))
    out = {
        "add": [({"x": x, "y": y}, str(x + y)) for x, y in pairs],
        "capital": [({"x": k}, v) for k, v in CAPITALS.items()],
        "opposite": [({"x": k}, v) for k, v in OPPOSITES.items()],
        "plural": [({"x": k}, v) for k, v in PLURALS.items()],
        "reverse": [({"x": w}, w[::-1]) for w in REVERSE_WORDS],
        "centimeters": [({"x": n}, str(n * 100)) for n in range(2, 10)],
        "minutes": [({"x": n}, str(n * 60)) for n in range(2, 10)],
    }
    return {kind: [{"fields": f, "answer": a} for f, a in items] for kind, items in out.items()}


def build(seed: int = SEED) -> tuple[list[dict], list[dict]]:
    """(train rows, validation rows) as dicts over COLUMNS."""
    rng = random.Random(seed)
    world = facts(rng)
    singles, held_out = [], []
    for kind, items in world.items():
        templates = TEMPLATES[kind]
        for i, fact in enumerate(items):
            fact["held_out"] = i % len(templates)  # rotate, so each template is seen in train too
            fact["train_templates"] = [t for k, t in enumerate(templates) if k != fact["held_out"]]
            for template in fact["train_templates"]:
                singles.append((template.format(**fact["fields"]), fact["answer"]))
            held_out.append((kind, templates[fact["held_out"]].format(**fact["fields"]), fact["answer"]))
    rng.shuffle(singles)
    train = [_row(f"q{i:03d}", None, None, p, a) for i, (p, a) in enumerate(singles, start=1)]
    train += _threads(rng, world)

    # Validation: the held-out phrasing of N_VALIDATION facts, spread over the kinds in proportion.
    total = len(held_out)
    valid_pool: list[tuple[str, str]] = []
    for kind in world:
        pool = [(p, a) for k, p, a in held_out if k == kind]
        valid_pool += rng.sample(pool, round(len(pool) * N_VALIDATION / total))
    rng.shuffle(valid_pool)
    validation = [_row(f"v{i:03d}", None, None, p, a) for i, (p, a) in enumerate(valid_pool, start=1)]

    train_prompts = {r["prompt"] for r in train}
    assert not any(r["prompt"] in train_prompts for r in validation), "a validation phrasing leaked into train"
    return train, validation


def _threads(rng: random.Random, world: dict[str, list[dict]]) -> list[dict]:
    """Multi-turn threads: 2-3 exchanges on one kind; threads 1 and 2 branch after their first exchange."""
    rows = []
    kinds = list(world)
    for t in range(1, N_THREADS + 1):
        kind = kinds[(t - 1) % len(kinds)]
        chosen = rng.sample(world[kind], 3 + (t <= 2))
        asks = [(rng.choice(f["train_templates"]).format(**f["fields"]), f["answer"]) for f in chosen]
        n_turns = 2 + (t % 2) if t > 2 else 2
        system = SYSTEM if t % 2 == 0 else None
        parent = None
        for k, (prompt, answer) in enumerate(asks[:n_turns], start=1):
            if k > 1:
                prompt = THREAD_LINKS[(t + k) % len(THREAD_LINKS)].format(q=prompt)
            rows.append(_row(f"t{t:02d}-{k}", parent, system if k == 1 else None, prompt, answer))
            parent = f"t{t:02d}-{k}"
        if t <= 2:  # a second follow-up to the first exchange: the thread branches into two conversations
            prompt, answer = asks[-1]
            rows.append(_row(f"t{t:02d}-2b", f"t{t:02d}-1", None,
                             THREAD_LINKS[t % len(THREAD_LINKS)].format(q=prompt), answer))
    return rows


def _row(id_: str, parent: str | None, system: str | None, prompt: str, answer: str) -> dict:
    return {"id": id_, "parent_id": parent or "", "system": system or "", "prompt": prompt, "answer": answer}


def to_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def main(out_dir: Path = HERE) -> None:
    train, validation = build()
    for file, rows in (("train.csv", train), ("validation.csv", validation)):
        (out_dir / file).write_text(to_csv(rows), encoding="utf-8", newline="")
    print(f"wrote {len(train)} train rows and {len(validation)} validation rows to {out_dir}")


if __name__ == "__main__":
    main()
