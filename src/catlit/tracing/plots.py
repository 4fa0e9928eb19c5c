"""Figures of a trace: effect vs set size per method, the z map over layers x heads, z over training."""

from __future__ import annotations

from pathlib import Path

import torch

from catlit.plotting import pyplot
from catlit.plotting import save as save_figure


def series_style(index: int, name: str) -> dict:
    """Line style of the `index`-th series: ten colours, then the next line style, so a figure with
    many PGB-CT settings never draws two series alike; PGB-CT's lines drawn thicker."""
    dashes = ("-", "--", ":", "-.")[(index // 10) % 4]
    return {"color": f"C{index % 10}", "linestyle": dashes, "lw": 2.2 if name.startswith("pgbct") else 1.2}


def legend_beside(ax) -> None:
    """The legend right of the axes, the figure widened by its width: it never hides a curve and
    never squeezes the axes or runs off the figure, however many series there are."""
    legend = ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig = ax.figure
    fig.canvas.draw()
    width, height = fig.get_size_inches()
    box = legend.get_window_extent()
    fig.set_size_inches(width + box.width / fig.dpi + 0.1, max(height, box.height / fig.dpi + 0.6))


def effect_vs_size(curves: dict[str, list[tuple[int, float]]], path: Path, ylabel: str) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    sizes = [p[0] for points in curves.values() for p in points]
    for i, (method, points) in enumerate(curves.items()):
        points = sorted(points)
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", ms=4, label=method,
                **series_style(i, method))  # fmt: skip
    if sizes and max(sizes) > 20 * max(1, min(sizes)):
        ax.set_xscale("symlog", linthresh=1)  # sets of 2 and of all 270 on one axis
    ax.set_xlabel("number of components")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    legend_beside(ax)
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
