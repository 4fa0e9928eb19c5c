"""Causal Attention Tuning: CE + gamma * L_attn (the Re-Attention loss)."""

from __future__ import annotations

import torch

from catlit.errors import number, one_of
from catlit.hooks.attention import make_capture
from catlit.hooks.selection import read_head_selection
from catlit.methods.answer_loss import answer_forward
from catlit.methods.base import Capabilities, Method, MethodOutput
from catlit.methods.reattention import VARIANTS, reattention_loss, row_ratios
from catlit.schedules import Schedule

ALPHA_MODES = ("absolute", "relative")


class CausalAttentionTuning(Method):
    name = "cat"
    capabilities = Capabilities(
        batch_fields=frozenset({"causal_mask"}),
        progress_bar=("attn", "attn_ratio"),
        headline=("alpha", "gamma"),
        label_names={"alpha": "α", "gamma": "γ"},
        run_reference_keys={"heads_from": "traced heads"},
        config_rules={
            "alpha": (number(lambda v: v > 0), "a number > 0"),
            "gamma": (
                number(lambda v: v >= 0),
                "a number >= 0 (a negative gamma pushes attention away from causes)",
            ),
            "share": (number(lambda v: 0 < v <= 1), "a number in (0, 1]"),
            "variant": one_of(VARIANTS),
            "alpha_mode": one_of(ALPHA_MODES),
        },
    )

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
        self.check_settings(alpha=alpha, gamma=gamma, share=share, variant=variant, alpha_mode=alpha_mode)
        self.alpha, self.variant, self.share, self.alpha_mode = alpha, variant, share, alpha_mode
        self.reference_ratio: float | None = None  # alpha_mode=relative: the ratio at the first step
        # training batches seen, and those where L_attn acted (a tensor: no device sync per step)
        self.steps, self.active_steps = 0, torch.zeros(())
        self.gamma = Schedule(value=gamma, key="method.gamma_schedule.schedule", **(gamma_schedule or {}))
        self.capture = make_capture(capture, layers, heads, per_head)

    @classmethod
    def headline_keys(cls, config: dict) -> tuple[str, ...]:
        """The share target labels a run of the share variant; alpha labels the ratio variants."""
        return ("share", "gamma") if config.get("variant") == "share" else cls.capabilities.headline

    def hooks(self, model):
        return self.capture.attached(model)

    def forward(self, model, batch: dict, stage: str) -> MethodOutput:
        if stage != "train":  # evaluation and generation run the plain fast attention
            return super().forward(model, batch, stage)
        self.capture.bind(batch)
        loss, out = answer_forward(model, batch, **self.capture.forward_kwargs())
        return MethodOutput(loss=loss, logits=out.logits, parts={"stats": self.capture.stats(out, batch)})

    def end_batch(self) -> None:
        # only now: a non-reentrant checkpoint recomputes each layer (and its statistics) in backward
        self.capture.unbind()

    def threshold(self, stats) -> float:
        """The ratio threshold: alpha, or alpha times the ratio the model had at its first step."""
        if self.alpha_mode == "absolute":
            return self.alpha
        if self.reference_ratio is None:
            rows = row_ratios(stats)
            finite = rows.valid & torch.isfinite(rows.ratio)
            self.reference_ratio = float(rows.ratio[finite].mean()) if finite.any() else 1.0
        return self.alpha * self.reference_ratio

    def state(self) -> dict:
        active = int(self.active_steps)
        return {"reference_ratio": self.reference_ratio, "steps": self.steps, "active_steps": active}

    def load_state(self, state: dict) -> None:
        self.reference_ratio = state.get("reference_ratio")
        self.steps, self.active_steps = state.get("steps", 0), torch.tensor(state.get("active_steps", 0))

    def summary(self) -> dict[str, float]:
        if not self.steps:  # a run that only tested: L_attn never had a step to act on
            return {}
        out = {"train/attn_active_steps": float(self.active_steps) / self.steps}
        if self.reference_ratio is not None:
            out["train/attn_reference_ratio"] = self.reference_ratio
        return out

    def summary_lines(self, metrics: dict[str, float]) -> list[str]:
        if "train/attn_active_steps" not in metrics:
            return []
        return [f"L_attn active in {100 * metrics['train/attn_active_steps']:.1f}% of training steps"]

    def losses(self, output: MethodOutput, batch, progress, epoch):
        stats = output.parts["stats"]
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
