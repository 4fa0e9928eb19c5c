"""Run a frozen model on tracing pairs with a (soft or hard) component mask applied.

Sources (what a masked component is moved towards):
  counterfactual  the activations of the source prompt (same length as the base, token for token)
  noise           the activations of the base prompt with Gaussian noise added to the embeddings of
                  its noise span (every prompt token where a pair has none); one fixed draw per
                  pair, shared by its sequences, std = noise_scale × the std of the embedding
                  matrix (or an absolute noise_std)
  zero            zero ablation
  mean            mean ablation: each point's mean activation over the pair set's base runs
Source activations are recorded once per batch under no_grad.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import defaultdict
from collections.abc import Iterator

import torch

from catlit.hooks.points import attached, recorder
from catlit.tracing.components import ComponentSpace, mix, mix_pattern
from catlit.tracing.effects import candidate_scores, check, effect_loss, effect_of, kept_positions, pair_score
from catlit.tracing.pairs import POSITIONS, EncodedPair, PairBatch, collate

SOURCES = ("counterfactual", "noise", "zero", "mean")


class Tracer:
    def __init__(
        self,
        model,
        space: ComponentSpace,
        encoded: list[EncodedPair],
        pad_id: int,
        source: str = "counterfactual",
        positions: str = "all",
        effect: str = "odds",
        noise_scale: float = 3.0,
        seed: int = 0,
        noise_std: float | None = None,
        batch_size: int = 32,
    ):
        check(effect)
        if source not in SOURCES:
            raise ValueError(f"source={source!r}; choose from {SOURCES}")
        if positions not in POSITIONS:
            raise ValueError(f"positions={positions!r}; choose from {POSITIONS}")
        if source == "counterfactual" and any(e.source_seqs is None for e in encoded):
            raise ValueError("source=counterfactual needs a source prompt in every pair")
        if source == "mean" and "attn.hook_pattern" in space.points:
            raise ValueError(
                "source=mean is undefined for attention patterns (their length varies); use zero"
            )
        self.model, self.space, self.layout = model, space, space.layout
        self.encoded, self.pad_id = encoded, pad_id
        self.source, self.positions, self.effect = source, positions, effect
        self.noise_scale, self.noise_std, self.seed, self.batch_size = (
            noise_scale,
            noise_std,
            seed,
            batch_size,
        )
        self.device = next(model.parameters()).device
        self._base_scores: dict[int, torch.Tensor] = {}
        self._means: dict | None = None

    def swapped(self, kind: type[Tracer] | None = None) -> Tracer:
        """The same tracer with every pair's base and source prompts exchanged: the base runs the
        source's input and patches come from the base's (MIB's circuit evaluation runs the clean
        input and fixes what is outside the circuit at the corrupted input's values)."""
        if self.source != "counterfactual":
            raise ValueError(f"swapping base and source needs source=counterfactual (got {self.source})")
        pairs = [dataclasses.replace(e, seqs=e.source_seqs, source_seqs=e.seqs) for e in self.encoded]
        return (kind or Tracer)(
            self.model, self.space, pairs, self.pad_id, source=self.source, positions=self.positions,
            effect=self.effect, noise_scale=self.noise_scale, seed=self.seed, noise_std=self.noise_std,
            batch_size=self.batch_size,
        )  # fmt: skip

    def circuits(self) -> CircuitTracer:
        """This tracer in MIB's terms (`intervention=mib`): a mask marks the circuit that runs on the
        source input while everything outside it keeps its base-run value (`CircuitTracer`)."""
        return self.swapped(CircuitTracer)

    # ---- batches ------------------------------------------------------------------------------
    def batch(self, indices: list[int]) -> PairBatch:
        return collate(self.encoded, indices, self.pad_id).to(self.device)

    def batches(self, indices: list[int]) -> Iterator[PairBatch]:
        for start in range(0, len(indices), self.batch_size):
            yield self.batch(indices[start : start + self.batch_size])

    def _forward(self, batch: PairBatch, ids: torch.Tensor | None = None) -> torch.Tensor:
        keep = kept_positions(batch)
        out = self.model(
            input_ids=batch.input_ids if ids is None else ids,
            attention_mask=batch.attention_mask,
            logits_to_keep=keep,
            use_cache=False,
        )
        return candidate_scores(out.logits, batch, keep, self.effect)

    # ---- sources ------------------------------------------------------------------------------
    @torch.no_grad()
    def base_scores(self, batch: PairBatch) -> torch.Tensor:
        """Per-pair score of the unpatched base run (cached across epochs and evaluations)."""
        missing = [int(i) for i in batch.pair_index if int(i) not in self._base_scores]
        if missing:
            scores = pair_score(self._forward(batch), self.effect)
            for i, s in zip(batch.pair_index.tolist(), scores):
                self._base_scores[i] = s
        return torch.stack([self._base_scores[int(i)] for i in batch.pair_index])

    def forget_base_scores(self) -> None:
        self._base_scores.clear()

    @torch.no_grad()
    def source_cache(self, batch: PairBatch) -> dict:
        points, n_layers = self.space.points, self.layout.n_layers
        if self.source == "zero":
            return {
                (p, layer): torch.zeros((), device=self.device) for p in points for layer in range(n_layers)
            }
        if self.source == "mean":
            return self.means()
        fns, store = recorder(points, n_layers)
        if self.source == "counterfactual":
            with attached(self.layout, fns):
                self.model(input_ids=batch.source_ids, attention_mask=batch.attention_mask, use_cache=False)
            return store
        with attached(self.layout, fns), self._noised_embeddings(batch):
            self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
        return store

    def _noised_embeddings(self, batch: PairBatch):
        """Noise on the embeddings of each sequence's noise span: one draw per pair, shared by the
        pair's sequences (its candidates share the prompt, so their odds compare one corrupted run)."""
        embeddings = self.layout.base.get_input_embeddings()
        std = self.noise_std
        if std is None:
            std = float(embeddings.weight.float().std()) * self.noise_scale
        spans = batch.noised.clone()
        prompt = torch.arange(spans.shape[1], device=spans.device)[None] < batch.prompt_lens[:, None]
        spans = torch.where(spans.any(1, keepdim=True), spans, prompt)
        width = embeddings.weight.shape[1]
        lengths = batch.attention_mask.sum(1)
        noise = torch.zeros(*spans.shape, width)
        for p, pair in enumerate(batch.pair_index.tolist()):
            rows = (batch.seq_pair == p).nonzero()[:, 0].tolist()
            n = int(lengths[rows].max())  # the draw depends on the pair, not on the batch's padding
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + pair)
            draw = torch.randn(n, width, generator=g)
            for r in rows:
                noise[r, :n] = draw
        noise = noise.to(self.device) * std * spans[..., None]

        def add(module, args, output):
            return output + noise.to(output.dtype)

        return embeddings.register_forward_hook(add)  # a RemovableHandle is its own context manager

    @torch.no_grad()
    def means(self) -> dict:
        """Mean activation of each point over every valid position of the pair set's base runs."""
        if self._means is None:
            sums: dict = defaultdict(float)
            count = 0
            for batch in self.batches(list(range(len(self.encoded)))):
                fns, store = recorder(self.space.points, self.layout.n_layers)
                with attached(self.layout, fns):
                    self.model(
                        input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False
                    )
                valid = batch.attention_mask.bool()
                count += int(valid.sum())
                for key, value in store.items():
                    sums[key] = sums[key] + value[valid].float().sum(0)
            self._means = {k: (v / count)[None, None] for k, v in sums.items()}
        return self._means

    # ---- interventions ------------------------------------------------------------------------
    def patched(self, batch: PairBatch, mask: dict[str, torch.Tensor], cache: dict):
        """A context in which the model runs with `mask` applied to this batch (hooks removed on exit)."""
        positions = batch.positions(self.positions)
        prompt = batch.positions("context")
        fns = defaultdict(list)
        for group in self.space.groups:
            z_all = mask[group.kind]
            for layer in range(group.n_layers):
                z = z_all[layer]
                if not z.requires_grad and not bool(z.any()):
                    continue  # a hard mask that leaves this layer alone: no hook, no work
                source = cache[(group.point, layer)]
                if group.point == "attn.hook_pattern":  # the prompt's block: query and key both in it
                    fn = functools.partial(
                        mix_pattern, source=source, z=z, rows=positions & prompt, cols=prompt
                    )
                else:
                    fn = functools.partial(mix, source=source, z=z, positions=positions)
                fns[(group.point, layer)].append(fn)
        return attached(self.layout, fns)

    def delta(self, batch: PairBatch, mask: dict[str, torch.Tensor], cache: dict) -> torch.Tensor:
        """Per-pair Δ = s_int − s_base with `mask` applied (differentiable in the mask)."""
        with self.patched(batch, mask, cache):
            scores = pair_score(self._forward(batch), self.effect)
        return scores - self.base_scores(batch)

    def loss(self, batch, mask, cache, loss: str = "inverse", scale: float = 1.0):
        """(effect loss, per-pair Δ) with `mask` applied; `scale` is the loss's unit (see `loss_scale`)."""
        delta = self.delta(batch, mask, cache)
        return effect_loss(delta, self.effect, loss, scale), delta

    def prepare(self, indices: list[int]) -> list[tuple[PairBatch, dict]]:
        """Batches with their source activations, for evaluating many masks on the same pairs."""
        return [(b, self.source_cache(b)) for b in self.batches(indices)]

    @torch.no_grad()
    def mean_delta(self, mask: dict[str, torch.Tensor], prepared: list[tuple[PairBatch, dict]]) -> float:
        """Mean Δ (the score's change, before it becomes an effect) over the prepared pairs."""
        total, n = 0.0, 0
        for batch, cache in prepared:
            total += float(self.delta(batch, mask, cache).sum())
            n += batch.n_pairs
        return total / max(n, 1)

    @torch.no_grad()
    def evaluate(self, mask: dict[str, torch.Tensor], prepared: list[tuple[PairBatch, dict]]) -> float:
        """Mean effect over the prepared pairs with `mask` applied."""
        return mean_of(self.pair_effects(mask, prepared))

    @torch.no_grad()
    def pair_effects(self, mask: dict[str, torch.Tensor], prepared: list[tuple[PairBatch, dict]]) -> list:
        """Each prepared batch's per-pair effects with `mask` applied (`mean_of` gives `evaluate`)."""
        return [effect_of(self.delta(batch, mask, cache), self.effect) for batch, cache in prepared]


class CircuitTracer(Tracer):
    """MIB's intervention as a tracer (`intervention=mib`; made by `Tracer.circuits()`). It runs the
    source input (MIB's clean one) and a mask marks the circuit: every component outside it (1 − mask)
    takes its value from the base input (the corrupted one). Δ(mask) = s(circuit kept) − s(nothing
    kept): 0 for the empty circuit, the full effect for every component, differentiable in the mask.
    So every method that calls `delta`/`loss`/`evaluate` — PGB-CT's loss, greedy, AtP's gradients,
    the set scores — searches and scores circuits as MIB's faithfulness measures them:
    sufficiency(S) = E(S) / E(all) (with effect=logit_diff exactly MIB's, `measures.curves`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._nothing_kept: dict[int, torch.Tensor] = {}

    def delta(self, batch: PairBatch, mask: dict[str, torch.Tensor], cache: dict) -> torch.Tensor:
        outside = {kind: 1 - z for kind, z in mask.items()}
        return super().delta(batch, outside, cache) - self.nothing_kept(batch, cache)

    @torch.no_grad()
    def nothing_kept(self, batch: PairBatch, cache: dict) -> torch.Tensor:
        """Per-pair Δ of the source run with every component at its base-run value (cached per pair)."""
        if any(int(i) not in self._nothing_kept for i in batch.pair_index):
            every = super().delta(batch, self.space.full(1.0, device=self.device), cache)
            self._nothing_kept.update(zip(batch.pair_index.tolist(), every))
        return torch.stack([self._nothing_kept[int(i)] for i in batch.pair_index])


def mean_of(per_batch: list[torch.Tensor]) -> float:
    """The mean of per-batch effects, summed batch by batch in Python floats (as traces always have)."""
    total, n = 0.0, 0
    for values in per_batch:
        total += float(values.sum())
        n += len(values)
    return total / max(n, 1)
