"""Where the answer rows' attention goes: its mass on each role of the prompt.

Examples whose `meta["roles"]` names what each phrase is (the STG family marks every feature as
`cause`, `spurious` or `unrelated`) are encoded once per role with that role's phrases as the causes
of the answer, so the causal-mask machinery itself finds the answer rows and the role's tokens. The
attention (eager, mean over layers and heads) of those rows is summed over each role's columns; what
is left of each row's unit mass went to the rest of the prompt (`prompt`).

    catlit-attention-mass outputs/multiruns/cat_ood --out docs/cat_ood \
        --where data.params.ood_shift=independent     (run or multirun dirs; runs grouped by method)
"""

from __future__ import annotations

import argparse
import csv
import json
from dataclasses import replace
from pathlib import Path

import torch
from omegaconf import OmegaConf

from catlit.data.encoding import ExampleEncoder
from catlit.data.example import CausalLink, Example
from catlit.hooks.eager import eager_attention
from catlit.plotting import pyplot
from catlit.plotting import save as save_figure
from catlit.stats import interval

REST = "prompt"


def role_blocks(encoder: ExampleEncoder, ex: Example) -> tuple[list[int], dict[str, list]]:
    """(token ids, {role: mask blocks}) with each role's phrases as the answer's causes."""
    roles: dict[str, str] = ex.meta.get("roles") or {}
    if not roles:
        raise ValueError(f"{ex.origin}: no meta['roles'] to attribute attention to")
    blocks, ids = {}, None
    for role in sorted(set(roles.values())):
        phrases = tuple(p for p, r in roles.items() if r == role)
        enc = encoder.encode(replace(ex, important=(CausalLink(ex.target.strip(), phrases),)))
        ids, blocks[role] = enc.input_ids, enc.blocks
    return ids, blocks


@torch.no_grad()
def attention_mass(model, tokenizer, examples: list[Example], batch_size: int = 32) -> dict[str, float]:
    """Mean over examples and answer rows of the attention mass on each role (and the rest)."""
    encoder = ExampleEncoder(tokenizer, max_length=10_000)
    totals: dict[str, float] = {}
    n_rows = 0
    for start in range(0, len(examples), batch_size):
        encoded = [role_blocks(encoder, ex) for ex in examples[start : start + batch_size]]
        t = max(len(ids) for ids, _ in encoded)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        input_ids = torch.tensor([ids + [pad] * (t - len(ids)) for ids, _ in encoded])
        mask = torch.tensor([[1] * len(ids) + [0] * (t - len(ids)) for ids, _ in encoded])
        device = next(model.parameters()).device
        attn = eager_attention(model, {"input_ids": input_ids.to(device), "attention_mask": mask.to(device)})
        for b, (_, blocks) in enumerate(encoded):
            rows = sorted({r for bl in blocks.values() for r0, r1, _, _ in bl for r in range(r0, r1)})
            if not rows:
                continue
            n_rows += len(rows)
            for role, bl in blocks.items():
                cols = torch.zeros(t, dtype=torch.bool)
                for _, _, c0, c1 in bl:
                    cols[c0:c1] = True
                mass = attn[b, rows][:, cols.to(attn.device)].sum().item()
                totals[role] = totals.get(role, 0.0) + mass
    if not n_rows:
        raise ValueError("no answer rows found in the examples")
    out = {role: total / n_rows for role, total in totals.items()}
    out[REST] = 1.0 - sum(out.values())
    return out


def run_dirs(paths: list[str]) -> list[Path]:
    """Run dirs (with model/, a full checkpoint or a LoRA adapter, and config.yaml) given directly or
    found under multirun dirs."""
    found: list[Path] = []
    for path in map(Path, paths):
        saved = [*path.rglob("model/config.json"), *path.rglob("model/adapter_config.json")]
        hits = [path] if (path / "model").is_dir() else sorted({p.parent for p in saved})
        if not hits:
            raise FileNotFoundError(f"{path}: no run with a saved model/ inside")
        found += [p.parent if p.name == "model" else p for p in hits]
    return found


def matches(run_dir: Path, where: list[str]) -> bool:
    """Whether the run's config has every `key=value` of `where`."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(run_dir / "config.yaml")
    for condition in where:
        key, _, value = condition.partition("=")
        if str(OmegaConf.select(cfg, key)) != value:
            return False
    return True


def measure_run(run_dir: Path, split: str, limit: int, untuned: bool = False) -> tuple[str, dict[str, float]]:
    """(the run's method label, attention mass on `split`'s first `limit` examples); with `untuned`,
    of the model the run started from instead (its `model.path`, or the embedded model's
    `base_model/`), labelled `untuned`."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from catlit.models.loading import load_local

    cfg = OmegaConf.load(run_dir / "config.yaml")
    datamodule = instantiate(cfg.data, fields=[], shuffle_seed=0)
    examples = datamodule.splits.test[split][:limit]
    start = OmegaConf.select(cfg, "model.path") or str(run_dir / "base_model")
    model, tokenizer = load_local(start if untuned else run_dir / "model")
    label = "untuned" if untuned else str(cfg.method.get("name", "method"))
    return label, attention_mass(model.eval(), tokenizer, examples)


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and the 95% half-width over runs (Student's t, as report.py; 0 for a single run)."""
    mean, _, half_width = interval(values)
    return mean, half_width


def plot(table: dict[str, dict[str, list[float]]], path: Path, split: str) -> None:
    plt = pyplot()

    labels = list(table)
    roles = sorted({r for by_role in table.values() for r in by_role}, key=lambda r: (r == REST, r))
    width = 0.8 / len(labels)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for k, label in enumerate(labels):
        stats = [mean_ci(table[label].get(role, [0.0])) for role in roles]
        xs = [i + (k - (len(labels) - 1) / 2) * width for i in range(len(roles))]
        ax.bar(xs, [m for m, _ in stats], width, yerr=[c for _, c in stats], label=label, capsize=3)
    ax.set_xticks(range(len(roles)), roles)
    ax.set_ylabel("attention mass of the answer rows")
    ax.set_title(
        f"Where the answer attends (test/{split}; mean over layers, heads, seeds; 95% CI)", fontsize=9
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run dirs or multirun dirs")
    parser.add_argument("--out", required=True, help="folder for attention_mass.csv / .png")
    parser.add_argument("--split", default="ood")
    parser.add_argument("--limit", type=int, default=200, help="examples per run")
    parser.add_argument("--where", action="append", default=[], help="keep runs whose config has key=value")
    parser.add_argument(
        "--untuned", action="store_true", help="also the model the runs started from, on each run's data"
    )
    args = parser.parse_args(argv)
    table: dict[str, dict[str, list[float]]] = {}
    runs = [r for r in run_dirs(args.runs) if matches(r, args.where)]
    if not runs:
        parser.error(f"no run under {args.runs} matches {args.where}")
    jobs = [(r, False) for r in runs]
    if args.untuned:  # once per distinct data seed: the same model on the same examples is one reading
        seeds = {}
        for r in runs:
            seeds.setdefault(str(OmegaConf.load(r / "config.yaml").data.get("seed")), r)
        jobs = [(r, True) for r in seeds.values()] + jobs
    for run_dir, untuned in jobs:
        label, mass = measure_run(run_dir, args.split, args.limit, untuned)
        for role, value in mass.items():
            table.setdefault(label, {}).setdefault(role, []).append(value)
        print(f"{run_dir}: {label} " + json.dumps({k: round(v, 3) for k, v in mass.items()}), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "attention_mass.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", "role", "runs", "mass", "ci95"])
        for label, by_role in table.items():
            for role, values in by_role.items():
                m, ci = mean_ci(values)
                writer.writerow([label, role, len(values), f"{m:.4f}", f"{ci:.4f}"])
    plot(table, out / "attention_mass.png", args.split)
    print(f"wrote {out / 'attention_mass.csv'} and {out / 'attention_mass.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
