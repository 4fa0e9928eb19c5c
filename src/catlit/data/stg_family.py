"""A parametric Spurious Token Game family for controlled out-of-distribution experiments.

Every knob that decides whether a model can take a shortcut is a field: how many causal, spurious
and unrelated variables, their value range, the label rule, how strongly the spurious variables
track the label (or a cause) at training time, and what changes out of distribution.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from catlit.data.example import CausalLink, Example
from catlit.data.stg_released import PROMPT, render

CAUSAL_NAMES = ("Smoking", "Weight", "Exercise", "Alcohol", "Stress", "Sleep loss")
SPURIOUS_NAMES = ("Yellow fingers", "Clothing size", "Hormones", "Coffee cups", "Car size")
UNRELATED_NAMES = ("Certain gene", "Room size", "Shoe size", "Birth month")

RULES = ("weighted_sum", "any_above")
SPURIOUS_MODES = ("label", "copy")
OOD_SHIFTS = ("independent", "flipped", "shifted")


@dataclass
class STGFamily:
    name: str = "stg_family"
    n_causal: int = 2
    n_spurious: int = 1
    n_unrelated: int = 1
    low: int = 1
    high: int = 9
    rule: str = "weighted_sum"  # weighted_sum: sum(w*x) > threshold; any_above: max(x) > threshold
    weights: list[float] | None = None  # default: 1 for every causal variable
    threshold: float | None = None  # default: the mean of the rule's statistic (balanced labels)
    labels: tuple[str, str] = ("High Risk", "Low Risk")
    spurious_mode: str = "label"  # label: value in the upper half iff High; copy: copies a cause
    spurious_strength: float = 1.0  # P(a spurious variable follows its rule) at training time
    ood_shift: str = "independent"  # independent | flipped (anti-correlated) | shifted (new range)
    shuffle: bool = True
    n_train: int = 800
    n_val: int = 200
    n_iid: int = 400
    n_ood: int = 400
    prompt: str = PROMPT
    causal_names: list[str] = field(default_factory=lambda: list(CAUSAL_NAMES))
    spurious_names: list[str] = field(default_factory=lambda: list(SPURIOUS_NAMES))
    unrelated_names: list[str] = field(default_factory=lambda: list(UNRELATED_NAMES))

    def __post_init__(self) -> None:
        checks = {
            "rule": (self.rule, RULES),
            "spurious_mode": (self.spurious_mode, SPURIOUS_MODES),
            "ood_shift": (self.ood_shift, OOD_SHIFTS),
        }
        for key, (value, allowed) in checks.items():
            if value not in allowed:
                raise ValueError(f"STG family: {key}={value!r} is not one of {allowed}")
        for key, n, pool in (
            ("causal", self.n_causal, self.causal_names),
            ("spurious", self.n_spurious, self.spurious_names),
            ("unrelated", self.n_unrelated, self.unrelated_names),
        ):
            if n > len(pool):
                raise ValueError(f"STG family: n_{key}={n} but only {len(pool)} {key}_names")
        if self.n_causal < 1 or self.high <= self.low:
            raise ValueError("STG family: needs n_causal >= 1 and high > low")
        if not 0.0 <= self.spurious_strength <= 1.0:
            raise ValueError(f"STG family: spurious_strength must be in [0, 1], got {self.spurious_strength}")
        # derived values live outside the fields, so dataclasses.replace() recomputes them
        self.w = list(self.weights) if self.weights is not None else [1.0] * self.n_causal
        if len(self.w) != self.n_causal:
            raise ValueError(f"STG family: {len(self.w)} weights for {self.n_causal} causal variables")
        mid = (self.low + self.high) / 2
        default = mid * sum(self.w) if self.rule == "weighted_sum" else mid
        self.t = default if self.threshold is None else self.threshold

    def label_of(self, causal: list[int]) -> str:
        if self.rule == "weighted_sum":
            stat = sum(w * x for w, x in zip(self.w, causal))
        else:
            stat = max(causal)
        return self.labels[0] if stat > self.t else self.labels[1]

    def _spurious_value(self, rng: random.Random, k: int, causal: list[int], high: bool, ood: bool) -> int:
        lo, hi, mid = self.low, self.high, (self.low + self.high) // 2
        if ood and self.ood_shift == "independent":
            return rng.randint(lo, hi)
        if ood and self.ood_shift == "shifted":
            return rng.randint(hi + 1, 2 * hi - lo + 1)
        if not ood and rng.random() >= self.spurious_strength:
            return rng.randint(lo, hi)
        flip = ood  # remaining OOD case: "flipped"
        if self.spurious_mode == "copy":
            value = causal[k % len(causal)]
            return lo + hi - value if flip else value
        upper = high != flip
        return rng.randint(mid + 1, hi) if upper else rng.randint(lo, mid)

    def sample(self, rng: random.Random, ood: bool) -> Example:
        causal = [rng.randint(self.low, self.high) for _ in range(self.n_causal)]
        label = self.label_of(causal)
        high = label == self.labels[0]
        features = list(zip(self.causal_names[: self.n_causal], causal))
        features += [
            (name, self._spurious_value(rng, k, causal, high, ood))
            for k, name in enumerate(self.spurious_names[: self.n_spurious])
        ]
        features += [
            (name, rng.randint(self.low, self.high)) for name in self.unrelated_names[: self.n_unrelated]
        ]
        if self.shuffle:
            rng.shuffle(features)
        causal_set = set(self.causal_names[: self.n_causal])
        causes = tuple(f"{n}: {v}" for n, v in features if n in causal_set)
        spurious_set = set(self.spurious_names[: self.n_spurious])
        # what each feature phrase is, for analyses of where attention goes (eval.attention_mass)
        roles = {
            f"{n}: {v}": "cause" if n in causal_set else "spurious" if n in spurious_set else "unrelated"
            for n, v in features
        }
        link = (CausalLink(label, causes),)
        return Example(render(features, self.prompt), label, link, meta={"ood": ood, "roles": roles})
