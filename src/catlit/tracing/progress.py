"""A trace's finished methods, kept as they finish (`<run dir>/methods/<method>.pt`), so that
`resume=auto` continues an interrupted trace from the method it was running: on a real model one
method can take an hour (greedy on 270 heads), and a preempted or requeued trace would otherwise start
again from nothing.

Each file records the settings that decide what the method computes; a trace that resumes with other
settings is refused, naming them. What is computed after the methods (faithfulness `measures.*`, MIB
files `mib.*`), `device` and which methods run are not among them; `baselines.sizes` is (greedy stops at
the largest). A finished trace resumed with methods it lacks (`baselines.methods` grown) computes
those and keeps the others, read from here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from catlit.files import atomic_path
from catlit.tracing.baselines import BASELINES, Ranking
from catlit.tracing.search import SearchResult

FOLDER = "methods"
HELDOUT = "heldout.json"  # each scored set's effect on each held-out pair (run.write_heldout)
# top-level keys and dotted keys that change no method's result
# (default_model: how a missing model.path is trained; the trace records the model it used in model.path)
FREE = {"resume", "paths", "hydra", "measures", "mib", "baselines.methods", "device", "default_model"}
# settings added since methods were first kept, with the value every method saved before them computed with
ADDED = {"intervention": "catlit"}


def free(key: str) -> bool:
    """A dotted key that changes no method's result (it or a section above it is in FREE)."""
    return any(key == f or key.startswith(f + ".") for f in FREE)


def settings(cfg: DictConfig) -> dict:
    """The resolved settings that decide the methods' results (flattened to dotted keys)."""
    flat: dict = {}

    def walk(node, prefix: str) -> None:
        if prefix in FREE:
            return
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}.{key}" if prefix else str(key))
        else:
            flat[prefix] = node

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return flat


class MethodStore:
    def __init__(self, run_dir: Path, cfg: DictConfig):
        self.path = Path(run_dir) / FOLDER
        self.settings = settings(cfg)

    def holds_any(self) -> bool:
        return self.path.is_dir() and any(self.path.glob("*.pt"))

    def check(self) -> None:
        """Refuse saved methods that were computed with other settings than this run's."""
        for file in sorted(self.path.glob("*.pt")):
            saved = torch.load(file, weights_only=True)["settings"]
            saved = {k: v for k, v in {**ADDED, **saved}.items() if not free(k)}  # FREE may have grown
            changed = sorted(k for k in {*saved, *self.settings} if saved.get(k) != self.settings.get(k))
            if changed:
                shown = ", ".join(f"{k}: {saved.get(k)!r} -> {self.settings.get(k)!r}" for k in changed[:5])
                raise ValueError(
                    f"{file} was computed with other settings than this trace's ({shown}): resume with "
                    f"the settings it was run with, or trace into another hydra.run.dir"
                )

    def _load(self, name: str) -> dict | None:
        file = self.path / f"{name}.pt"
        if not file.exists():
            return None
        print(f"{name}: finished before, read from {file} (resume=auto)", flush=True)
        return torch.load(file, weights_only=True)

    def _save(self, name: str, fields: dict) -> None:
        with atomic_path(self.path / f"{name}.pt", ".pt") as tmp:
            torch.save({"settings": self.settings, "fields": fields}, tmp)

    def search(self) -> tuple[SearchResult, float] | None:
        """PGB-CT's search result and its peak memory, if it finished before."""
        saved = self._load("pgbct")
        if saved is None:
            return None
        f = saved["fields"]
        history = list(f["history"]) if f["history"] is not None else []
        result = SearchResult(
            f["z"], history, f["losses"], f["wall_s"], f["gain"], f["objective"], f["restarts"]
        )
        return result, f["peak_mb"]

    def save_search(self, result: SearchResult, peak_mb: float) -> None:
        fields = {
            "z": result.z.cpu(),
            "history": torch.stack(result.history).cpu() if result.history else None,
            "losses": list(result.losses),
            "wall_s": result.wall_s,
            "gain": None if result.gain is None else result.gain.cpu(),
            "objective": result.objective,
            "restarts": [tuple(r) for r in result.restarts],
            "peak_mb": peak_mb,
        }
        self._save("pgbct", fields)

    def with_saved(self, methods: list[str]) -> list[str]:
        """`methods`, then the baselines this trace finished before and no longer lists (in the registry's
        order): resuming with another `baselines.methods` adds methods, it never drops finished ones."""
        saved = {p.stem for p in self.path.glob("*.pt")} if self.path.is_dir() else set()
        return [*methods, *(m for m in BASELINES if m in saved and m not in methods)]

    def ranking(self, name: str) -> Ranking | None:
        saved = self._load(name)
        return None if saved is None else Ranking(**saved["fields"])

    def save_ranking(self, ranking: Ranking) -> Ranking:
        self._save(ranking.method, dataclasses.asdict(ranking))
        return ranking
