"""ACRE (Zhang et al., CVPR 2021): the benchmark's generative process, its raw file format, and exact
labels under the disjunctive blicket rule.

A problem has 6 context panels (objects on a blicket machine, which lights up iff at least one of them
is a blicket) and 4 queries (objects, without the machine's state). Per problem, 5-8 objects of 48
kinds (3 shapes x 8 colours x 2 materials) are potential blickets (2-3, or 2-4) or non-blickets (3-5,
or 3-4). The panels are 3 habituation panels (a blicket alone: on; a non-blicket alone: off; both: on)
and 3 evidence panels, of one of two structures:
  on-off-off   one panel with every remaining potential blicket (and noise): on; two of non-blickets: off
               -> 3 activated panels in all
  on-on-off    two panels of potential blickets (and noise): on; one of the non-blickets: off
               -> 4 activated panels
The queries are 2 cause questions (one object: `direct`, `indirect`, `screened-off` or `potential`,
drawn with the benchmark's per-regime limits) and 2 intervention questions (the objects of an off
panel plus one object or an undetermined set), labelled 0 (off), 1 (undetermined), 2 (on).
Regimes (what the benchmark calls IID, Comp and Sys):
  IID   half on-off-off, half on-on-off; all 48 kinds
  Comp  likewise over 24 kinds, named by the training attribute table for train, the test table
        (held-out colour/shape/material combinations) for val and test
  Sys   train: on-off-off only (3 activated panels); val and test: on-on-off only (4 activated panels)
Labels are computed by exact inference (`infer`): every blicket assignment consistent with the panels
is enumerated; a query is on if every one lights it, off if none does, undetermined otherwise. The
process's own bookkeeping must agree (tested on thousands of problems of every regime).

Raw files: `<root>/{IID,Comp,Sys}/{train,val,test}.json`, each a list of problems, each a list of 10
panels `{"light_state": "on"|"off"|"no", "objects": [ids], "label"?: 0|1|2, "type"?: ..., "ref"?: i}`
(6 context panels, then 4 queries), as the benchmark publishes its configurations.
"""

from __future__ import annotations

import itertools
import json
import random
from dataclasses import dataclass
from pathlib import Path

SHAPES = ("cube", "cylinder", "sphere")
COLOURS = ("gray", "red", "blue", "green", "brown", "purple", "cyan", "yellow")
MATERIALS = ("rubber", "metal")
ALL_KINDS = [(s, c, m) for s in SHAPES for c in COLOURS for m in MATERIALS]  # 48
# the benchmark's attribute tables for the compositional regime: 24 combinations each, disjoint
ATTR_TRAIN = [
    *[("cube", c, m) for c in ("gray", "blue", "brown", "yellow") for m in MATERIALS],
    *[("cylinder", c, m) for c in ("red", "green", "purple", "cyan") for m in MATERIALS],
    *[("sphere", c, "rubber") for c in COLOURS],
]
ATTR_TEST = [
    *[("cube", c, m) for c in ("red", "green", "purple", "cyan") for m in MATERIALS],
    *[("cylinder", c, m) for c in ("gray", "blue", "brown", "yellow") for m in MATERIALS],
    *[("sphere", c, "metal") for c in COLOURS],
]
REGIMES = ("IID", "Comp", "Sys")
QUERY_TYPES = ("direct", "indirect", "screen_off", "potential")
LABELS = {0: "off", 1: "undetermined", 2: "on"}
STRUCTURES = {"on_off_off": ((2, 3), (3, 5)), "on_on_off": ((2, 4), (3, 4))}  # (potential, non) ranges


@dataclass(frozen=True)
class Panel:
    objects: tuple[int, ...]
    light: str  # "on" | "off" for context panels, "no" for queries


@dataclass(frozen=True)
class Query:
    objects: tuple[int, ...]
    label: int  # 0 off, 1 undetermined, 2 on
    type: str
    ref: int | None = None  # the context panel an intervention question starts from


@dataclass(frozen=True)
class Problem:
    context: tuple[Panel, ...]
    queries: tuple[Query, ...]

    @property
    def activated(self) -> int:
        return sum(p.light == "on" for p in self.context)


def infer(context, query) -> int:
    """Exact label of `query` (objects) given context panels (objects, lit) under the disjunctive rule."""
    context = [(frozenset(objects), lit) for objects, lit in context]
    query = frozenset(query)
    objects = sorted(set().union(query, *(o for o, _ in context)))
    seen = set()
    for bits in itertools.product((False, True), repeat=len(objects)):
        blickets = {o for o, b in zip(objects, bits) if b}
        if all(bool(blickets & panel) == lit for panel, lit in context):
            seen.add(bool(blickets & query))
            if len(seen) == 2:
                return 1
    if not seen:
        raise ValueError("ACRE: no blicket assignment is consistent with the context panels")
    return 2 if seen == {True} else 0


def label_of(problem: Problem, query: Query) -> int:
    return infer([(p.objects, p.light == "on") for p in problem.context], query.objects)


# ---- the generative process -----------------------------------------------------------------------
class _Machine:
    """One problem's objects, panels and the bookkeeping the questions are drawn from."""

    def __init__(self, rng: random.Random, structure: str, kinds: int):
        (p_lo, p_hi), (n_lo, n_hi) = STRUCTURES[structure]
        self.rng, self.structure = rng, structure
        n_potential, n_non = rng.randint(p_lo, p_hi), rng.randint(n_lo, n_hi)
        picked = rng.sample(range(kinds), n_potential + n_non)
        self.potential, self.non = picked[:n_potential], picked[n_potential:]
        self.blickets: list[int] = []
        self.sets: list[tuple[int, ...]] = []  # minimal sets known to hold a blicket, none known
        self.direct: list[int] = []
        self.indirect: list[int] = []
        self.screen_off: list[int] = []

    def add_blicket(self, obj: int) -> None:
        self.potential.remove(obj)
        self.blickets.append(obj)

    def add_set(self, objects) -> None:
        new = tuple(sorted(objects))
        if new in self.sets:
            return
        self.sets = [s for s in self.sets if not set(new) < set(s)]  # keep only minimal sets
        if not any(set(s) < set(new) for s in self.sets):
            self.sets.append(new)

    def split(self, union: list[int], one_first: bool = False) -> tuple[list[int], list[int]]:
        """Two subsets covering `union`: a first part, and the rest plus some of the first again."""
        first = self.rng.sample(union, 1 if one_first else self.rng.randint(1, len(union)))
        second = [o for o in union if o not in first]
        second += self.rng.sample(first, self.rng.randint(0 if second else 1, len(first)))
        return first, second

    def noise(self) -> list[int]:
        return self.rng.sample(self.non[1:], self.rng.randint(0, len(self.non) - 1))

    def panels(self) -> list[Panel]:
        blicket, non = self.potential[0], self.non[0]
        self.add_blicket(blicket)
        habituation = [Panel((blicket,), "on"), Panel((non,), "off"), Panel((blicket, non), "on")]
        self.direct.append(blicket)
        self.screen_off.append(non)
        evidence = self._on_off_off() if self.structure == "on_off_off" else self._on_on_off()
        self.rng.shuffle(habituation)
        self.rng.shuffle(evidence)
        return habituation + evidence

    def _on_off_off(self) -> list[Panel]:
        first, second = self.split(self.non[1:])
        on_list = list(self.potential)
        if len(on_list) == 1:
            self.add_blicket(on_list[0])
        else:
            self.add_set(on_list)
        on_objects = on_list + self.noise()
        off_union, on_set = set(self.non[1:]), set(on_objects)
        self.direct += sorted(off_union - on_set)
        self.screen_off += sorted(off_union & on_set)
        if len(on_set) == 1:
            self.direct += sorted(on_set)
        elif len(on_set - off_union) == 1:
            self.indirect += sorted(on_set - off_union)
        return [Panel(tuple(on_objects), "on"), Panel(tuple(first), "off"), Panel(tuple(second), "off")]

    def _on_on_off(self) -> list[Panel]:
        off = list(self.non[1:])
        first, second = self.split(list(self.potential))
        for on in (first, second):
            if len(on) == 1 and on[0] not in self.blickets:
                self.add_blicket(on[0])
        for on in (first, second):
            if not set(on) & set(self.blickets):
                self.add_set(on)
        views = [first + self.noise(), second + self.noise()]
        on_union, off_set = set(views[0]) | set(views[1]), set(off)
        self.direct += sorted(off_set - on_union)
        self.screen_off += sorted(off_set & on_union)
        for objects in views:
            if len(objects) == 1 and objects[0] not in self.direct:
                self.direct.append(objects[0])
        for objects in views:
            rest = set(objects) - off_set
            if len(objects) > 1 and len(rest) == 1:
                (obj,) = rest
                if obj not in self.indirect and obj not in self.direct:
                    self.indirect.append(obj)
        return [Panel(tuple(views[0]), "on"), Panel(tuple(views[1]), "on"), Panel(tuple(off), "off")]

    def label(self, obj: int) -> int:
        return 2 if obj in self.blickets else 1 if obj in self.potential else 0

    def kind(self, obj: int) -> str:
        groups = (("direct", self.direct), ("indirect", self.indirect), ("screen_off", self.screen_off))
        return next((k for k, group in groups if obj in group), "potential")

    def cause_queries(self, regime: str, train: bool) -> list[Query] | None:
        """Two one-object questions, at most one about a potential blicket (the benchmark's limits on
        screened-off objects per regime adjust its answer statistics); None where none can be drawn."""
        trim = {"Comp": 2, "Sys": 3 if train else 1, "IID": 1}[regime]
        upper = [len(self.direct), len(self.indirect), max(len(self.screen_off) - trim, 0)]
        n_potential = min(len(self.potential), 1)
        need = 2 - n_potential
        if sum(upper) < need:
            return None
        while True:  # the benchmark's sampler: each count in turn, the last takes what is left
            counts, left = [], need
            for most in upper[:-1]:
                counts.append(self.rng.randint(0, min(most, left)))
                left -= counts[-1]
            if left <= upper[-1]:
                n_direct, n_indirect, n_screen = (*counts, left)
                break
        draws = (
            ("direct", self.direct, n_direct),
            ("indirect", self.indirect, n_indirect),
            ("screen_off", self.screen_off, n_screen),
            ("potential", self.potential, n_potential),
        )
        queries = [
            Query((o,), self.label(o), kind) for kind, pool, n in draws for o in self.rng.sample(pool, n)
        ]
        self.rng.shuffle(queries)
        return queries

    def intervention_queries(self, panels: list[Panel]) -> list[Query]:
        """Two questions: the objects of an off panel plus one object or one undetermined set."""
        offs = [i for i, p in enumerate(panels) if p.light == "off"]
        ref = self.rng.choice(offs)
        base = set(panels[ref].objects)
        rest = sorted(set(self.blickets + self.potential + self.non) - base)
        choices: list = [*rest, *self.sets, *sorted(set(self.potential) - base)]  # potential twice
        queries = []
        for choice in self.rng.sample(choices, 2):
            if isinstance(choice, tuple):
                label, kind, added = 2, "indirect", list(choice)
            else:
                kind, label = self.kind(choice), self.label(choice)
                added = [choice]
            queries.append(Query(tuple(panels[ref].objects) + tuple(added), label, kind, ref))
        self.rng.shuffle(queries)
        return queries


def sample_problem(rng: random.Random, regime: str, split: str) -> Problem:
    """One problem of `regime` ("IID", "Comp", "Sys") for `split` ("train", "val", "test")."""
    if regime not in REGIMES:
        raise ValueError(f"ACRE: regime={regime!r}; choose from {REGIMES}")
    kinds = 24 if regime == "Comp" else 48
    for _ in range(1000):
        if regime == "Sys":
            structure = "on_off_off" if split == "train" else "on_on_off"
        else:
            structure = rng.choice(("on_off_off", "on_on_off"))
        machine = _Machine(rng, structure, kinds)
        panels = machine.panels()
        causes = machine.cause_queries(regime, train=split == "train")
        if causes is None:
            continue
        problem = Problem(tuple(panels), (*causes, *machine.intervention_queries(panels)))
        return problem
    raise RuntimeError("ACRE: could not draw a problem")  # pragma: no cover


def kinds_for(regime: str, split: str) -> list[tuple[str, str, str]]:
    """How a regime's object ids are named: all 48 kinds, or the compositional attribute tables."""
    if regime != "Comp":
        return ALL_KINDS
    return ATTR_TRAIN if split == "train" else ATTR_TEST


# ---- the benchmark's raw files --------------------------------------------------------------------
def to_raw(problem: Problem) -> list[dict]:
    panels = [{"light_state": p.light, "objects": list(p.objects)} for p in problem.context]
    for q in problem.queries:
        row = {"light_state": "no", "objects": list(q.objects), "label": q.label, "type": q.type}
        if q.ref is not None:
            row["ref"] = q.ref
        panels.append(row)
    return panels


def from_raw(panels: list[dict], where: str) -> Problem:
    """A problem from its raw panels; errors name `where` (file and problem index)."""
    from catlit.data.example import DataError

    if not isinstance(panels, list) or len(panels) < 7:
        raise DataError(f"{where}: a problem is a list of 6 context panels and the queries")
    try:
        context = tuple(Panel(tuple(int(o) for o in p["objects"]), p["light_state"]) for p in panels[:6])
        queries = tuple(
            Query(tuple(int(o) for o in p["objects"]), int(p["label"]), str(p.get("type", "")), p.get("ref"))
            for p in panels[6:]
        )
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(f"{where}: malformed panel ({err!r})") from None
    bad = [p.light for p in context if p.light not in ("on", "off")]
    if bad:
        raise DataError(f"{where}: context panel light_state {bad[0]!r} (expected on or off)")
    if any(q.label not in LABELS for q in queries):
        raise DataError(f"{where}: query label outside 0/1/2")
    return Problem(context, queries)


def write_raw(root: Path, problems: dict[tuple[str, str], list[Problem]]) -> Path:
    """Write `{(regime, split): problems}` as `<root>/<regime>/<split>.json` (the benchmark's layout)."""
    for (regime, split), items in problems.items():
        path = Path(root) / regime / f"{split}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps([to_raw(p) for p in items]))
    return Path(root)


def read_raw(path: Path) -> list[Problem]:
    from catlit.data.example import DataError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ACRE raw file {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not JSON ({err.msg} at line {err.lineno})") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason})") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a list of problems, got {type(data).__name__}")
    return [from_raw(panels, f"{path}: problem {i}") for i, panels in enumerate(data)]
