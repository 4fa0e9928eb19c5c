"""Next-token pretraining as a Lightning pair: packed blocks of the corpus and a causal-LM module."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset
from transformers import get_scheduler


def pack(texts: list[str], tokenizer, block_size: int) -> torch.Tensor:
    """Every document as BOS … EOS, concatenated and cut into [n, block_size] blocks (the tail that
    does not fill a block is dropped; a document may span two blocks, as in GPT-style packing)."""
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    for ids in tokenizer(texts, add_special_tokens=True)["input_ids"]:
        stream.extend(ids)
        stream.append(eos)
    n = len(stream) // block_size
    if n == 0:
        raise ValueError(
            f"pretrain: the corpus holds {len(stream)} tokens, fewer than one block of {block_size}"
        )
    return torch.tensor(stream[: n * block_size], dtype=torch.long).view(n, block_size)


class PackedCorpus(L.LightningDataModule):
    def __init__(self, train: torch.Tensor, heldout: torch.Tensor, batch_size: int, seed: int):
        super().__init__()
        self.train, self.heldout = train, heldout
        self.batch_size, self.seed = batch_size, seed

    def train_dataloader(self):
        generator = torch.Generator().manual_seed(self.seed)  # the order is a function of the seed
        return DataLoader(TensorDataset(self.train), self.batch_size, shuffle=True, generator=generator)

    def val_dataloader(self):
        return DataLoader(TensorDataset(self.heldout), self.batch_size)


class Pretrainer(L.LightningModule):
    """Causal-LM loss on every token; AdamW with linear warmup then cosine decay over `steps`."""

    def __init__(self, model, lr: float, weight_decay: float, warmup: int, steps: int):
        super().__init__()
        self.model = model
        self.lr, self.weight_decay, self.warmup, self.steps = lr, weight_decay, warmup, steps

    def _loss(self, batch) -> torch.Tensor:
        (ids,) = batch
        return self.model(input_ids=ids, labels=ids).loss

    def training_step(self, batch, batch_idx):
        loss = self._loss(batch)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("heldout/loss", self._loss(batch), prog_bar=True, batch_size=batch[0].shape[0])

    def configure_optimizers(self):
        decay = [p for p in self.model.parameters() if p.ndim >= 2]
        rest = [p for p in self.model.parameters() if p.ndim < 2]  # norms: no weight decay
        groups = [{"params": decay, "weight_decay": self.weight_decay}, {"params": rest, "weight_decay": 0.0}]
        optimizer = torch.optim.AdamW(groups, lr=self.lr, betas=(0.9, 0.95))
        schedule = get_scheduler(
            "cosine", optimizer, num_warmup_steps=self.warmup, num_training_steps=self.steps
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
