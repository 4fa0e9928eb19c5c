"""The pretraining corpus: documents drawn from catlit's task families with every shortcut removed.

Each family draws its rules afresh per document, so what transfers is how to read a task (find the
variables a rule names, compare, add, follow trials), never one task's answer:

- `stg`: a Spurious Token Game with freshly drawn variable names, value range, rule and labels;
  several rows per document (the rule stated first in half of them, to be inferred from the rows in
  the rest). Spurious and unrelated variables are drawn independently of the label.
- `numeric`: STG_H-style rows whose answer is a stated weighted sum of some of the variables.
- `acre`: blicket-machine episodes of the `small` preset's training distribution, text and symbolic
  encodings (the compositional and systematic test kinds never appear; the `acre` preset's panels
  and `0/1/2` answers neither).
- `arithmetic`: short word problems (add, take away, groups of, two steps).
"""

from __future__ import annotations

import random
from collections.abc import Callable

from catlit.data.acre import ACRE
from catlit.data.stg_family import CAUSAL_NAMES, SPURIOUS_NAMES, UNRELATED_NAMES, STGFamily
from catlit.data.stg_released import PROMPT

NAMES = (
    *CAUSAL_NAMES, *SPURIOUS_NAMES, *UNRELATED_NAMES,
    "Age", "Income", "Rainfall", "Temperature", "Humidity", "Wind speed", "Sugar intake", "Blood pressure",
    "Heart rate", "Screen time", "Salt intake", "Commute time", "Noise level", "Pollen count", "Altitude",
    "Caffeine", "Study hours", "Practice time", "Team size", "Budget", "Distance", "Speed", "Load",
    "Pressure", "Voltage", "Dust level", "Soil acidity", "Sunlight", "Fertilizer", "Water use",
    "Traffic", "Ticket price", "Rent", "Savings", "Debt", "Hat size", "Eye colour code", "Pet count",
    "Lucky number", "Street number", "Moon phase", "Shirt colour code", "Umbrella sales", "Rust level",
)  # fmt: skip
LABELS = (
    ("High Risk", "Low Risk"), ("Yes", "No"), ("Pass", "Fail"), ("Approved", "Denied"), ("Hot", "Cold"),
    ("Large", "Small"), ("Safe", "Unsafe"), ("Win", "Lose"), ("Up", "Down"), ("Good", "Bad"),
)  # fmt: skip
PROMPTS = (
    PROMPT,
    "Here is the data for one case. Please predict the outcome. ",
    "Record of a sample. Decide the class. ",
    "Measurements: ",
    "Consider these values. ",
)
ITEMS = ("apple", "book", "coin", "marble", "pencil", "stamp", "shell", "card", "egg", "cookie")
PEOPLE = ("Tom", "Ana", "Li", "Sara", "Omar", "Mia", "Ravi", "Kate", "Ben", "Yuki")


def _names(rng: random.Random, n: int) -> list[str]:
    return rng.sample(NAMES, n)


def draw_game(rng: random.Random) -> STGFamily:
    """A Spurious Token Game with freshly drawn names, range, rule, weights, labels and prompt, whose
    spurious variables are drawn independently of the label."""
    n_causal, n_spurious, n_unrelated = rng.randint(1, 3), rng.randint(0, 2), rng.randint(0, 2)
    names = _names(rng, n_causal + n_spurious + n_unrelated)
    low = rng.randint(0, 5)
    rule = rng.choice(("weighted_sum", "any_above"))
    game = STGFamily(
        n_causal=n_causal,
        n_spurious=n_spurious,
        n_unrelated=n_unrelated,
        low=low,
        high=low + rng.randint(4, 15),
        rule=rule,
        weights=[float(rng.choice((1, 1, 2, 3))) for _ in range(n_causal)],
        labels=rng.choice(LABELS),
        spurious_strength=0.0,  # independent of the label: no shortcut to learn
        prompt=rng.choice(PROMPTS),
        causal_names=names[:n_causal],
        spurious_names=names[n_causal : n_causal + n_spurious],
        unrelated_names=names[n_causal + n_spurious :],
    )
    return game


def stg_document(rng: random.Random, rows: tuple[int, int]) -> str:
    game = draw_game(rng)
    lines = []
    if rng.random() < 0.5:
        if game.rule == "weighted_sum":
            terms = " + ".join(f"{w:g} x {n}" if w != 1 else n for w, n in zip(game.w, game.causal_names))
            lines.append(f"Rule: {game.labels[0]} when {terms} is above {game.t:g}, else {game.labels[1]}.")
        else:
            causes = ", ".join(game.causal_names)
            lines.append(
                f"Rule: {game.labels[0]} when any of {causes} is above {game.t:g}, else {game.labels[1]}."
            )
    for _ in range(rng.randint(*rows)):
        example = game.sample(rng, ood=False)
        lines.append(example.input + example.target)
    return "\n".join(lines)


def numeric_document(rng: random.Random, rows: tuple[int, int]) -> str:
    n_causal, n_other = rng.randint(1, 3), rng.randint(1, 3)
    names = _names(rng, n_causal + n_other)
    weights = [rng.randint(1, 3) for _ in range(n_causal)]
    terms = " + ".join(f"{w} x {n}" if w != 1 else n for w, n in zip(weights, names))
    lines = [f"Score = {terms}."]
    for _ in range(rng.randint(*rows)):
        values = [rng.randint(0, 30) for _ in names]
        features = list(zip(names, values))
        rng.shuffle(features)
        score = sum(w * v for w, v in zip(weights, values))
        lines.append(", ".join(f"{n}: {v}" for n, v in features) + f". Score? Answer: {score}")
    return "\n".join(lines)


_ACRE = ACRE()


def acre_document(rng: random.Random, rows: tuple[int, int]) -> str:
    episodes = [_ACRE.sample(rng, "iid") for _ in range(rng.randint(1, max(1, rows[1] // 2)))]
    return "\n".join(ex.input + ex.target for ex in episodes)


def arithmetic_document(rng: random.Random, rows: tuple[int, int]) -> str:
    lines = []
    for _ in range(rng.randint(*rows)):
        who, item = rng.choice(PEOPLE), rng.choice(ITEMS)
        a, b = rng.randint(1, 30), rng.randint(1, 20)
        kind = rng.choice(("add", "take", "groups", "two_steps"))
        if kind == "add":
            text, answer = f"{who} has {a} {item}s and gets {b} more. How many {item}s now?", a + b
        elif kind == "take":
            a += b
            text, answer = f"{who} has {a} {item}s and gives away {b}. How many {item}s are left?", a - b
        elif kind == "groups":
            a, b = rng.randint(2, 9), rng.randint(2, 9)
            text, answer = f"{who} has {a} boxes with {b} {item}s each. How many {item}s in all?", a * b
        else:
            c = rng.randint(1, a)
            text = f"{who} has {a} {item}s, buys {b} more, then loses {c}. How many {item}s now?"
            answer = a + b - c
        lines.append(f"{text} Answer: {answer}")
    return "\n".join(lines)


FAMILIES: dict[str, Callable[[random.Random, tuple[int, int]], str]] = {
    "stg": stg_document,
    "numeric": numeric_document,
    "acre": acre_document,
    "arithmetic": arithmetic_document,
}


def documents(n: int, seed: int, mix: dict[str, float], rows: tuple[int, int] = (2, 6), split: str = "train"):
    """`n` documents, families drawn by the weights in `mix`; one seeded stream per split."""
    unknown = sorted(set(mix) - set(FAMILIES))
    if unknown:
        raise ValueError(f"pretrain corpus: unknown families {unknown}; choose from {sorted(FAMILIES)}")
    if not mix or min(mix.values()) < 0 or sum(mix.values()) <= 0:
        raise ValueError(f"pretrain corpus: mix needs non-negative weights with a positive sum, got {mix}")
    rng = random.Random(f"pretrain/{split}/{seed}")
    families, weights = list(mix), [float(mix[f]) for f in mix]
    rows = (int(rows[0]), int(rows[1]))
    return [FAMILIES[rng.choices(families, weights)[0]](rng, rows) for _ in range(n)]
