"""Figures of a trace: effect vs set size per method, the z map over layers x heads, z over training."""

from __future__ import annotations

from pathlib import Path

import torch

from catlit.plotting import pyplot
from catlit.plotting import save as save_figure


def effect_vs_size(curves: dict[str, list[tuple[int, float]]], path: Path, ylabel: str) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for method, points in curves.items():
        points = sorted(points)
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=method)
    ax.set_xlabel("number of components")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def z_map(z: torch.Tensor, path: Path, title: str) -> None:
    """z of one component kind as a [layers, components per layer] heat map."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(min(2 + 0.35 * z.shape[1], 12), 1.5 + 0.35 * z.shape[0]))
    im = ax.imshow(z.numpy(), vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xlabel("head" if z.shape[1] < 64 else "dimension")
    ax.set_ylabel("layer")
    ax.set_title(title)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def z_history(history: list[torch.Tensor], names: list[str], selected: list[int], path: Path) -> None:
    """z per epoch: the selected components named, every other one as a thin grey line."""
    plt = pyplot()
    stacked = torch.stack(history).numpy()  # [epochs, components]
    epochs = range(1, len(history) + 1)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    chosen = set(selected)
    others = [i for i in range(stacked.shape[1]) if i not in chosen][:500]
    for i in others:
        ax.plot(epochs, stacked[:, i], color="0.75", linewidth=0.5)
    for i in selected[:10]:
        ax.plot(epochs, stacked[:, i], linewidth=1.5, label=names[i])
    ax.set_xlabel("epoch")
    ax.set_ylabel("z")
    ax.set_ylim(-0.02, 1.02)
    if selected:
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def faithfulness(measured: dict, path: Path) -> None:
    """Sufficiency and necessity against set size, or MIB's fraction of the components (log scale),
    one line per method."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharex=True)
    mib = measured.get("grid") == "mib"
    for method, entry in measured["methods"].items():
        for ax, key in zip(axes, ("sufficiency", "necessity")):
            xs = entry["fractions"] if mib else entry["sizes"]
            ax.plot(xs, entry[key], marker="o", markersize=3, label=method)
    for ax, key in zip(axes, ("sufficiency: E(set) / E(all)", "necessity: E(all but set) / E(all)")):
        ax.set_xscale("log")
        ax.set_xlabel("fraction of the components (MIB's grid)" if mib else "set size")
        ax.set_ylabel(key)
        ax.axhline(1.0, color="0.6", linewidth=0.8)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"faithfulness on the {measured['split']} pairs")
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
