"""ACRE blicket detection in two surface encodings (text sentences, symbolic codes), two presets:

  acre   the benchmark's generative process (catlit.data.acre_benchmark): 6 context panels, 5-8 objects
         of 48 kinds, 4 queries per problem of four types (direct, indirect, screened-off, potential),
         labels off / on / undetermined as the benchmark draws them. Trained on its IID regime and
         tested on IID, compositional (Comp) and systematic (Sys: 4 activated panels) test problems,
         as the ICLM paper does. Each example records `meta["query_type"]`.
  small  catlit's lighter task: 3 trials of at most 2 of 3 objects, single-object questions, answers
         drawn balanced; compositional = unseen colour/shape combinations, systematic = 4 objects,
         4 trials of up to 3, pair questions.

Every label comes from exact inference under the disjunctive rule (the machine lights iff at least
one object on it is a blicket): every blicket assignment consistent with the trials is enumerated, a
query is `on` if every one lights it, `off` if none does, `undetermined` otherwise
(`catlit.data.acre_benchmark.infer`). Every example names its encoding in `meta["source"]` (what a
router should recover); the panels that mention a queried object are the answer's causes (`important`).
The text encoding says "lights up" / "stays dark", so the answer words never occur in a prompt.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from catlit.data import acre_benchmark as bench
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
    """The `small` preset (see the module docstring)."""

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
    """The answer the trials determine, by exact inference (not the hidden truth)."""
    return bench.LABELS[bench.infer(list(zip(trials, outcomes)), query)]


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


# ---- the benchmark preset ----------------------------------------------------------------------------
@dataclass
class ACREBench:
    """The `acre` preset: the benchmark's process; a split kind is (regime, split) of the benchmark."""

    name: str = "acre_benchmark"
    n_train: int = 2000
    n_val: int = 200
    n_test: int = 400  # per test split
    encodings: tuple[str, ...] = ENCODINGS
    train_regime: str = "IID"  # the ICLM paper trains on IID; Sys trains on 3 activated panels only

    def __post_init__(self) -> None:
        self.encodings = tuple(self.encodings)
        unknown = sorted(set(self.encodings) - set(ENCODINGS))
        if unknown or not self.encodings:
            raise ValueError(f"ACRE: encodings={list(self.encodings)}; choose from {ENCODINGS}")
        if self.train_regime not in bench.REGIMES:
            raise ValueError(f"ACRE: train_regime={self.train_regime!r}; choose from {bench.REGIMES}")

    def sample(self, rng: random.Random, kind: tuple[str, str]) -> Example:
        regime, split = kind
        problem = bench.sample_problem(rng, regime, split)
        query = rng.choice(problem.queries)
        return render_problem(problem, query, rng.choice(self.encodings), bench.kinds_for(regime, split))


def _kind_name(kind: tuple[str, str, str]) -> str:
    shape, colour, material = kind
    return f"{colour} {material} {shape}"


def render_problem(problem: bench.Problem, query: bench.Query, encoding: str, kinds) -> Example:
    """One query of a benchmark problem as an example: the 6 panels, the question, the answer (words
    for text, the benchmark's digits 0/1/2 for symbolic)."""
    if encoding == "text":
        panels = [
            f"Panel {i}: {', '.join(_kind_name(kinds[o]) for o in p.objects)}; "
            f"the machine {'lights up' if p.light == 'on' else 'stays dark'}."
            for i, p in enumerate(problem.context, start=1)
        ]
        names = [_kind_name(kinds[o]) for o in query.objects]
        prompt = "Blicket machine. " + " ".join(panels) + f" Question: {_join(names)}? Answer: "
        answer = bench.LABELS[query.label]
    else:
        panels = [
            f"P{i} {list(p.objects)} -> {2 if p.light == 'on' else 0} ;"
            for i, p in enumerate(problem.context, start=1)
        ]
        prompt = "ACRE " + " ".join(panels) + f" Q {list(query.objects)} -> ? => "
        answer = str(query.label)
    causes = [
        phrase.rstrip(";").strip() if encoding == "symbolic" else phrase
        for phrase, p in zip(panels, problem.context)
        if set(p.objects) & set(query.objects)
    ]
    effect = answer if encoding == "text" else f"=> {answer}"  # a digit alone also occurs in the panels
    important = (CausalLink(effect=effect, causes=tuple(causes)),) if causes else ()
    meta = {"source": encoding, "query_type": query.type, "activated": problem.activated}
    return Example(prompt, answer, important, meta=meta)
