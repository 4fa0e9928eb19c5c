"""Independent Causal Language Models (ICLM): routed LoRA domain modules beside an invariant module.

One frozen base carries m + 2 named LoRA adapters: `router`, `invariant`, `domain_0 … domain_{m-1}`.
Per input, the router (`router`) picks one domain module; the final prediction comes
from the invariant module's and the routed module's last hidden states (`aggregation`):
  norm_hidden_states  concat(h_inv, Σ_k w_k h_k) -> BatchNorm(2D) -> a new Linear(2D -> V) (default)
  hidden_states       the same without the norm
(`head=projected` replaces the new 2D×V head, at a real vocabulary the largest thing ICLM trains,
by a Linear(2D -> D), initialised to the mean of the two states, before the base's frozen head)
  logits              the sum of the two modules' own logits (the base's head on each state)
  probas              the log of the mean of their probabilities
  no_invariant        the routed module's own logits alone (the ablation; no invariant module runs)
Loss = CE(final) + λ_route·VQ + λ_MI·Σ_k MI(h_inv; h_k) + λ_inv·CE(invariant's own logits)
     + λ_dom·CE(routed module's own logits), MI on the answer positions
(`mutual_information`).

`mode=dense` runs every domain module on every input (an unselected module then learns only from
the MI term); `mode=sparse` runs each module on the inputs routed to it. Routing reads the prompt's
tokens without padding by default; `route_on=sequence` (training reads the answer too, generation
the prompt) and `mask_padding=false` give the behaviour of the authors' release. Generation routes
once on the prompt and keeps that choice for every new token.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from catlit.data.encoding import IGNORE_INDEX
from catlit.methods.base import Capabilities, Method, MethodOutput
from catlit.methods.iclm.config import RULES, ICLMConfig
from catlit.methods.iclm.mutual_information import mutual_information
from catlit.methods.iclm.positions import answer_positions, next_tokens, position_ids, routed_tokens
from catlit.methods.iclm.router import Route, RoutingCounts, VQRouter
from catlit.models.lora import active_adapter, add_named_adapters, parameters_per_rank


@dataclass
class ICLMOutput(MethodOutput):
    route: Route | None = None  # the routing of this pass


class IndependentCausalLM(Method, nn.Module):
    name = "iclm"
    capabilities = Capabilities(
        batch_fields=frozenset({"source", "prompt_positions"}),
        eval_batch_fields=frozenset({"source", "prompt_positions"}),
        progress_bar=("vq",),
        headline=("mode",),
        attention_probe=False,  # predictions combine several adapters' passes
        config_rules=RULES,
    )

    def __init__(self, **settings):
        nn.Module.__init__(self)
        self.config = ICLMConfig(**settings)
        Method.__init__(self, self.config.name)
        self.domains = self.config.domain_names
        self.router: VQRouter | None = None
        self.norm: nn.Module | None = None
        self.head: nn.Linear | None = None
        self.head_type = self.config.head  # `auto` resolves in build()
        self.counts = nn.ModuleDict()  # per stage ("train", "val/iid", ...): RoutingCounts
        self._adapter_weights: dict[str, list] = {}

    @property
    def lambdas(self) -> dict[str, float]:
        c = self.config
        return {"route": c.lambda_route, "mi": c.lambda_mi, "inv": c.lambda_inv, "dom": c.lambda_dom}

    @property
    def mi(self) -> dict:
        c = self.config
        return {
            "direction": c.mi_direction,
            "reduce_to": c.mi_reduce_to,
            "eps": c.mi_eps,
            "reduce": c.mi_reduce,
        }

    def trainable_parameters(self, model) -> int:
        """How many parameters this ICLM would train on `model` (before `build`): its adapters, the
        router, the aggregation norm and head."""
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        hidden = base.get_output_embeddings().in_features
        vocab = base.get_output_embeddings().out_features
        c = self.config
        adapters = len(self.adapter_names) * c.adapter.r * parameters_per_rank(model, c.adapter)
        router = hidden * c.latent + c.latent + 2 * c.latent + len(self.domains) * c.latent
        head_kind = self.head_kind(model)
        norm = {"norm_hidden_states": 2 * 2 * hidden, "norm_logits": 2 * vocab}.get(c.aggregation, 0)
        head = 0
        if c.aggregation in ("norm_hidden_states", "hidden_states"):
            head = 2 * hidden * (vocab if head_kind == "full" else hidden)
            norm = 0 if head_kind == "base" else norm
        return adapters + router + norm + head

    def head_kind(self, model) -> str:
        """`head=auto`: `base` on a pretrained checkpoint (its own head reads the modules' mean state,
        so the untrained ICLM predicts exactly what the checkpoint does), `full` on catlit's random-init
        embedded model (nothing to keep)."""
        if self.config.head != "auto":
            return self.config.head
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        return "base" if getattr(base, "name_or_path", "") else "full"

    # ---- building ------------------------------------------------------------------------------
    @property
    def builds_adapters(self) -> bool:
        return True

    @property
    def adapter_names(self) -> list[str]:
        return self.config.adapter_names

    def build(self, model, tokenizer=None):
        """m + 2 LoRA adapters on the one frozen base, then the router and the aggregation head."""
        c = self.config
        self.head_type = self.head_kind(model)
        model = add_named_adapters(model, self.adapter_names, c.adapter, owner=self.name)
        base = model.get_base_model()
        hidden = base.get_output_embeddings().in_features
        vocab = base.get_output_embeddings().out_features
        self.router = VQRouter(hidden, len(self.domains), c.latent, c.beta, c.restart_after)
        if c.aggregation == "norm_logits":  # the release: a BatchNorm over the vocabulary
            self.norm = nn.BatchNorm1d(vocab)
        if c.aggregation in ("norm_hidden_states", "hidden_states"):
            normed = c.aggregation == "norm_hidden_states" and self.head_type != "base"
            self.norm = nn.BatchNorm1d(2 * hidden) if normed else nn.Identity()
            if self.head_type == "full":
                self.head = nn.Linear(2 * hidden, vocab, bias=False)
            else:  # 2D -> D (the modules' mean at first), then the base's own (frozen) output head
                self.head = nn.Linear(2 * hidden, hidden, bias=False)
                with torch.no_grad():
                    self.head.weight.copy_(torch.cat([torch.eye(hidden), torch.eye(hidden)], dim=1) / 2)
        self.to(device=next(model.parameters()).device)
        # a plain dict, so the model's weights do not become this module's submodule
        self._adapter_weights = {
            name: [p for n, p in model.named_parameters() if f".{name}." in n] for name in self.adapter_names
        }
        return model

    # ---- one module's pass ---------------------------------------------------------------------
    # Heads run only where a prediction is needed (`sel`: the answer positions, or the last one while
    # decoding): at a real vocabulary, [B, T, V] logits per module would dominate the memory.
    def _hidden(self, model, adapter: str, ids, mask) -> torch.Tensor:
        """[B, T, D] last hidden state with only `adapter` applied."""
        with active_adapter(model, adapter):
            decoder = model.get_base_model().get_decoder()
            return decoder(
                input_ids=ids, attention_mask=mask, position_ids=position_ids(mask)
            ).last_hidden_state

    def _run(self, model, adapter: str, ids, mask, sel) -> tuple[torch.Tensor, torch.Tensor]:
        """(hidden [B, T, D], the module's own logits [N, V] at the selected positions)."""
        hidden = self._hidden(model, adapter, ids, mask)
        return hidden, model.get_base_model().get_output_embeddings()(hidden[sel])

    def route(self, model, ids, mask, route_mask) -> Route:
        return self.router(self._hidden(model, "router", ids, mask), route_mask)

    def _route_mask(self, batch: dict, training: bool) -> torch.Tensor:
        """A training-view batch's routed tokens: the prompt's, or the whole sequence's when training
        with route_on=sequence."""
        prompt = batch["prompt_positions"] if self.config.route_on == "prompt" or not training else None
        return routed_tokens(batch["attention_mask"], self.config.mask_padding, prompt)

    def _domains(self, model, ids, mask, sel, route: Route, only: int | None = None, dense: bool = False):
        """Per-domain states (dense: every input; sparse: the routed ones) as
        {k: (rows, index into the N selected positions, hidden [R, T, D], logits [N_k, V])}, and the
        weighted sums h_dom [B, T, D], logits_dom [N, V]."""
        row_of = sel.nonzero()[:, 0]  # the input each selected position belongs to
        states = {}
        h_dom = logits_dom = None
        for k, name in enumerate(self.domains):
            if only is not None and k != only:
                continue
            rows = torch.arange(ids.shape[0], device=ids.device)
            if self.config.mode == "sparse" and only is None and not dense:
                rows = (route.choice == k).nonzero()[:, 0]
                if rows.numel() == 0:
                    continue
            h, logits = self._run(model, name, ids[rows], mask[rows], sel[rows])
            index = torch.isin(row_of, rows).nonzero()[:, 0]  # same row-major order as sel[rows]
            states[k] = (rows, index, h, logits)
            # sums in float32: under mixed precision the modules' states and logits may be half
            w_rows = route.weights[rows, k].float() if only is None else h.new_ones(rows.shape[0]).float()
            if h_dom is None:
                h_dom = h.new_zeros(ids.shape[0], *h.shape[1:], dtype=torch.float32)
                logits_dom = logits.new_zeros(row_of.shape[0], logits.shape[-1], dtype=torch.float32)
            h_dom = h_dom.index_add(0, rows, w_rows[:, None, None] * h.float())
            logits_dom = logits_dom.index_add(
                0, index, w_rows[torch.searchsorted(rows, row_of[index])][:, None] * logits.float()
            )
        return states, h_dom, logits_dom

    def _counted(self, mask: torch.Tensor) -> torch.Tensor:
        """The positions a BatchNorm's batch statistics cover: the real tokens, or every position
        (padding too) with norm_padding=true, as released."""
        return torch.ones_like(mask, dtype=torch.bool) if self.config.norm_padding else mask.bool()

    def _normed(self, values: torch.Tensor, mask, sel) -> torch.Tensor:
        """BatchNorm of `values` [B, T, C] read at `sel`, with training statistics over `_counted`."""
        if isinstance(self.norm, nn.BatchNorm1d) and self.norm.training:
            counted = self._counted(mask)
            return self.norm(values[counted])[sel[counted]]
        return self.norm(values[sel])

    def _aggregate(self, model, h_inv, h_dom, logits_inv, logits_dom, mask, sel) -> torch.Tensor:
        aggregation = self.config.aggregation
        if aggregation == "no_invariant":
            return logits_dom
        if aggregation == "logits":
            return logits_inv + logits_dom
        if aggregation == "probas":
            return torch.log((logits_inv.float().softmax(-1) + logits_dom.float().softmax(-1)) / 2)
        if aggregation == "shifted_probas":  # the release: weights 1/2, probabilities shifted by (1 - w)/2
            pair = (logits_inv.float(), logits_dom.float())
            return sum(
                (0.25 + 0.5 * lg.softmax(-1)).clamp(1e-6, 1 - 1e-6).log() + lg.logsumexp(-1, True)
                for lg in pair
            )
        if aggregation == "norm_logits":  # the release: both modules' logits normalised over the vocabulary
            head = model.get_base_model().get_output_embeddings()
            full = torch.cat([head(h_inv), head(h_dom.to(h_inv.dtype))]).float()  # [2B, T, V], every position
            inv, dom = self._normed(full, torch.cat([mask, mask]), torch.cat([sel, sel])).chunk(2)
            return 0.5 * inv + 0.5 * dom
        joint = torch.cat([h_inv, h_dom], dim=-1).float()
        normed = self._normed(joint, mask, sel)
        if self.head_type != "full":
            output = model.get_base_model().get_output_embeddings()
            return output(self.head(normed).to(output.weight.dtype))
        return self.head(normed)

    def _predict(self, model, ids, mask, sel, route: Route, stage: str):
        """Final logits [N, V] at `sel` (and the pieces the losses need) for `stage`'s module."""
        module = "aggregate" if stage == "train" else self.config.eval_module
        if module == "invariant":
            return self._run(model, "invariant", ids, mask, sel)[1], {}
        if module.startswith("domain_"):
            return self._domains(model, ids, mask, sel, route, only=self.domains.index(module))[2], {}
        if module == "domains_mean":  # every domain module on every input, their logits averaged
            uniform = torch.full_like(route.weights, 1 / len(self.domains))
            return self._domains(
                model,
                ids,
                mask,
                sel,
                Route(route.choice, uniform, route.distances, route.vq_loss),
                dense=True,
            )[2], {}
        states, h_dom, logits_dom = self._domains(model, ids, mask, sel, route)
        if module == "routed" or self.config.aggregation == "no_invariant":
            return logits_dom, {"states": states, "logits_dom": logits_dom, "sel": sel}
        h_inv, logits_inv = self._run(model, "invariant", ids, mask, sel)
        final = self._aggregate(model, h_inv, h_dom, logits_inv, logits_dom, mask, sel)
        parts = {
            "states": states,
            "h_inv": h_inv,
            "logits_inv": logits_inv,
            "logits_dom": logits_dom,
            "sel": sel,
        }
        return final, parts

    # ---- the method core ------------------------------------------------------------------------
    def forward(self, model, batch: dict, stage: str) -> ICLMOutput:
        training = stage == "train"
        ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
        route = self.route(model, ids, mask, self._route_mask(batch, training))
        self._count(stage, route, batch)
        sel = answer_positions(labels)
        logits, parts = self._predict(model, ids, mask, sel, route, stage)
        targets = next_tokens(labels, sel)
        loss = F.cross_entropy(logits.float(), targets)
        parts = {**parts, "targets": targets} if training else {}
        return ICLMOutput(loss=loss, logits=logits, parts=parts, route=route)

    def losses(self, output: ICLMOutput, batch: dict, progress: float, epoch: int):
        pending, route = output.parts, output.route
        targets = pending["targets"]
        terms = {"route": self.lambdas["route"] * route.vq_loss}
        logs: dict[str, float | torch.Tensor] = {"vq": route.vq_loss.detach()}
        ce_dom = F.cross_entropy(pending["logits_dom"].float(), targets)
        terms["dom"] = self.lambdas["dom"] * ce_dom
        logs["ce_dom"] = ce_dom.detach()
        if "h_inv" in pending:
            ce_inv = F.cross_entropy(pending["logits_inv"].float(), targets)
            terms["inv"] = self.lambdas["inv"] * ce_inv
            logs["ce_inv"] = ce_inv.detach()
            mi_total = route.vq_loss.new_zeros(())
            # the positions that predict the answer, or the answer tokens' own (mi_positions=answer)
            at = (
                pending["sel"]
                if self.config.mi_positions == "predicting"
                else batch["labels"] != IGNORE_INDEX
            )
            for k, (rows, _, h, _) in pending["states"].items():
                mi = mutual_information(pending["h_inv"][rows][at[rows]], h[at[rows]], **self.mi)
                mi_total = mi_total + mi
                logs[f"mi_{k}"] = mi.detach()
            terms["mi"] = self.lambdas["mi"] * mi_total
        if self.config.mode == "sparse":  # a module no input chose still takes part (DDP waits for all)
            unused = [n for k, n in enumerate(self.domains) if k not in pending["states"]]
            if unused:
                terms["unused"] = sum(p.sum() * 0.0 for p in self._adapter_params(unused))
        logs["codebook_used"] = float(route.weights.sum(0).gt(0).float().mean())
        if self.config.restart_after:
            logs["codes_restarted"] = float(self.router.restarted)
        return terms, logs

    def _adapter_params(self, names: list[str]):
        return [p for name in names for p in self._adapter_weights[name]]

    @torch.no_grad()
    def generate(self, model, batch: dict, stage: str, max_new_tokens: int, pad_token_id, eos_token_id, **_):
        """Greedy decoding; the route is chosen once on the prompt and kept for every new token."""
        ids, mask = batch["prompt_ids"], batch["prompt_mask"]
        route = self.route(model, ids, mask, routed_tokens(mask, self.config.mask_padding))  # prompts
        done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
        for _ in range(max_new_tokens):
            last = torch.zeros_like(mask, dtype=torch.bool)
            last[:, -1] = True  # left padding: every row's newest token is in the last column
            logits, _parts = self._predict(model, ids, mask, last, route, stage)
            token = logits.argmax(-1)
            token = torch.where(done, torch.full_like(token, pad_token_id), token)
            ids = torch.cat([ids, token[:, None]], dim=1)
            mask = torch.cat([mask, (~done).long()[:, None]], dim=1)
            done |= token == eos_token_id
            if done.all():
                break
        return ids

    # ---- routing figures -----------------------------------------------------------------------
    def _count(self, stage: str, route: Route, batch: dict) -> None:
        key = "stage_" + stage.replace("/", "__")  # a module name holds no "/" (nor nn.Module's own names)
        if key not in self.counts:
            self.counts[key] = RoutingCounts(len(self.domains)).to(route.choice.device)
        self.counts[key].update(route.choice, batch.get("source"))

    def epoch_metrics(self, stage: str) -> dict[str, float]:
        """Routing figures per split of `stage`, over every process's inputs (a collective call)."""
        out = {}
        for key in sorted(self.counts):
            split = key.removeprefix("stage_").replace("__", "/")
            if split.split("/")[0] != stage:
                continue
            figures = self.counts[key].compute()
            self.counts[key].reset()
            out.update({f"{split}/{name}": value for name, value in figures.items()})
        return out

    # ---- saving and loading --------------------------------------------------------------------
    def save_pretrained(self, directory, model) -> None:
        """Adapters (each in its own folder, written by peft), plus iclm.pt and iclm.json."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        torch.save(nn.Module.state_dict(self), directory / "iclm.pt")
        settings = {**self.config.to_dict(), "head": self.head_type}  # as built: `auto` resolved
        (directory / "iclm.json").write_text(json.dumps(settings, indent=2))

    @classmethod
    def from_pretrained(cls, directory, base_model, **overrides):
        """(method, peft model) from a folder `save_pretrained` and peft wrote, on `base_model`."""
        from peft.utils import load_peft_weights, set_peft_model_state_dict

        directory = Path(directory)
        config = json.loads((directory / "iclm.json").read_text())
        method = cls(**{**config, **overrides})
        model = method.build(base_model)
        for name in method.adapter_names:
            set_peft_model_state_dict(model, load_peft_weights(str(directory / name)), adapter_name=name)
        # weights only, whatever the environment says: a saved model runs no code when it is read
        state = torch.load(
            directory / "iclm.pt", map_location=next(model.parameters()).device, weights_only=True
        )
        nn.Module.load_state_dict(method, state)
        return method, model
