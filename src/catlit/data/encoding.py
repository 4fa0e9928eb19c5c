"""Tokenise an Example into ids, answer-only labels and causal-mask blocks, via character offsets.

Phrases match whole words and numbers only ('and' is not found in 'Randy', nor '6.0' in '426.0').
Mask geometry (one block per effect occurrence x cause):
  rows    = positions that *predict* the effect tokens: effect_start - 1 ... effect_end - 2
  columns = the tokens of the cause's occurrence nearest before that effect occurrence (its last
            token at or before the effect's first), so a cause right next to its effect counts,
so every marked column is visible (j <= i) from every marked row. Every occurrence of an effect counts.
Offsets work for any fast tokenizer: no per-family leading-space tricks, and phrases after a newline
or punctuation are found like any other.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from catlit.data.example import Example

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
Block = tuple[int, int, int, int]  # row_start, row_end, col_start, col_end (half-open)


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    prompt_len: int  # input_ids[:prompt_len] is the generation prompt
    blocks: list[Block] = field(default_factory=list)
    origin: str = "?"


@dataclass
class MaskCoverage:
    """Counts of annotated phrases: in the text at all, and turned into mask entries."""

    counts: Counter = field(default_factory=Counter)
    unmatched: list[str] = field(default_factory=list)  # first few "origin: reason 'phrase'"

    def add(self, key: str, n: int = 1) -> None:
        self.counts[key] += n

    def miss(self, origin: str, reason: str, phrase: str) -> None:
        self.counts[f"unmatched_{reason}"] += 1
        if len(self.unmatched) < 5:
            self.unmatched.append(f"{origin}: {reason} {phrase!r}")

    def share(self, part: str, whole: str) -> float:
        return self.counts[part] / self.counts[whole] if self.counts[whole] else float("nan")

    def summary(self) -> str:
        c = self.counts
        return (
            f"causal-mask coverage: effects {c['effects_matched']}/{c['effects']} matched "
            f"({c['effects_in_text']} in text), causes {c['causes_matched']}/{c['causes']} matched "
            f"({c['causes_in_text']} in text); examples with a mask {c['examples_masked']}/"
            f"{c['examples_annotated']}; truncated spans {c['unmatched_truncated']}"
        )


def find_all(text: str, phrase: str) -> list[tuple[int, int]]:
    """Character spans of every occurrence of `phrase` in `text` (overlapping ones included)."""
    spans, start = [], text.find(phrase)
    while start != -1:
        spans.append((start, start + len(phrase)))
        start = text.find(phrase, start + 1)
    return spans


def is_whole_word(text: str, start: int, end: int) -> bool:
    """A span is a whole word (or number) unless a letter or digit continues it on either side:
    'and' in 'Randy', '4 hours' in '14 hours' and '6.0' in '426.0' are not."""
    before = start > 0 and text[start].isalnum() and text[start - 1].isalnum()
    after = end < len(text) and text[end - 1].isalnum() and text[end].isalnum()
    return not (before or after)


def find_words(text: str, phrase: str) -> list[tuple[int, int]]:
    """Character spans of the whole-word occurrences of `phrase` (see `is_whole_word`)."""
    return [(a, b) for a, b in find_all(text, phrase) if is_whole_word(text, a, b)]


def _full_spans(
    offsets: list[tuple[int, int]], occurrences, chars: list | None = None
) -> list[tuple[int, int]]:
    """Token ranges [first, last+1) covering each character span completely (cut ones are left out).

    Special tokens (zero-width offsets) never belong to a phrase. `chars`, if given, receives the
    character span of each kept occurrence.
    """
    spans = []
    for start, end in occurrences:
        idx = [i for i, (a, b) in enumerate(offsets) if b > a and a < end and b > start]
        if idx and offsets[idx[-1]][1] >= end:
            spans.append((idx[0], idx[-1] + 1))
            if chars is not None:
                chars.append((start, end))
    return spans


def answer_span(ex: Example) -> tuple[int, int] | None:
    """Characters of the final answer: the last non-empty line of the target (`#### 90`, `A`)."""
    lines = [line.strip() for line in ex.target.splitlines() if line.strip()]
    if not lines:
        return None
    start = ex.text.rfind(lines[-1])
    return (start, start + len(lines[-1]))


class ExampleEncoder:
    """Turns Examples into `Encoded` rows for one tokenizer and max_length, counting coverage."""

    def __init__(
        self,
        tokenizer,
        max_length: int = 256,
        add_eos: bool = True,
        too_long: str = "raise",
        training: bool = False,
    ):
        """`too_long="skip"` drops (and counts) rows whose prompt alone reaches max_length instead of
        raising; `training=True` also drops (and counts) rows that would train on nothing useful: an
        empty target, or an answer that max_length cuts away."""
        if too_long not in ("raise", "skip"):
            raise ValueError(f"data.too_long={too_long!r}; choose 'raise' or 'skip'")
        self.too_long, self.training = too_long, training
        if not getattr(tokenizer, "is_fast", False):
            raise TypeError(
                f"{type(tokenizer).__name__} is not a fast tokenizer: causal masks need "
                "character offsets (return_offsets_mapping)"
            )
        self.tokenizer, self.max_length = tokenizer, max_length
        self.eos_id = tokenizer.eos_token_id if add_eos else None
        self.coverage = MaskCoverage()

    def encode(self, ex: Example) -> Encoded | None:
        """The encoded row, or None for a row dropped as the constructor describes (counted)."""
        # the answer's leading space belongs to the answer's first token; a newline that ends the prompt
        # (a chat template's assistant header) stays in the prompt
        prompt = ex.input.rstrip(" \t")
        if not ex.target.strip():
            self.coverage.add("empty_target")
            if self.training:
                return None
        text = ex.text
        enc = self.tokenizer(text, return_offsets_mapping=True, add_special_tokens=True)
        ids, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
        if self.eos_id is not None and (not ids or ids[-1] != self.eos_id):
            ids.append(self.eos_id)
            offsets.append((len(text), len(text)))
        # the prompt is the prefix before the first token that covers answer characters or is a
        # special token after the content (an EOS the tokenizer itself appends has offsets (0, 0))
        prompt_len = next(
            (i for i, (a, b) in enumerate(offsets) if b > len(prompt) or (i > 0 and a == b)), len(ids)
        )
        if prompt_len >= self.max_length:
            if self.too_long == "skip":
                self.coverage.add("examples_too_long")
                return None
            raise ValueError(
                f"{ex.origin}: prompt is {prompt_len} tokens, max_length={self.max_length} leaves no "
                "room for the answer; raise data.max_length or skip such rows with data.too_long=skip"
            )
        if len(ids) > self.max_length:
            self.coverage.add("examples_truncated")
            ids, offsets = ids[: self.max_length], offsets[: self.max_length]
            answer = answer_span(ex)
            if self.training and answer and max(b for _, b in offsets) < answer[1]:
                self.coverage.add("answers_truncated")
                return None  # the answer itself was cut: training on the rest teaches a wrong target
        labels = [IGNORE_INDEX] * prompt_len + ids[prompt_len:]
        blocks = self._blocks(ex, text, offsets)
        return Encoded(ids, labels, prompt_len, blocks, ex.origin)

    def _blocks(self, ex: Example, text: str, offsets) -> list[Block]:
        if not ex.important:
            return []
        cov = self.coverage
        cov.add("examples_annotated")
        blocks: list[Block] = []
        answer, answer_hit = answer_span(ex), False
        for link in ex.important:
            cov.add("effects")
            effect_occ = self._occurrences(ex, text, link.effect)
            cov.add("effects_in_text", bool(effect_occ))
            chars: list[tuple[int, int]] = []
            # an effect at token 0 has no predicting row
            effect_spans = [s for s in _full_spans(offsets, effect_occ, chars) if s[0] >= 1]
            if answer and effect_spans and any(a < answer[1] and b > answer[0] for a, b in chars):
                answer_hit = True
            if effect_spans:
                cov.add("effects_matched")
            elif effect_occ:
                cov.miss(ex.origin, "truncated", link.effect)
            for cause in link.causes:
                cov.add("causes")
                cause_occ = self._occurrences(ex, text, cause)
                cov.add("causes_in_text", bool(cause_occ))
                cause_spans = _full_spans(offsets, cause_occ)
                pairs = []
                for es, ee in effect_spans:  # the cause occurrence nearest before each effect occurrence
                    before = [(cs, ce) for cs, ce in cause_spans if ce <= es]
                    if before:
                        pairs.append((es, ee, *max(before, key=lambda span: span[1])))
                blocks += [(es - 1, ee - 1, cs, ce) for es, ee, cs, ce in pairs]
                if pairs:
                    cov.add("causes_matched")
                elif not cause_occ:
                    pass  # counted by _occurrences (not in text, or only inside longer words)
                elif not effect_spans:
                    cov.miss(ex.origin, "effect_unmatched", cause)
                elif len(cause_spans) < len(cause_occ):
                    cov.miss(ex.origin, "truncated", cause)
                else:
                    cov.miss(ex.origin, "not_before_effect", cause)
        cov.add("examples_masked", bool(blocks))
        cov.add("answer_effect_matched", answer_hit)
        return blocks

    def _occurrences(self, ex: Example, text: str, phrase: str) -> list[tuple[int, int]]:
        """Whole-word occurrences; a phrase found only inside longer words is counted apart."""
        words = find_words(text, phrase)
        self.coverage.add("substring_occurrences", len(find_all(text, phrase)) - len(words))
        if not words:
            self.coverage.miss(ex.origin, "substring_only" if phrase in text else "not_in_text", phrase)
        return words

    def log_coverage(self, split: str) -> None:
        c = self.coverage.counts
        log.info("[%s] %s", split, self.coverage.summary())
        missed = sum(v for k, v in c.items() if k.startswith("unmatched_"))
        if missed:
            reasons = {k.removeprefix("unmatched_"): v for k, v in c.items() if k.startswith("unmatched_")}
            log.warning(
                "[%s] %d annotated phrase(s) gave no mask entries %s; e.g. %s",
                split,
                missed,
                reasons,
                "; ".join(self.coverage.unmatched),
            )
        self.log_drops(split)

    def log_drops(self, split: str) -> None:
        """Warn about rows cut, dropped, or with an empty target (counted while encoding)."""
        c = self.coverage.counts
        if c["examples_truncated"]:
            log.warning(
                "[%s] %d example(s) cut to max_length=%d tokens",
                split,
                c["examples_truncated"],
                self.max_length,
            )
        dropped = {
            "prompt alone reaches max_length": c["examples_too_long"],
            "answer cut away by max_length": c["answers_truncated"],
            "empty target": c["empty_target"] if self.training else 0,
        }
        for reason, n in dropped.items():
            if n:
                log.warning("[%s] %d row(s) dropped: %s", split, n, reason)
        if c["empty_target"] and not self.training:
            log.warning("[%s] %d row(s) with an empty target", split, c["empty_target"])
