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
    n_train: int = 1600
    n_val: int = 200
    n_iid: int = 400
    n_ood: int = 400
    noise: float = 2.0
    prompt: str = PROMPT

    def sample(self, rng: random.Random, ood: bool) -> Example:
        causal = [round(rng.uniform(0, 50) + rng.gauss(0, self.noise), 1) for _ in CAUSAL]
        spurious = []
        for name, (k, slope, intercept) in SPURIOUS.items():
            if ood:
                value = rng.uniform(60, 120)  # shifted scale, independent of every cause
            else:
                value = slope * causal[k] + intercept + rng.gauss(0, 1.0)
            spurious.append((name, round(value, 1)))
        features = list(zip(CAUSAL, causal)) + spurious
        features += [(name, round(rng.uniform(0, 50), 1)) for name in IRRELEVANT]
        rng.shuffle(features)
        target = str(aqi(causal))
        # a value string marks every occurrence, so two factors with equal values give one cause
        causes = tuple(dict.fromkeys(str(v) for n, v in features if n in CAUSAL))
        return Example(
            render(features, self.prompt), target, (CausalLink(target, causes),), meta={"ood": ood}
        )
