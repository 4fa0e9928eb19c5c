"""AttentionReport, a callback: how much attention the answer rows pay to the causes, for every method.

Before training and after each training epoch it measures, on a fixed probe batch of training
examples, the Re-Attention ratio (mean attention on cause tokens / mean on the other visible tokens,
averaged over all layers and heads) and the share of the answer rows' attention mass on the causes,
and logs them as `probe/attn_ratio` and `probe/attn_share`, so baseline and CAT runs are comparable;
`summary()` gives the first and last of each for the run's metrics.json. At the end of
fit it saves `plots/attention_ratio.png` (the ratio over training) and one heatmap per probe
example, `plots/attention_example_<i>.png`, with the causal-mask blocks outlined, and logs both as
images to wandb when a WandbLogger is attached. A method whose predictions do not come from the
model's own forward pass (`capabilities.attention_probe` false: several adapters' passes) is not probed.
"""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

from catlit.data.collate import Collator
from catlit.hooks.eager import eager_attention
from catlit.hooks.row_stats import row_stats
from catlit.methods.reattention import reattention_loss
from catlit.plotting import pyplot
from catlit.plotting import save as save_figure
from catlit.summaries import RunSummary


class AttentionReport(Callback, RunSummary):
    def __init__(self, probe_size: int = 16, heatmaps: int = 2, out_dir: str | None = None):
        self.probe_size, self.heatmaps, self.out_dir = probe_size, heatmaps, out_dir
        self.batch: dict | None = None
        self.history: list[tuple[int, float, float]] = []  # (epoch, ratio, share); epoch -1: before
        self.resumed = False

    def state_dict(self) -> dict:
        return {"history": list(self.history)}  # a resumed run's ratio plot keeps the earlier epochs

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = [tuple(h) for h in state_dict.get("history", [])]
        self.resumed = True

    def summary(self) -> dict[str, float]:
        """The probe's ratio and share before training and after the last epoch."""
        if len(self.history) < 2:
            return {}
        first, last = self.history[0], self.history[-1]
        out = {"probe/attn_ratio_start": first[1], "probe/attn_ratio_end": last[1]}
        if len(first) > 2 and len(last) > 2:  # histories from older checkpoints hold no share
            out.update({"probe/attn_share_start": first[2], "probe/attn_share_end": last[2]})
        return out

    def summary_lines(self, metrics: dict[str, float]) -> list[str]:
        if "probe/attn_ratio_start" not in metrics:
            return []
        line = (
            "attention on causes (probe, mean over layers and heads): ratio "
            f"{metrics['probe/attn_ratio_start']:.2f} -> {metrics['probe/attn_ratio_end']:.2f}"
        )
        if "probe/attn_share_start" in metrics:
            line += (
                f", share of mass {100 * metrics['probe/attn_share_start']:.1f}% -> "
                f"{100 * metrics['probe/attn_share_end']:.1f}%"
            )
        return [line]

    def on_fit_start(self, trainer, pl_module) -> None:
        if not pl_module.method.capabilities.attention_probe:
            return
        dataset = trainer.datamodule.train_set
        items = [dataset[i] for i in range(len(dataset)) if dataset.encoded[i].blocks][: self.probe_size]
        if items:
            self.batch = Collator(pl_module.tokenizer.pad_token_id, ["causal_mask"])(items)
            self.rows = [item[1] for item in items]

    def _measure(self, pl_module) -> tuple[float, float, torch.Tensor]:
        batch = {k: v.to(pl_module.device) if torch.is_tensor(v) else v for k, v in self.batch.items()}
        attn = eager_attention(pl_module.model, batch)
        out = reattention_loss(row_stats(attn, batch["causal_mask"], batch["attention_mask"]))
        return float(out.ratio), float(out.share), attn.cpu()

    def on_train_start(self, trainer, pl_module) -> None:
        if self.batch is not None and not self.resumed:  # the untrained model's attention
            ratio, share, _ = self._measure(pl_module)
            self.history.append((-1, ratio, share))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.batch is None:
            return
        ratio, share, _ = self._measure(pl_module)
        self.history.append((trainer.current_epoch, ratio, share))
        pl_module.log("probe/attn_ratio", ratio, batch_size=1)
        pl_module.log("probe/attn_share", share, batch_size=1)

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.batch is None:
            return
        *_, attn = self._measure(pl_module)  # on every rank: sharded weights need every rank's forward
        if not trainer.is_global_zero:
            return
        out = Path(self.out_dir or trainer.default_root_dir) / "plots"
        out.mkdir(parents=True, exist_ok=True)
        paths = [self._plot_ratio(out / "attention_ratio.png")]
        for i in range(min(self.heatmaps, attn.shape[0])):
            paths.append(
                self._plot_heatmap(
                    out / f"attention_example_{i}.png", attn[i], self.rows[i], pl_module.tokenizer
                )
            )
        for logger in trainer.loggers:
            if hasattr(logger, "log_image"):
                for path in paths:  # one key each: the plots differ in size
                    logger.log_image(key=f"attention/{path.stem}", images=[str(path)])

    def _plot_ratio(self, path: Path) -> Path:
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(5, 3))
        ax.plot([e + 1 for e, *_ in self.history], [r for _, r, *_ in self.history], marker="o")
        ax.set_xlabel("epochs trained")
        ax.set_ylabel("attention ratio (causes / others)")
        ax.set_title("Probe attention ratio over training")
        fig.tight_layout()
        save_figure(fig, path, dpi=110)
        return path

    def _plot_heatmap(self, path: Path, attn: torch.Tensor, row, tokenizer) -> Path:
        from matplotlib.patches import Rectangle

        plt = pyplot()
        n = len(row.input_ids)
        fig, ax = plt.subplots(figsize=(7, 6))
        ax.imshow(attn[:n, :n].numpy() ** 0.5, cmap="viridis")  # sqrt: small weights stay visible
        for r0, r1, c0, c1 in row.blocks:  # rows predict the effect, columns are its causes
            ax.add_patch(
                Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0, r1 - r0, fill=False, edgecolor="red", lw=1.5)
            )
        if n <= 80:
            tokens = [tokenizer.decode([t]).strip() or "·" for t in row.input_ids]
            ax.set_xticks(range(n), tokens, rotation=90, fontsize=6)
            ax.set_yticks(range(n), tokens, fontsize=6)
        ax.set_title("Attention (mean over layers and heads); red: cause columns of effect rows", fontsize=8)
        fig.tight_layout()
        save_figure(fig, path, dpi=110)
        return path
