"""Checking proposed annotations against the text: every phrase must occur as whole words (as the
causal-mask builder matches them), causes before effects."""

from __future__ import annotations

import re
from collections import Counter

from catlit.data.encoding import find_words
from catlit.data.example import CausalLink, Example


def validate_links(ex: Example, links: tuple[CausalLink, ...]) -> tuple[tuple[CausalLink, ...], Counter]:
    """Keep what a causal mask can use; count what was dropped and why."""
    text, counts, kept = ex.text, Counter(), []
    for link in links:
        counts["effects_proposed"] += 1
        counts["causes_proposed"] += len(link.causes)
        effect_spans = find_words(text, link.effect)
        if not effect_spans:
            counts[f"effects_dropped_{_absent(text, link.effect)}"] += 1
            counts["causes_dropped_with_effect"] += len(link.causes)
            continue
        causes = []
        for cause in link.causes:
            cause_spans = find_words(text, cause)
            if not cause_spans:
                counts[f"causes_dropped_{_absent(text, cause)}"] += 1
            elif not any(ce <= es for es, _ in effect_spans for _, ce in cause_spans):
                counts["causes_dropped_not_before_effect"] += 1
            elif cause not in causes:
                causes.append(cause)
        if causes:
            kept.append(CausalLink(link.effect, tuple(causes)))
            counts["effects_kept"] += 1
            counts["causes_kept"] += len(causes)
        else:
            counts["effects_dropped_no_cause"] += 1
    return tuple(kept), counts


def _absent(text: str, phrase: str) -> str:
    return "substring_only" if phrase in text else "not_in_text"


def marked_share(ex: Example, links: tuple[CausalLink, ...]) -> float:
    """The share of the input's words that the kept causes cover (each distinct phrase once)."""
    words = len(re.findall(r"\w+", ex.input)) or 1
    causes = {cause for link in links for cause in link.causes}
    return sum(len(re.findall(r"\w+", cause)) for cause in causes) / words
