"""Readers and generators of tracing pairs (`conf/pairs/*.yaml` instantiate these).

Orientation: candidates are ordered so that a positive effect means "the intervention moved the
model the way the source moves it": the first candidate is the one the source favours.

  stg          catlit's STG generators: a prompt and the same prompt with one variable changed
  winobias     WinoBias pro-stereotyped type-1 pairs (she -> he; her -> his)
  winogender   Winogender template pairs (she -> he; her -> his)
  professions  "The {} said that": profession -> "man" / "woman", next-token " he" / " she"
  ioi          indirect object identification from the standard templates (Wang et al., 2022; MIB's
               IOI task): the ABC counterfactual (three fresh names) or the S2/IO flip
  counterfact  ROME's CounterFact JSON: noise on the prompt (or the subject), drop of the true
               object's probability
  jsonl        our own format: {"base", "source"?, "candidates", "noise"?} per line
"""

from __future__ import annotations

import csv
import json
import logging
import random
import re
from pathlib import Path

from catlit.data.example import DataError
from catlit.data.jsonl import iter_rows
from catlit.tracing.pairs import TracePair

log = logging.getLogger(__name__)


def _existing(path: str | Path, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"{what}: {p} does not exist")
    return p


# ---- STG ----------------------------------------------------------------------------------------


def stg_pairs(
    preset: str = "toy", n: int = 200, change: str = "spurious", seed: int = 0, params: dict | None = None
) -> list[TracePair]:
    """Pairs from an STG family preset: the training distribution's prompt, and the same prompt with
    the first spurious variable moved to the other half of its range (`change=spurious`: which
    components carry the shortcut?) or one causal variable changed so the true label flips
    (`change=cause`)."""
    from catlit.data.sources import STGSource
    from catlit.data.stg_family import STGFamily

    gen = STGSource(preset, seed=seed, params=params).generator
    if not isinstance(gen, STGFamily) or (change == "spurious" and gen.spurious_mode != "label"):
        raise ValueError(
            f"tracing pairs need an STG family preset with spurious_mode=label (toy, family); got {preset!r}"
        )
    if change not in ("spurious", "cause"):
        raise ValueError(f"pairs.loader.change={change!r}; choose 'spurious' or 'cause'")
    rng = random.Random(f"trace/{preset}/{change}/{seed}")
    high, low = gen.labels
    mid = (gen.low + gen.high) // 2
    causal = gen.causal_names[: gen.n_causal]
    pairs, attempts = [], 0
    while len(pairs) < n:
        attempts += 1
        if attempts > 50 * n:
            raise RuntimeError(f"could not draw {n} STG pairs with change={change} (drew {len(pairs)})")
        ex = gen.sample(rng, ood=False)
        values = {name: int(v) for name, v in re.findall(r"([A-Za-z][A-Za-z ]*?): (-?\d+)", ex.input)}
        if change == "spurious":
            name = gen.spurious_names[0]
            old = values[name]
            upper = old > mid
            new = rng.randint(gen.low, mid) if upper else rng.randint(mid + 1, gen.high)
            favoured = low if upper else high
        else:
            name = rng.choice(causal)
            old = values[name]
            flips = [
                v
                for v in range(gen.low, gen.high + 1)
                if gen.label_of([v if c == name else values[c] for c in causal]) != ex.target
            ]
            if not flips:
                continue
            new = rng.choice(flips)
            favoured = high if ex.target == low else low
        source = ex.input.replace(f"{name}: {old}", f"{name}: {new}", 1)
        other = low if favoured == high else high
        origin = f"stg:{preset}:{change}:{len(pairs)}"
        meta = {"variable": name, "old": old, "new": new}
        pairs.append(TracePair(ex.input, (favoured, other), source=source, origin=origin, meta=meta))
    return pairs


# ---- gender bias --------------------------------------------------------------------------------

PRONOUNS = (("she", "he"), ("her", "his"))  # (female, male): nominative, possessive


def _pronoun_pair(context: str, pronouns, male_cont: str, female_cont: str, origin: str, meta=None):
    """Base: the female pronoun; source: the male one; the male-stereotyped continuation first."""
    female, male = pronouns
    return TracePair(
        f"{context}{female}",
        (f" {male_cont}", f" {female_cont}"),
        source=f"{context}{male}",
        origin=origin,
        meta=meta or {},
    )


def _read_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _winobias_row(line: str, occupations: list[str], where: str):
    _, sentence = line.split(" ", 1)
    found = [o for o in occupations if f"[the {o.lower()}]" in sentence.lower()]
    if len(found) != 1:
        raise DataError(f"{where}: expected one bracketed occupation of the lists, found {found}")
    for group in PRONOUNS:
        hits = re.findall("|".join(rf"\[{p}\]" for p in group), sentence)
        if hits:
            context, rest = sentence.split(hits[0])
            context = context.replace("[", "").replace("]", "").strip()
            return context, group, rest.strip(), found[0]
    raise DataError(f"{where}: no bracketed she/he/her/his pronoun")


def winobias(path: str | Path, split: str = "dev") -> list[TracePair]:
    """Consecutive lines of `pro_stereotyped_type1.txt.<split>` form a pair (same template, the two
    occupations). Skipped, and counted: lines with several bracketed pronouns, `[him]`, and pairs whose
    prompts or pronoun types differ."""
    folder = _existing(path, "pairs.loader.path (WinoBias folder)")
    female = _read_lines(folder / "female_occupations.txt")
    occupations = female + _read_lines(folder / "male_occupations.txt")
    file = _existing(folder / f"pro_stereotyped_type1.txt.{split}", "WinoBias split")
    lines = _read_lines(file)
    pairs, skipped = [], 0
    for i in range(0, len(lines) - 1, 2):
        a, b = lines[i], lines[i + 1]
        if a.count("[") != 2 or b.count("[") != 2 or "[him]" in a + b:
            skipped += 1
            continue
        ctx_a, group_a, cont_a, occ_a = _winobias_row(a, occupations, f"{file}:{i + 1}")
        ctx_b, group_b, cont_b, _ = _winobias_row(b, occupations, f"{file}:{i + 2}")
        if ctx_a != ctx_b or group_a != group_b:
            skipped += 1
            continue
        female_cont, male_cont = (cont_a, cont_b) if occ_a in female else (cont_b, cont_a)
        pairs.append(_pronoun_pair(f"{ctx_a} ", group_a, male_cont, female_cont, f"{file.name}:{i + 1}"))
    log.info(
        "WinoBias %s: %d pairs, %d skipped (several pronouns, [him], or unmatched)",
        split,
        len(pairs),
        skipped,
    )
    return pairs


def winogender(path: str | Path, file: str = "winogender_templates_structurefilter.tsv") -> list[TracePair]:
    """Consecutive rows form a pair (the pronoun refers to the occupation in one, the participant in
    the other); the male-stereotyped continuation is the occupation's unless more than half of its
    workers are women (Bergsma statistics)."""
    folder = _existing(path, "pairs.loader.path (Winogender folder)")
    stats = {}
    with (folder / "winogender_occupation_stats.tsv").open() as handle:
        for row in list(csv.reader(handle, delimiter="\t"))[1:]:
            stats[row[0]] = float(row[1])
    table = _existing(folder / file, "Winogender templates")
    with table.open() as handle:
        rows = list(csv.reader(handle, delimiter="\t"))[1:]
    if len(rows) % 2:
        raise DataError(f"{table}: {len(rows)} rows; pairs need an even number")
    pairs = []
    for i in range(0, len(rows), 2):
        parsed = [_winogender_row(row, f"{table}:{i + j + 2}") for j, row in enumerate(rows[i : i + 2])]
        (ctx, group, cont1, occ, ans1), (ctx2, _, cont2, _, _) = parsed
        if ctx != ctx2:
            raise DataError(f"{table}:{i + 2}: the two rows of a pair have different prompts")
        occupation_cont, participant_cont = (cont1, cont2) if ans1 == 0 else (cont2, cont1)
        if occ not in stats:
            raise DataError(f"{table}:{i + 2}: occupation {occ!r} is not in winogender_occupation_stats.tsv")
        occupation_male = stats[occ] <= 50.0  # exactly half women counts as male, as released
        male_cont, female_cont = (
            (occupation_cont, participant_cont) if occupation_male else (participant_cont, occupation_cont)
        )
        meta = {"occupation": occ, "pct_female": stats[occ]}
        pairs.append(_pronoun_pair(ctx, group, male_cont, female_cont, f"{table.name}:{i + 2}", meta))
    return pairs


def _winogender_row(row: list[str], where: str):
    occupation, participant, answer, sentence = row
    for marker, group in (("$NOM_PRONOUN", PRONOUNS[0]), ("$POSS_PRONOUN", PRONOUNS[1])):
        if marker in sentence:
            context, rest = sentence.split(marker, 1)
            context = context.replace("$OCCUPATION", occupation).replace("$PARTICIPANT", participant)
            return context, group, rest.strip(), occupation, int(answer)
    raise DataError(f"{where}: field 'sentence' has no $NOM_PRONOUN or $POSS_PRONOUN")


def professions(path: str | Path) -> list[TracePair]:
    """Every template x profession; the source puts "man" (female-stereotyped professions) or "woman"
    (male-stereotyped) in the profession's place; next-token candidates " he" / " she", ordered so the
    source's gender comes first."""
    folder = _existing(path, "pairs.loader.path (Professions folder)")
    templates = _read_lines(folder / "templates.txt")
    pairs = []
    for stereotype, substitute, cands in (
        ("female", "man", (" he", " she")),
        ("male", "woman", (" she", " he")),
    ):
        for job in _read_lines(folder / f"{stereotype}_occupations.txt"):
            for t, template in enumerate(templates):
                pairs.append(
                    TracePair(
                        template.format(job),
                        cands,
                        source=template.format(substitute),
                        origin=f"professions:{stereotype}:{job}:{t}",
                        meta={"stereotype": stereotype},
                    )
                )
    return pairs


# ---- indirect object identification ------------------------------------------------------------

# Templates in the form of Wang et al. (2022): two names introduced ({A}, {B}), the subject ({S})
# repeated, the prompt cut before the indirect object. ABBA and BABA orders both occur.
IOI_TEMPLATES = (
    "When {A} and {B} went to the {place}, {S} gave a {object} to",
    "When {A} and {B} went to the {place}, {S} handed a {object} to",
    "After {A} and {B} went to the {place}, {S} gave a {object} to",
    "Then, {A} and {B} had a long argument, and afterwards {S} said to",
    "While {A} and {B} were working at the {place}, {S} gave a {object} to",
    "Friends {A} and {B} went to the {place}. {S} gave a {object} to",
    "After the lunch, {A} and {B} went to the {place}. {S} gave a {object} to",
    "The {place} was quiet when {A} and {B} arrived. Then {S} handed a {object} to",
)
IOI_NAMES = (
    "Mary", "John", "Anna", "David", "Sarah", "Michael", "Laura", "James", "Emma", "Robert", "Lisa",
    "Daniel", "Kate", "Paul", "Rachel", "Thomas", "Alice", "Mark", "Helen", "Peter", "Susan", "Steven",
    "Linda", "Kevin", "Jessica", "Brian", "Amy", "Eric", "Grace", "Jack", "Emily", "Adam", "Sophie",
    "Tom", "Claire", "Ryan", "Julia", "Sam", "Nina", "Max",
)  # fmt: skip
IOI_PLACES = ("store", "garden", "restaurant", "school", "hospital", "office", "station", "park")
IOI_OBJECTS = ("drink", "ring", "kiss", "bone", "basketball", "computer", "necklace", "snack")
IOI_COUNTERFACTUALS = ("abc", "s2_io_flip")


def ioi(n: int = 200, seed: int = 0, counterfactual: str = "abc") -> list[TracePair]:
    """Indirect object identification: base = the counterfactual, source = the IOI prompt, candidates
    (" IO", " S") so a positive effect moves the model towards the indirect object, as the IOI prompt
    does. `abc`: the three names replaced by three fresh ones (no repeated name to track);
    `s2_io_flip`: the repeated subject replaced by the indirect object (the answer flips)."""
    if counterfactual not in IOI_COUNTERFACTUALS:
        raise ValueError(f"pairs.loader.counterfactual={counterfactual!r}; choose from {IOI_COUNTERFACTUALS}")
    rng = random.Random(f"ioi/{seed}")  # the same IOI prompts under either counterfactual
    pairs = []
    for i in range(n):
        template = IOI_TEMPLATES[i % len(IOI_TEMPLATES)]
        io, subject, a, b, c = rng.sample(IOI_NAMES, 5)
        first, second = (io, subject) if rng.random() < 0.5 else (subject, io)  # ABBA or BABA
        fill = {"place": rng.choice(IOI_PLACES), "object": rng.choice(IOI_OBJECTS)}
        clean = template.format(A=first, B=second, S=subject, **fill)
        if counterfactual == "abc":
            base = template.format(A=a, B=b, S=c, **fill)
        else:
            base = template.format(A=first, B=second, S=io, **fill)
        order = "ABBA" if first == io else "BABA"
        pairs.append(
            TracePair(
                base,
                (f" {io}", f" {subject}"),
                source=clean,
                origin=f"ioi:{counterfactual}:{i}",
                meta={"template": i % len(IOI_TEMPLATES), "order": order},
            )
        )
    return pairs


# ---- factual recall and our own format ----------------------------------------------------------


def counterfact(path: str | Path, limit: int | None = None, noise: str = "prompt") -> list[TracePair]:
    """ROME's CounterFact JSON (a list of records with `requested_rewrite`): the prompt filled with the
    subject, the true object as the one candidate; a noise source corrupts every prompt token
    (`noise="prompt"`, as the PGB-CT release does) or only the subject's (`"subject"`, as ROME does)."""
    if noise not in ("prompt", "subject"):
        raise ValueError(f"pairs.loader.noise={noise!r}; choose prompt or subject")
    file = _existing(path, "pairs.loader.path (CounterFact JSON)")
    records = json.loads(file.read_text())
    pairs = []
    for i, rec in enumerate(records[:limit] if limit else records):
        where = f"{file}:record {i}"
        try:
            rewrite = rec["requested_rewrite"]
            prompt, subject = rewrite["prompt"], rewrite["subject"]
            target = rewrite["target_true"]["str"]
        except (KeyError, TypeError) as err:
            raise DataError(
                f"{where}: missing field {err} (expected requested_rewrite.prompt/subject/target_true.str)"
            ) from None
        base = prompt.format(subject)
        start = prompt.index("{}")
        span = (start, start + len(subject)) if noise == "subject" else (0, len(base))
        pairs.append(TracePair(base, (f" {target}",), noise_span=span, origin=where))
    return pairs


def jsonl(path: str | Path) -> list[TracePair]:
    """One pair per line: {"base": str, "candidates": [str, ...], "source": str (optional),
    "noise": str (optional: a substring of base that a noise source corrupts)}."""
    file = _existing(path, "pairs.loader.path (JSONL pairs)")
    pairs = []
    for where, row in iter_rows(file):
        base, cands = row.get("base"), row.get("candidates")
        if not isinstance(base, str) or not base:
            raise DataError(f"{where}: field 'base' must be a non-empty string")
        if not isinstance(cands, list) or not cands or not all(isinstance(c, str) and c for c in cands):
            raise DataError(f"{where}: field 'candidates' must be a list of non-empty strings")
        source, noise = row.get("source"), row.get("noise")
        if source is not None and not isinstance(source, str):
            raise DataError(f"{where}: field 'source' must be a string")
        span = None
        if noise is not None:
            start = base.find(noise) if isinstance(noise, str) else -1
            if start < 0:
                raise DataError(f"{where}: field 'noise' must be a substring of 'base', got {noise!r}")
            span = (start, start + len(noise))
        pairs.append(TracePair(base, tuple(cands), source=source, noise_span=span, origin=where))
    if not pairs:
        raise DataError(f"{file}: no pairs")
    return pairs
