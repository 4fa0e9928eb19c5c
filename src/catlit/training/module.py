"""One LightningModule for every method: answer-only CE + the method's terms; greedy-generation eval."""

from __future__ import annotations

import contextlib

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn
from transformers import get_scheduler

from catlit.eval.metrics import IndexedMean
from catlit.eval.scoring import get_error, get_scorer
from catlit.methods.base import Method
from catlit.models.lora import is_peft
from catlit.training.distributed import fully_shard_model
from catlit.training.rng import collect_rng_states, set_rng_states


class MethodHooks(Callback):
    """Keeps the method's hooks (`Method.hooks`) on the model for exactly the fit: attached at its
    start, removed at its end, also when it raises. Added by `TaskModule.configure_callbacks`."""

    def __init__(self):
        self.stack: contextlib.ExitStack | None = None

    def on_fit_start(self, trainer, pl_module) -> None:
        self.close()
        self.stack = contextlib.ExitStack()
        self.stack.enter_context(pl_module.method.hooks(pl_module.model))

    def close(self) -> None:
        if self.stack is not None:
            self.stack.close()
            self.stack = None

    def on_fit_end(self, trainer, pl_module) -> None:
        self.close()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self.close()

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self.close()


class TaskModule(L.LightningModule):
    """The LightningModule every method trains with. A method that is an `nn.Module` (it owns
    parameters) becomes a submodule here, so its parameters reach the optimizer, DDP and checkpoints."""

    def __init__(
        self,
        model,
        tokenizer,
        method: Method,
        task: str,
        val_names: list[str],
        test_names: list[str],
        max_new_tokens: int,
        optimizer: dict,
        scheduler: dict,
        nonfinite: str = "raise",
        accumulation: str = "mean",
    ):
        super().__init__()
        self.model, self.tokenizer, self.method = model, tokenizer, method
        self.run_config: dict | None = None  # the settings that define the run (training/resume.py)
        self.scorer = get_scorer(task)
        self.val_names, self.test_names = list(val_names), list(test_names)
        self.max_new_tokens = max_new_tokens
        self.optimizer_cfg, self.scheduler_cfg = dict(optimizer), dict(scheduler)
        self.val_acc = nn.ModuleDict({n: IndexedMean() for n in self.val_names})
        self.test_acc = nn.ModuleDict({n: IndexedMean() for n in self.test_names})
        # quantity tasks: mean absolute error over answers with a number, and the share without one
        self.error = get_error(task)
        keys = [f"val_{n}" for n in self.val_names] + [f"test_{n}" for n in self.test_names]
        self.mae = nn.ModuleDict({k: IndexedMean() for k in keys} if self.error else {})
        self.no_number = nn.ModuleDict({k: IndexedMean() for k in self.mae})
        self.predictions: dict[str, list[dict]] = {}
        self._total_steps = 1  # set in on_fit_start
        # Adapter-only checkpoints hold just the trainable weights; the frozen base comes from model.path.
        self.strict_loading = not is_peft(model)
        if nonfinite not in ("raise", "skip"):
            raise ValueError(f"nonfinite={nonfinite!r}; choose 'raise' or 'skip'")
        self.nonfinite, self.nonfinite_skipped = nonfinite, 0
        if accumulation not in ("mean", "sum"):
            raise ValueError(f"accumulation={accumulation!r}; choose 'mean' or 'sum'")
        self.accumulation = accumulation
        self._resumed_rng: dict | None = None

    # ---- training -------------------------------------------------------------------------------
    def _progress(self) -> float:
        return self.global_step / self._total_steps

    def configure_model(self) -> None:
        if self.device_mesh is not None:  # ModelParallelStrategy (trainer=fsdp2): shard with FSDP2
            if isinstance(self.method, nn.Module) and any(True for _ in self.method.parameters()):
                raise ValueError(
                    f"method={self.method.name} owns parameters outside the model, which trainer=fsdp2 "
                    "(FSDP2 over the model's layers) does not shard or synchronise: use trainer=ddp"
                )
            fully_shard_model(self.model, self.device_mesh)

    def configure_callbacks(self) -> list[Callback]:
        if any(isinstance(c, MethodHooks) for c in self.trainer.callbacks):
            return []  # validate/test after fit: already there
        return [MethodHooks()]

    def on_fit_start(self) -> None:
        # for gamma schedules; Lightning recomputes this property on every access
        self._total_steps = max(int(self.trainer.estimated_stepping_batches), 1)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        outputs = self.method.forward(self.model, batch, "train")
        terms, logs = self.method.losses(outputs, batch, self._progress(), self.current_epoch)
        loss = outputs.loss + sum(terms.values())
        bs = batch["input_ids"].shape[0]
        if not torch.isfinite(loss):
            bad = {
                k: float(v.detach())
                for k, v in {"ce": outputs.loss, **terms}.items()
                if not torch.isfinite(v)
            }
            if self.nonfinite == "raise":
                raise FloatingPointError(
                    f"training step {self.global_step} (epoch {self.current_epoch}, batch {batch_idx}): "
                    f"non-finite loss term(s) {bad}. Lower optimizer.lr, train in float32 or with "
                    "trainer.precision=bf16-mixed, or skip such steps with nonfinite=skip"
                )
            self.nonfinite_skipped += 1
            self.log("train/nonfinite_skipped", float(self.nonfinite_skipped), batch_size=bs)
            return None  # Lightning skips the optimizer step

        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        epoch = {"on_step": False, "on_epoch": True, "reduce_fx": "sum", "batch_size": bs}
        self.log("train/epoch_loss", loss.detach(), **epoch)  # summed: what the release selects on

        self.log("train/ce", outputs.loss, prog_bar=True, batch_size=bs)
        progress_bar = self.method.capabilities.progress_bar
        for name, value in logs.items():
            self.log(f"train/{name}", value, prog_bar=name in progress_bar, batch_size=bs)
        if self.accumulation == "sum":  # Lightning divides by the window; the CAT release adds up
            return loss * self.trainer.accumulate_grad_batches
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self.method.end_batch()

    # ---- evaluation -----------------------------------------------------------------------------
    def on_train_epoch_end(self) -> None:
        self._log_epoch_metrics("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def _log_epoch_metrics(self, stage: str) -> None:
        for key, value in self.method.epoch_metrics(stage).items():
            self.log(key, float(value), sync_dist=False)

    @torch.no_grad()
    def generate(self, batch: dict, stage: str = "test/iid") -> list[str]:
        prompt_ids = batch["prompt_ids"]
        out = self.method.generate(
            self.model,
            batch,
            stage,
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
            # sharded weights are gathered by every rank in every forward: all ranks step together
            synced_gpus=self._world_size() > 1,
        )
        return self.tokenizer.batch_decode(out[:, prompt_ids.shape[1] :], skip_special_tokens=True)

    def _world_size(self) -> int:
        return self.trainer.world_size if self._trainer is not None else 1

    def _eval_step(self, batch: dict, split: str, metrics: nn.ModuleDict, stage: str) -> None:
        bs = batch["input_ids"].shape[0]
        ce = self.method.forward(self.model, batch, f"{stage}/{split}").loss
        self.log(f"{stage}/{split}/ce", ce, batch_size=bs, add_dataloader_idx=False)
        preds = self.generate(batch, f"{stage}/{split}")
        correct = torch.tensor(
            [self.scorer(p, t) for p, t in zip(preds, batch["targets"])],
            dtype=torch.float32,
            device=self.device,
        )
        metrics[split].update(batch["index"], correct)
        self.log(
            f"{stage}/{split}/acc",
            metrics[split],
            batch_size=bs,
            add_dataloader_idx=False,
            prog_bar=stage == "val",
        )
        if self.error is not None:
            self._log_error(preds, batch, stage, split, bs)
        if stage == "test":
            rows = self.predictions.setdefault(split, [])
            for i, p, t, ok in zip(batch["index"].tolist(), preds, batch["targets"], correct.tolist()):
                rows.append({"index": i, "prediction": p, "target": t, "correct": bool(ok)})

    def _log_error(self, preds: list[str], batch: dict, stage: str, split: str, bs: int) -> None:
        key = f"{stage}_{split}"
        errors = [self.error(p, t) for p, t in zip(preds, batch["targets"])]
        parsed = torch.tensor([e is not None for e in errors], device=self.device)
        values = torch.tensor([e for e in errors if e is not None], dtype=torch.float32, device=self.device)
        self.mae[key].update(batch["index"].to(self.device)[parsed], values)
        self.no_number[key].update(batch["index"], (~parsed).float())
        kw = {"batch_size": bs, "add_dataloader_idx": False}
        self.log(f"{stage}/{split}/mae", self.mae[key], **kw)
        self.log(f"{stage}/{split}/no_number", self.no_number[key], **kw)

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, self.val_names[dataloader_idx], self.val_acc, "val")

    def on_test_epoch_start(self) -> None:
        self.predictions = {}

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, self.test_names[dataloader_idx], self.test_acc, "test")

    def on_test_epoch_end(self) -> None:
        """Each rank scored a shard: gather the predictions, one row per example (padding repeats dropped)."""
        self._log_epoch_metrics("test")
        gathered = [self.predictions]
        if self.trainer.world_size > 1 and torch.distributed.is_initialized():
            gathered = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(gathered, self.predictions)
        merged: dict[str, dict[int, dict]] = {}
        for rank_predictions in gathered:
            for split, rows in rank_predictions.items():
                for row in rows:
                    merged.setdefault(split, {}).setdefault(row["index"], row)
        self.predictions = {split: [rows[i] for i in sorted(rows)] for split, rows in merged.items()}

    # ---- optimisation and checkpoints -----------------------------------------------------------
    def configure_optimizers(self):
        cfg = dict(self.optimizer_cfg)
        name = cfg.pop("name", "adamw")
        params = [p for p in self.parameters() if p.requires_grad]  # the model's and the method's
        optimizers = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}
        if name not in optimizers:
            raise ValueError(f"optimizer.name={name!r}; choose from {sorted(optimizers)}")
        optimizer = optimizers[name](params, **cfg)
        sched = dict(self.scheduler_cfg)
        kind = sched.pop("name", "constant")
        if kind in (None, "none", "constant"):
            return optimizer
        total = self.trainer.estimated_stepping_batches
        warmup = sched.pop("warmup_steps", None)
        if warmup is None:
            warmup = int(sched.pop("warmup_ratio", 0.0) * total)
        sched.pop("warmup_ratio", None)
        scheduler = get_scheduler(
            kind,
            optimizer,
            num_warmup_steps=warmup,
            num_training_steps=total,
            scheduler_specific_kwargs=sched or None,
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        # a resumed run continues the random streams (dropout) where the checkpointed epoch left them
        if self._resumed_rng is not None:
            set_rng_states(self._resumed_rng)
            self._resumed_rng = None

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._resumed_rng = checkpoint.get("catlit_rng_states")
        self.nonfinite_skipped = checkpoint.get("catlit_nonfinite_skipped", 0)
        self.method.load_state(checkpoint.get("catlit_method_state", {}))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["catlit_rng_states"] = collect_rng_states()
        checkpoint["catlit_nonfinite_skipped"] = self.nonfinite_skipped
        checkpoint["catlit_method_state"] = self.method.state()
        if self.run_config is not None:  # what a resume is checked against
            checkpoint["catlit_run_config"] = self.run_config
        if is_peft(self.model):  # adapter-only: keep what trains, never the frozen base weights
            trainable = {f"model.{n}" for n, p in self.model.named_parameters() if p.requires_grad}
            checkpoint["state_dict"] = {
                k: v
                for k, v in checkpoint["state_dict"].items()
                if k in trainable or k.startswith("method.")  # the method's own weights and buffers
            }
