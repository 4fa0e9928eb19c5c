"""Causal Attention Tuning: CE + gamma * L_attn (the Re-Attention loss)."""

from __future__ import annotations

import torch

from catlit.hooks.attention import make_capture
from catlit.methods.base import Method
from catlit.methods.reattention import VARIANTS, reattention_loss, row_ratios
from catlit.methods.schedule import GammaSchedule
from catlit.tracing.selection import read_head_selection

ALPHA_MODES = ("absolute", "relative")


class CausalAttentionTuning(Method):
    name = "cat"
    batch_fields = frozenset({"causal_mask"})

    def __init__(
        self,
        alpha: float = 2.0,
        gamma: float = 1.0,
        variant: str = "div",
        capture: str = "efficient",
        gamma_schedule: dict | None = None,
        name: str | None = None,
        layers="all",
        heads="all",
        heads_from: str | None = None,
        per_head: bool = False,
        share: float = 0.5,
        alpha_mode: str = "absolute",
    ):
        super().__init__(name)
        if heads_from:  # a trace's selection.json: L_attn only on the heads that carry the effect
            if layers not in (None, "all") or heads not in (None, "all"):
                raise ValueError(
                    "method.heads_from sets the layers and heads: leave method.layers/heads at 'all'"
                )
            selected = read_head_selection(heads_from)
            layers, heads = sorted(selected), selected
        if variant not in VARIANTS:
            raise ValueError(f"method.variant={variant!r}; choose from {VARIANTS}")
        if alpha <= 0:
            raise ValueError(f"method.alpha must be > 0, got {alpha}")
        if not 0 < share <= 1:
            raise ValueError(f"method.share must be in (0, 1], got {share}")
        if alpha_mode not in ALPHA_MODES:
            raise ValueError(f"method.alpha_mode={alpha_mode!r}; choose from {ALPHA_MODES}")
        self.alpha, self.variant, self.share, self.alpha_mode = alpha, variant, share, alpha_mode
        self.reference_ratio: float | None = None  # alpha_mode=relative: the ratio at the first step
        # training batches seen, and those where L_attn acted (a tensor: no device sync per step)
        self.steps, self.active_steps = 0, torch.zeros(())
        self.gamma = GammaSchedule(gamma=gamma, **(gamma_schedule or {}))
        self.capture = make_capture(capture, layers, heads, per_head)

    def attn_implementation(self, requested: str) -> str:
        return self.capture.attn_implementation(requested)

    def setup(self, model) -> None:
        self.capture.setup(model)

    def before_forward(self, batch: dict, training: bool) -> None:
        if training:
            self.capture.bind(batch)
        else:  # evaluation and generation run the plain fast attention
            self.capture.unbind()

    def forward_kwargs(self) -> dict:
        return self.capture.forward_kwargs()

    def threshold(self, stats) -> float:
        """The ratio threshold: alpha, or alpha times the ratio the model had at its first step."""
        if self.alpha_mode == "absolute":
            return self.alpha
        if self.reference_ratio is None:
            rows = row_ratios(stats)
            finite = rows.valid & torch.isfinite(rows.ratio)
            self.reference_ratio = float(rows.ratio[finite].mean()) if finite.any() else 1.0
        return self.alpha * self.reference_ratio

    def method_state(self) -> dict:
        active = int(self.active_steps)
        return {"reference_ratio": self.reference_ratio, "steps": self.steps, "active_steps": active}

    def load_method_state(self, state: dict) -> None:
        self.reference_ratio = state.get("reference_ratio")
        self.steps, self.active_steps = state.get("steps", 0), torch.tensor(state.get("active_steps", 0))

    def summary(self) -> dict[str, float]:
        out = {"train/attn_active_steps": float(self.active_steps) / max(self.steps, 1)}
        if self.reference_ratio is not None:
            out["train/attn_reference_ratio"] = self.reference_ratio
        return out

    def losses(self, outputs, batch, progress, epoch):
        stats = self.capture.stats(outputs, batch)
        out = reattention_loss(stats, self.threshold(stats), self.variant, self.share)
        gamma = self.gamma(progress, epoch)
        rows = out.valid_rows.float()
        self.steps += 1
        self.active_steps = self.active_steps.to(out.active_rows.device) + (out.active_rows > 0)
        logs = {
            "attn": out.loss.detach(),
            "attn_ratio": out.ratio,
            "attn_share": out.share,
            "gamma": gamma,
            "attn_rows": rows,
            "attn_active": out.active_rows.float() / rows.clamp(min=1),  # rows below the threshold
        }
        return {"attn": gamma * out.loss}, logs
