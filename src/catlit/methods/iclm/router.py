"""ICLM's router: a vector-quantised choice of one domain module per input.

The router adapter's last hidden state goes through a projector (Linear D -> latent) and a
BatchNorm; each token latent z_t is compared with K codewords, the squared distances are summed over
the input's routed tokens, and the nearest codeword wins (Σ_t ‖z_t − e‖² = T‖z̄ − e‖² + const, so
this is the codeword nearest the mean latent). The choice is an argmin, so no task gradient reaches
the router: it learns from the VQ-VAE loss alone, β‖z − sg(e)‖² + ‖sg(z) − e‖² on the chosen
codeword.

The chosen codeword of each token is read with a one-hot matmul rather than an indexed gather: the
gather's backward accumulates into shared rows in an order that varies with the thread count, so two
runs of one seed would differ in the last bits; the matmul's backward is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


@dataclass
class Route:
    choice: torch.Tensor  # [B] chosen codeword
    weights: torch.Tensor  # [B, K] one-hot
    distances: torch.Tensor  # [B, K] squared distances summed over the routed tokens
    vq_loss: torch.Tensor  # scalar


class VQRouter(nn.Module):
    """`restart_after=n`: a codeword that no input has chosen for n training steps is moved onto the
    mean latent of the input farthest from its own codeword in the current batch (a dead-code
    restart), so every codeword stays in use; `restarted` counts the restarts."""

    def __init__(
        self, hidden_size: int, codes: int = 2, latent: int = 64, beta: float = 0.25, restart_after=None
    ):
        super().__init__()
        if codes < 1:
            raise ValueError(f"router: codes must be >= 1, got {codes}")
        self.beta, self.restart_after = beta, restart_after
        self.projector = nn.Linear(hidden_size, latent)
        self.norm = nn.BatchNorm1d(latent)
        self.codebook = nn.Embedding(codes, latent)
        nn.init.uniform_(self.codebook.weight, -1.0 / codes, 1.0 / codes)
        self.register_buffer("idle", torch.zeros(codes, dtype=torch.long))  # steps since last chosen
        self.register_buffer("restarted", torch.zeros((), dtype=torch.long))

    @property
    def codes(self) -> int:
        return self.codebook.num_embeddings

    def latents(self, hidden: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised latents of the routed tokens [M, latent] and each one's row in the batch [M]."""
        rows = mask.nonzero()[:, 0]
        z = self.norm(self.projector(hidden[mask.bool()].float()))
        return z, rows

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> Route:
        """hidden [B, T, D]; mask [B, T] the tokens that route (every row needs at least one)."""
        if not mask.bool().any(-1).all():
            raise ValueError("router: an input has no token to route on")
        z, rows = self.latents(hidden, mask)
        codebook = self.codebook.weight
        token_distances = (z[:, None, :] - codebook[None]).pow(2).sum(-1)  # [M, K]
        distances = torch.zeros(hidden.shape[0], self.codes, device=z.device).index_add(
            0, rows, token_distances
        )
        choice = distances.argmin(-1)
        if self.training and self.restart_after:
            self._restart_dead(z, rows, distances.detach(), choice)
        chosen = F.one_hot(choice[rows], self.codes).to(codebook.dtype) @ codebook  # its input's codeword
        vq = self.beta * F.mse_loss(z, chosen.detach()) + F.mse_loss(z.detach(), chosen)
        weights = F.one_hot(choice, self.codes).to(hidden.dtype)
        return Route(choice=choice, weights=weights, distances=distances.detach(), vq_loss=vq)

    @torch.no_grad()
    def _restart_dead(self, z: torch.Tensor, rows: torch.Tensor, distances: torch.Tensor, choice) -> None:
        used = torch.zeros(self.codes, dtype=torch.bool, device=choice.device)
        used[choice] = True
        self.idle.copy_(torch.where(used, 0, self.idle + 1))
        dead = (self.idle >= self.restart_after).nonzero()[:, 0].tolist()
        if not dead:
            return
        counts = torch.zeros(distances.shape[0], device=z.device).index_add(
            0, rows, torch.ones_like(rows, dtype=z.dtype)
        )
        means = torch.zeros(distances.shape[0], z.shape[1], device=z.device).index_add(0, rows, z.detach())
        means = means / counts.clamp_min(1)[:, None]
        own = distances.gather(1, choice[:, None])[:, 0] / counts.clamp_min(1)
        for k, row in zip(dead, own.argsort(descending=True).tolist()):  # the worst-served inputs
            self.codebook.weight[k] = means[row]
            self.idle[k] = 0
            self.restarted += 1


class RoutingCounts(Metric):
    """Inputs per (codeword, true source) over an epoch: purity and codebook usage. A torchmetrics
    metric, so every process's inputs count (the states are gathered when it is computed)."""

    full_state_update = False

    def __init__(self, codes: int, **kwargs):
        super().__init__(**kwargs)
        self.codes = codes
        self.add_state("choice", default=[], dist_reduce_fx="cat")
        self.add_state("source", default=[], dist_reduce_fx="cat")

    def update(self, choice: torch.Tensor, source: torch.Tensor | None) -> None:
        choice = choice.detach().long()
        self.choice.append(choice)
        self.source.append(
            source.to(choice.device).long() if source is not None else torch.full_like(choice, -1)
        )

    @property
    def counts(self) -> dict[tuple[int, int], int]:
        if len(self.choice) == 0:  # a list before the cross-process sync, one tensor after it
            return {}
        pairs = torch.stack([dim_zero_cat(self.choice), dim_zero_cat(self.source)], 1)
        keys, n = pairs.cpu().unique(dim=0, return_counts=True)
        return {(int(k), int(s)): int(c) for (k, s), c in zip(keys.tolist(), n.tolist())}

    def compute(self) -> dict[str, float]:
        return self.figures(self.counts)

    def figures(self, counts: dict[tuple[int, int], int]) -> dict[str, float]:
        total = sum(counts.values())
        if not total:
            return {}
        per_code = torch.zeros(self.codes)
        for (k, _), n in counts.items():
            per_code[k] += n
        share = per_code / total
        entropy = -(share[share > 0] * share[share > 0].log()).sum()
        out = {
            "codebook_usage": float((per_code > 0).float().mean()),  # share of codewords chosen at all
            "codebook_perplexity": float(entropy.exp()),  # effective number of codewords in use
        }
        known = {key: n for key, n in counts.items() if key[1] >= 0}
        if known:
            best: dict[int, int] = {}
            by_source: dict[int, int] = {}
            for (k, s), n in known.items():
                best[k] = max(best.get(k, 0), n)
                by_source[s] = by_source.get(s, 0) + n
            n_known = sum(known.values())
            out["routing_purity"] = sum(best.values()) / n_known  # majority source per codeword
            out["routing_chance"] = max(by_source.values()) / n_known  # purity of routing all alike
        return out
