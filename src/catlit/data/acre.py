"""An ACRE-style blicket-detector task in two surface encodings, with compositional and systematic
out-of-distribution test splits.

Each episode shows a few trials: a set of objects on a machine and whether the machine turned on.
The machine turns on iff at least one object on it is a blicket. The question asks whether the
machine would be on with some objects; the answer follows from the trials by two rules:
  - an object in a trial where the machine stayed off is not a blicket;
  - an object in a trial where the machine turned on, all of whose other objects are known not to be
    blickets, is a blicket.
So a query is `on` (a known blicket is in it), `off` (every object is known not to be one) or
`undetermined`. Answers are drawn balanced.

The two encodings (`text`: sentences, `symbolic`: codes) carry the same episode, and every example
names its encoding in `meta["source"]` (what a router should recover). Test splits:
  iid            the training distribution
  compositional  objects whose colour/shape combinations never occur in training
  systematic     a changed trial structure: more objects, more and larger trials, pair queries
The trials that mention a queried object are the answer's causes (`important`); the text encoding
says "lights up" / "stays dark" so that the answer words never occur in a prompt.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from catlit.data.example import CausalLink, Example

COLOURS = ("red", "blue", "green", "yellow", "purple", "gray", "brown", "cyan")
SHAPES = ("cube", "ball", "cone", "ring", "star", "disk")
ANSWERS = ("on", "off", "undetermined")
ENCODINGS = ("text", "symbolic")
SPLIT_KINDS = ("iid", "compositional", "systematic")


def held_out(colour: int, shape: int) -> bool:
    """Colour/shape combinations that only the compositional split uses (one in four)."""
    return (colour + shape) % 4 == 0


@dataclass(frozen=True)
class Structure:
    objects: int  # distinct objects in an episode
    trials: int
    per_trial: int  # at most this many objects on the machine in a trial
    query: int  # objects in the question


@dataclass
class ACRE:
    name: str = "acre"
    n_train: int = 1200
    n_val: int = 150
    n_test: int = 300  # per test split
    encodings: tuple[str, ...] = ENCODINGS
    objects: int = 3
    trials: int = 3
    per_trial: int = 2
    systematic_objects: int = 4
    systematic_trials: int = 4
    systematic_per_trial: int = 3
    systematic_query: int = 2

    def __post_init__(self) -> None:
        self.encodings = tuple(self.encodings)
        unknown = sorted(set(self.encodings) - set(ENCODINGS))
        if unknown or not self.encodings:
            raise ValueError(f"ACRE: encodings={list(self.encodings)}; choose from {ENCODINGS}")
        for key in ("objects", "trials", "per_trial", "systematic_objects", "systematic_trials"):
            if getattr(self, key) < 1:
                raise ValueError(f"ACRE: {key} must be >= 1, got {getattr(self, key)}")

    def structure(self, kind: str) -> Structure:
        if kind == "systematic":
            return Structure(
                self.systematic_objects,
                self.systematic_trials,
                self.systematic_per_trial,
                self.systematic_query,
            )
        return Structure(self.objects, self.trials, self.per_trial, 1)

    def sample(self, rng: random.Random, kind: str) -> Example:
        if kind not in SPLIT_KINDS:
            raise ValueError(f"ACRE: unknown split kind {kind!r}; choose from {SPLIT_KINDS}")
        shape = self.structure(kind)
        want = rng.choice(ANSWERS)
        for _ in range(200):  # rejection sampling keeps the three answers balanced
            episode = _episode(rng, shape, compositional=kind == "compositional")
            if episode.answer == want:
                break
        encoding = rng.choice(self.encodings)
        return render(episode, encoding, kind)


@dataclass(frozen=True)
class Episode:
    trials: tuple[tuple[tuple[int, int], ...], ...]  # objects (colour, shape) per trial
    outcomes: tuple[bool, ...]
    query: tuple[tuple[int, int], ...]
    answer: str


def _episode(rng: random.Random, shape: Structure, compositional: bool) -> Episode:
    pool = [
        (c, s) for c in range(len(COLOURS)) for s in range(len(SHAPES)) if held_out(c, s) == compositional
    ]
    objects = rng.sample(pool, shape.objects)
    blickets = {o for o in objects if rng.random() < 0.4}
    trials = tuple(
        tuple(rng.sample(objects, rng.randint(1, min(shape.per_trial, len(objects)))))
        for _ in range(shape.trials)
    )
    outcomes = tuple(any(o in blickets for o in t) for t in trials)
    query = tuple(rng.sample(objects, min(shape.query, len(objects))))
    return Episode(trials, outcomes, query, infer(trials, outcomes, query))


def infer(trials, outcomes, query) -> str:
    """The answer the trials determine (see the module docstring), not the hidden truth."""
    cleared = {o for t, on in zip(trials, outcomes) if not on for o in t}
    found = {
        o for t, on in zip(trials, outcomes) if on for o in t if set(t) - {o} <= cleared and o not in cleared
    }
    if any(o in found for o in query):
        return "on"
    if all(o in cleared for o in query):
        return "off"
    return "undetermined"


def _name(obj: tuple[int, int], encoding: str) -> str:
    colour, shape = obj
    return f"the {COLOURS[colour]} {SHAPES[shape]}" if encoding == "text" else f"c{colour}s{shape}"


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def render(episode: Episode, encoding: str, kind: str) -> Example:
    if encoding == "text":
        trials = [
            f"Trial {i}: {_join([_name(o, encoding) for o in t])}; "
            f"the machine {'lights up' if on else 'stays dark'}."
            for i, (t, on) in enumerate(zip(episode.trials, episode.outcomes), start=1)
        ]
        alone = "alone" if len(episode.query) == 1 else "together"
        question = f"Question: {_join([_name(o, encoding) for o in episode.query])} {alone}?"
        prompt = "Blicket machine. " + " ".join(trials) + f" {question} Answer: "
    else:
        trials = [
            f"T{i} {' '.join(_name(o, encoding) for o in t)} = {int(on)} ;"
            for i, (t, on) in enumerate(zip(episode.trials, episode.outcomes), start=1)
        ]
        query = " ".join(_name(o, encoding) for o in episode.query)
        prompt = "ACRE " + " ".join(trials) + f" Q {query} = ? => "
    # the trials that mention a queried object decide the answer
    causes = [
        phrase.rstrip(";").strip() if encoding == "symbolic" else phrase
        for phrase, t in zip(trials, episode.trials)
        if set(t) & set(episode.query)
    ]
    important = (CausalLink(effect=episode.answer, causes=tuple(causes)),) if causes else ()
    return Example(prompt, episode.answer, important, meta={"source": encoding, "split": kind})
