"""The Spurious Token Game as the CAT authors generated it.

Causal: Smoking (S), Weight (W), Exercise (E). In-distribution the spurious features are
deterministic copies (Yellow fingers = int(1.5 S), Clothing size = W, Hormones = int(0.5 E));
out of distribution every value is an independent randint(1, 10). Certain gene and Room size are
unrelated. The released label rule names "Middle Risk" only when v == 2.7 exactly (floating-point
equality), which makes the task effectively binary; `label_rule="intended"` uses the band instead.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from catlit.data.example import CausalLink, Example

PROMPT = "Here is the statistical data for a person. Please predict the probability of cancer. "
CAUSAL = ("Smoking", "Weight", "Exercise")


def released_score(smoking: int, weight: int, exercise: int) -> float:
    return 1.2 * smoking + 0.7 * weight - exercise


def released_label(v: float, rule: str = "released") -> str:
    if v > 7.2:
        return "High Risk"
    if rule == "released":
        return "Middle Risk" if v == 2.7 else "Low Risk"  # the released quirk, kept
    if rule == "intended":
        return "Middle Risk" if v > 2.7 else "Low Risk"
    raise ValueError(f"label_rule must be 'released' or 'intended', got {rule!r}")


def render(features: list[tuple[str, int | float | str]], prompt: str) -> str:
    return prompt + ", ".join(f"{name}: {value}" for name, value in features) + " Answer: "


@dataclass
class ReleasedSTG:
    name: str = "stg_released"
    n_train: int = 1600
    n_val: int = 200
    n_iid: int = 400
    n_ood: int = 400
    label_rule: str = "released"
    prompt: str = PROMPT

    def sample(self, rng: random.Random, ood: bool) -> Example:
        s, w, e = (rng.randint(1, 10) for _ in range(3))
        if ood:
            yellow, clothing, hormones = (rng.randint(1, 10) for _ in range(3))
        else:
            yellow, clothing, hormones = int(1.5 * s), w, int(0.5 * e)
        features = [
            ("Smoking", s),
            ("Weight", w),
            ("Exercise", e),
            ("Yellow fingers", yellow),
            ("Clothing size", clothing),
            ("Hormones", hormones),
            ("Certain gene", rng.randint(1, 10)),
            ("Room size", rng.randint(1, 10)),
        ]
        rng.shuffle(features)
        label = released_label(released_score(s, w, e), self.label_rule)
        causes = tuple(f"{n}: {v}" for n, v in features if n in CAUSAL)  # in text order, as released
        return Example(render(features, self.prompt), label, (CausalLink(label, causes),), meta={"ood": ood})
