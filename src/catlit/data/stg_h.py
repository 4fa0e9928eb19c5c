"""STG_H: the harder Spurious Token Game, an integer air-quality index (0-100) to predict.

Six causal factors (uniform + Gaussian noise) give raw = .3f1 + .25f2 + .2f3 + .15f4 - .2f5 - .3f6,
clipped to [-20, 30], AQI = round((raw + 20) / 50 * 100). Five spurious factors are noisy linear
functions of causal ones in distribution and independent uniforms on shifted scales out of it;
three factors are irrelevant. The annotated causes are the six value strings.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from catlit.data.example import CausalLink, Example
from catlit.data.stg_released import render

PROMPT = "Here are the environmental readings for a city. Please predict the air quality index. "
CAUSAL = (
    "Traffic volume",
    "Industrial output",
    "Construction dust",
    "Crop burning",
    "Wind speed",
    "Rainfall",
)
WEIGHTS = (0.3, 0.25, 0.2, 0.15, -0.2, -0.3)
# spurious name -> (causal factor it tracks in distribution, slope, intercept)
SPURIOUS = {
    "Haze reports": (0, 0.8, 5.0),
    "Factory shifts": (1, 0.6, 10.0),
    "Cough clinic visits": (2, 1.2, 3.0),
    "Farm fires seen": (3, 0.5, 2.0),
    "Kite sales": (4, 0.9, 1.0),
}
IRRELEVANT = ("Library visits", "Bus fares", "Stadium events")


def aqi(causal: list[float]) -> int:
    raw = sum(w * f for w, f in zip(WEIGHTS, causal))
    raw = min(max(raw, -20.0), 30.0)
    return round((raw + 20.0) / 50.0 * 100.0)


@dataclass
class STGH:
    name: str = "stg_h"
    # Defaults the embedded model can learn on CPU: one fixed factor order and integer values (with
    # a new order per row and one decimal, 1600 rows, it answers like the constant answer: 2.5%,
    # MAE 15.6 against the constant's 14.3 on test IID).
    n_train: int = 4000
    n_val: int = 200
    n_iid: int = 400
    n_ood: int = 400
    noise: float = 2.0
    prompt: str = PROMPT
    shuffle: bool = False  # true: the factors in a new random order per row
    decimals: int = 0  # digits after the point of every shown value

    def _shown(self, value: float) -> int | float:
        return round(value, self.decimals) if self.decimals else round(value)

    def sample(self, rng: random.Random, ood: bool) -> Example:
        causal = [self._shown(rng.uniform(0, 50) + rng.gauss(0, self.noise)) for _ in CAUSAL]
        spurious = []
        for name, (k, slope, intercept) in SPURIOUS.items():
            if ood:
                value = rng.uniform(60, 120)  # shifted scale, independent of every cause
            else:
                value = slope * causal[k] + intercept + rng.gauss(0, 1.0)
            spurious.append((name, self._shown(value)))
        features = list(zip(CAUSAL, causal)) + spurious
        features += [(name, self._shown(rng.uniform(0, 50))) for name in IRRELEVANT]
        if self.shuffle:
            rng.shuffle(features)
        target = str(aqi(causal))
        # a value string marks every occurrence, so two factors with equal values give one cause
        causes = tuple(dict.fromkeys(str(v) for n, v in features if n in CAUSAL))
        return Example(
            render(features, self.prompt), target, (CausalLink(target, causes),), meta={"ood": ood}
        )


# ---- STG_H as the CAT authors generated it -------------------------------------------------------
# (name, unit, low, high, noise std) of the six causal factors, in template order
RELEASED_CAUSAL = (
    ("Industrial Emissions", "", 30, 70, 2.0),
    ("Vehicle Emissions", "", 20, 60, 2.0),
    ("Coal Dependency", "%", 10, 50, 1.5),
    ("Agricultural Burning", "", 10, 30, 1.0),
    ("Urban Green Coverage", "%", 40, 80, 3.0),
    ("Meteorological Dispersion", "", 50, 90, 3.0),
)
# (name, causal factor it tracks in distribution, slope, noise std, OOD uniform range, decimals, unit)
RELEASED_SPURIOUS = (
    ("Ice Cream Sales Index", 5, 0.4, 2.0, (5, 9), 1, ""),
    ("Allergy Complaints Level", 3, 0.2, 3.0, (2, 6), 1, ""),
    ("Renewable Stock Index", 0, 1.1, 1.5, (3, 7), 0, ""),
    ("Public Transport Subscriptions", 1, 0.15, 2.0, (3, 9), 1, "k"),
    ("Water Awareness Score", 4, -0.1, 1.0, (-8, -4), 1, ""),
)
RELEASED_QUESTION = (
    "Given these diverse conditions, what is the projected Air Quality Index (AQI) on a 0-100 scale? Answer: "
)


def ordinal(n: int) -> str:
    suffix = "th" if 11 <= n % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _shown(value: float, decimals: int, unit: str) -> str:
    return f"{value:.{decimals}f}{unit}"


@dataclass
class ReleasedSTGH:
    """STG_H following the released data-generating process (sizes 3000 / 1000 / 1000).

    Causal factors are uniform + Gaussian noise, shown with one decimal (and % where the factor is a
    percentage; the AQI is computed from the unrounded values); spurious factors are noisy linear
    functions of one cause in training and IID test, independent uniforms out of distribution (Ice
    Cream Sales and Renewable Stock move to a new scale); three irrelevant factors. `important` is
    [{"Answer: N": [the six causal values as shown]}].
    """

    name: str = "stg_h_released"
    n_train: int = 3000
    n_val: int = 200
    n_iid: int = 1000
    n_ood: int = 1000

    def sample(self, rng: random.Random, ood: bool) -> Example:
        causal = [rng.uniform(lo, hi) + rng.gauss(0, sd) for _, _, lo, hi, sd in RELEASED_CAUSAL]
        shown = [_shown(v, 1, unit) for v, (_, unit, *_) in zip(causal, RELEASED_CAUSAL)]
        spurious = []
        for name, k, slope, sd, (lo, hi), decimals, unit in RELEASED_SPURIOUS:
            value = rng.uniform(lo, hi) if ood else slope * causal[k] + rng.gauss(0, sd)
            spurious.append(f"{name}: {_shown(value, decimals, unit)}")
        irrelevant = [
            f"City Anniversary: {ordinal(rng.randint(1, 100))}",
            f"Average Internet Speed: {_shown(rng.uniform(80, 120) + rng.gauss(0, 3), 1, 'Mbps')}",
            f"Number of Libraries: {rng.randint(10, 50)}",
        ]
        groups = [[f"{c[0]}: {s}" for c, s in zip(RELEASED_CAUSAL, shown)], spurious, irrelevant]
        text = "".join("; ".join(group) + ". " for group in groups) + RELEASED_QUESTION
        target = str(aqi(causal))
        link = CausalLink(f"Answer: {target}", tuple(dict.fromkeys(shown)))
        return Example(text, target, (link,), meta={"ood": ood})
