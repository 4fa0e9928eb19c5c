"""Mutual information between two modules' hidden states, as ICLM's independence penalty.

Each answer position's hidden vector becomes a categorical distribution over its features (a
softmax), so a batch of N positions gives marginals P_X, P_Y (means over N) and the joint
P_XY = mean_n x_n y_nᵀ, a C×C matrix computed as one matmul (never the N×C×C stack of outer
products, which at C = 4096 would not fit). Both are clamped at `eps` before the logs.

Directions:
  product_joint  KL(P_X ⊗ P_Y ‖ P_XY), ICLM's penalty as released (default)
  joint_product  KL(P_XY ‖ P_X ⊗ P_Y), the mutual information proper
`reduce_to=C` first keeps, in each of C equal groups of features, the one of largest magnitude
(sign kept), so the joint is C×C whatever the width.
"""

from __future__ import annotations

import torch

DIRECTIONS = ("product_joint", "joint_product")


def abs_max_reduce(h: torch.Tensor, size: int) -> torch.Tensor:
    """[N, D] -> [N, size]: the largest-magnitude feature of each of `size` groups of D / size."""
    n, d = h.shape
    if d % size:
        raise ValueError(f"mutual information: reduce_to={size} must divide the hidden size {d}")
    groups = h.reshape(n, size, d // size)
    pick = groups.abs().argmax(-1, keepdim=True)
    return groups.gather(-1, pick).squeeze(-1)


def topk_shared_reduce(x: torch.Tensor, y: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The release's reduction: per row, the size // 2 largest-magnitude features of x and the rest of
    y's, and both vectors gathered at those same indices ([N, D] -> [N, size] each)."""
    if size > x.shape[-1]:
        raise ValueError(f"mutual information: reduce_to={size} exceeds the hidden size {x.shape[-1]}")
    half = size // 2
    index = torch.cat([x.abs().topk(half, dim=-1).indices, y.abs().topk(size - half, dim=-1).indices], dim=-1)
    return x.gather(-1, index), y.gather(-1, index)


def feature_distributions(h: torch.Tensor, reduce_to: int | None = None) -> torch.Tensor:
    h = h.float()
    if reduce_to:
        h = abs_max_reduce(h, reduce_to)
    return torch.softmax(h, dim=-1)


def mutual_information(
    x: torch.Tensor,
    y: torch.Tensor,
    direction: str = "product_joint",
    eps: float = 1e-6,
    reduce_to: int | None = None,
    reduce: str = "groups",
) -> torch.Tensor:
    """MI-style divergence between hidden states x, y of shape [N, D] (rows paired by position).
    `reduce_to` with `reduce="groups"` keeps each vector's largest-magnitude feature of each of
    `reduce_to` groups; `reduce="topk_shared"` gathers both at the same top-k indices (the release)."""
    if direction not in DIRECTIONS:
        raise ValueError(f"mutual information direction={direction!r}; choose from {DIRECTIONS}")
    if x.shape != y.shape or x.dim() != 2:
        raise ValueError(
            "mutual information needs two [N, D] tensors of one shape, got "
            f"{tuple(x.shape)}, {tuple(y.shape)}"
        )
    if x.shape[0] == 0:
        return x.new_zeros((), dtype=torch.float32)
    if reduce_to and reduce == "topk_shared":
        x, y = topk_shared_reduce(x.float(), y.float(), reduce_to)
        reduce_to = None
    px_rows, py_rows = feature_distributions(x, reduce_to), feature_distributions(y, reduce_to)
    joint = (px_rows.T @ py_rows) / px_rows.shape[0]  # mean of outer products, as one matmul
    product = px_rows.mean(0)[:, None] * py_rows.mean(0)[None, :]
    joint, product = joint.clamp_min(eps), product.clamp_min(eps)
    if direction == "product_joint":
        return (product * (product.log() - joint.log())).sum()
    return (joint * (joint.log() - product.log())).sum()
