"""The CAT authors' training loop (their released train_general.py with its loss), re-implemented
step by step from the release for parity tests: plain PyTorch, no Lightning, no catlit code."""

from __future__ import annotations

import math

import torch
import transformers


def constraint_loss(mask, attention, alpha: float, amp: float = 1.0, loss_type: str = "div"):
    """The released per-row loss: rows with mask entries (not all ones), C/N on the lower triangle,
    a loss where mean(C) / mean(N) < alpha, averaged over the rows that had both, times `amp`."""
    batch, t, _ = mask.shape
    lower = torch.tril(torch.ones(t, t))
    total, valid = torch.tensor(0.0), 0
    for i in range(batch):
        for j in range(t):
            row_mask, row = mask[i, j], attention[i, j]
            if row_mask.sum() == 0 or row_mask.sum() == row_mask.numel():
                continue
            causes = row[(row_mask == 1) & (lower[j] == 1)]
            others = row[(row_mask == 0) & (lower[j] == 1)]
            if causes.numel() == 0 or others.numel() == 0:
                continue
            a1, a0 = causes.mean(), others.mean()
            if a1 / a0 < alpha:
                if loss_type == "div":
                    loss = -torch.log(1 + a1) / torch.log(1 + a0)
                else:
                    raise NotImplementedError(loss_type)
            else:
                loss = torch.tensor(0.0)
            total = total + loss
            valid += 1
    if valid > 0:
        total = total / valid
    return amp * total


def average_attention(attentions):
    return torch.stack([layer.mean(dim=1) for layer in attentions]).mean(dim=0)


def train(
    model, epochs: list[list[dict]], lr=1e-3, weight_decay=0.0, accumulation=4, alpha=2.0, decay_rate=1.0
):
    """The release's loop over the given batches per epoch (its model call has no attention mask):
    loss = CE + exp(-rate * epoch) * L_attn, backward every batch, an optimizer and schedule step
    every `accumulation` batches, gradients summed. Returns (every batch's loss, the gradients of the
    trainable weights at each optimizer step)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    num_training_steps = sum(len(batches) for batches in epochs)
    scheduler = transformers.get_cosine_schedule_with_warmup(
        optimizer=optimizer,
        num_warmup_steps=int(0.1 * num_training_steps / accumulation),
        num_training_steps=int(num_training_steps / accumulation),
    )
    losses, grads, step = [], [], 0
    for epoch, batches in enumerate(epochs):
        optimizer.zero_grad()
        model.train()
        for batch in batches:
            outputs = model(batch["input_ids"], labels=batch["labels"], output_attentions=True)
            attention = average_attention(outputs.attentions)
            amp = math.exp(-decay_rate * epoch)
            loss = outputs.loss + constraint_loss(batch["causal_mask"].float(), attention, alpha, amp=amp)
            losses.append(loss.item())
            loss.backward()
            step += 1
            if step % accumulation == 0:
                grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
    return losses, grads
