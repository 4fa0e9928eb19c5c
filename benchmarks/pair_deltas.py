"""How the pairs of a trace spread around the full patch's effect, and what each loss makes of it.

    python benchmarks/pair_deltas.py experiment=trace_winogender_smollm2 seed=1   # any trace.py overrides

Composes conf/trace.yaml as trace.py does, patches every component on the search pairs and prints
each pair's Δ (the score's change), their mean, the unit u of the `scaled` and `pooled` losses, and the
share of a step's gradient each pair gets under each: the per-pair `scaled` loss, mean exp(−Δ/u), weighs
pair p by exp(−Δ_p/u), so where u is small and the pairs spread around it a few pairs the patch moves the
wrong way carry the step; the `pooled` loss, exp(−mean Δ / u), weighs every pair alike.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from catlit.tracing.effects import effect_loss  # noqa: E402
from catlit.tracing.run import setup  # noqa: E402
from catlit.tracing.search import loss_scale  # noqa: E402


def weights(delta: torch.Tensor, effect: str, loss: str, unit: float) -> torch.Tensor:
    """Each pair's share of the gradient of the loss with respect to the pairs' Δ."""
    delta = delta.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(effect_loss(delta, effect, loss, unit), delta)
    return grad.abs() / grad.abs().sum()


def main(overrides: list[str]) -> None:
    from hydra import compose, initialize_config_dir

    from catlit.configs import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
        cfg = compose("trace", overrides=overrides)
    torch.set_num_threads(1)
    tracer, train, _, _ = setup(cfg)
    full = tracer.space.full(1.0, device=tracer.device)
    with torch.no_grad():
        delta = torch.cat([tracer.delta(b, full, c) for b, c in tracer.prepare(train)]).cpu()
    unit = loss_scale(tracer, train, "scaled")
    print(f"# {' '.join(overrides)}: {len(delta)} search pairs, effect {cfg.pairs.effect}")
    spread = f"sd {delta.std():.4f}, from {delta.min():.3f} to {delta.max():.3f}"
    print(f"full patch: mean Δ {delta.mean():.4f}, {spread}")
    print(f"unit u = min(1, |mean Δ|) = {unit:.4f} (scaled and pooled alike)\n")
    print(
        "| pair | Δ (full patch) | scaled: share of the step | pooled: share of the step |\n|---|---|---|---|"
    )
    scaled, pooled = (weights(delta, cfg.pairs.effect, loss, unit) for loss in ("scaled", "pooled"))
    for i in torch.argsort(scaled, descending=True).tolist():
        print(f"| {train[i]} | {delta[i]:.3f} | {scaled[i]:.3f} | {pooled[i]:.3f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
