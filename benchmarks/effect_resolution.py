"""Can a task's held-out pairs rank tracing methods? The all-components effect's interval per split.

    python benchmarks/effect_resolution.py experiment=trace_winogender_smollm2 --seeds 1 2 3 \
        --fractions 0.2 0.5

Every method's score in a comparison (`catlit-trace-compare`) is a share: its set's held-out effect over
all components' held-out effect. Where that denominator's 95% interval over the held-out pairs holds
0, the shares are ratios of noise and no ranking follows from them. This patches every component on
every pair once (trace.py's composition, any overrides), then prints, for each seed and held-out
fraction, the held-out split's all-components effect (the mean over its pairs, the comparison's
denominator) with its 95% interval, and how many held-out pairs would bring the interval to a quarter
of the effect over all pairs.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from catlit.stats import interval  # noqa: E402
from catlit.tracing.run import setup, split_indices  # noqa: E402


def pair_effects(cfg) -> list[float]:
    """Each usable pair's effect with every component patched, in the tracer's pair order."""
    tracer, train, held, _ = setup(cfg)
    full = tracer.space.full(1.0, device=tracer.device)
    return torch.cat(tracer.pair_effects(full, tracer.prepare(sorted(train + held)))).cpu().tolist()


def pairs_needed(sd: float, mean: float, part: float = 0.25) -> float:
    """Pairs for a 95% half-width of `part` × |mean| (inf for a zero mean)."""
    return math.inf if mean == 0 else math.ceil((1.96 * sd / (part * abs(mean))) ** 2)


def report(effects_of_seed, seeds: list[int], fractions: list[float]) -> str:
    """The table; `effects_of_seed(seed)` gives the pairs' effects a seed traces (the same list for
    every seed, unless `pairs.sample` draws the pairs)."""
    effects = effects_of_seed(seeds[0])
    mean, sd, half = interval(effects)
    lines = [
        f"every pair of seed {seeds[0]} ({len(effects)}): all-components effect {mean:.4f} ± {half:.4f} "
        f"(sd {sd:.4f}); a 95% interval of a quarter of it needs ~{pairs_needed(sd, mean)} held-out pairs",
        "",
        "| seed | held-out fraction | held-out pairs | all-components effect (mean ± 95%) | holds 0 |",
        "|---|---|---|---|---|",
    ]
    for seed in seeds:
        effects = effects_of_seed(seed)
        for fraction in fractions:
            _, held = split_indices(len(effects), fraction, seed)
            values = [effects[i] for i in held]
            if len(values) < 2:
                lines.append(f"| {seed} | {fraction} | {len(values)} | – | – |")
                continue
            m, _, h = interval(values)
            holds = "yes" if abs(m) <= h else "no"
            lines.append(f"| {seed} | {fraction} | {len(values)} | {m:.4f} ± {h:.4f} | {holds} |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    from hydra import compose, initialize_config_dir

    from catlit.configs import config_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.2, 0.5])
    args, overrides = parser.parse_known_args(argv)
    with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
        base = compose("trace", overrides=overrides)
        sampled = bool(base.pairs.get("sample"))  # then each seed traces its own draw of the pairs
        configs = {s: compose("trace", overrides=[*overrides, f"seed={s}"]) for s in args.seeds}
    torch.set_num_threads(1)
    print(f"# {' '.join(overrides)}: effect {base.pairs.effect}")
    computed: dict = {}

    def effects_of_seed(seed: int) -> list[float]:
        key = seed if sampled else None
        if key not in computed:
            computed[key] = pair_effects(configs[seed])
        return computed[key]

    print(report(effects_of_seed, args.seeds, args.fractions))


if __name__ == "__main__":
    main(sys.argv[1:])
