"""Independent Causal Language Models (ICLM): routed LoRA domain modules beside an invariant module.

One frozen base carries m + 2 named LoRA adapters: `router`, `invariant`, `domain_0 … domain_{m-1}`.
Per input, the router (catlit.methods.router) picks one domain module; the final prediction comes
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
(catlit.methods.mutual_information).

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
from catlit.methods.base import Method
from catlit.methods.mutual_information import DIRECTIONS, mutual_information
from catlit.methods.router import Route, RoutingCounts, VQRouter
from catlit.models.adapters import active_adapter, add_named_adapters

AGGREGATIONS = ("norm_hidden_states", "hidden_states", "logits", "probas", "no_invariant")
MODES = ("dense", "sparse")
ROUTE_ON = ("prompt", "sequence")
HEADS = ("full", "projected")
DEFAULT_ADAPTER = {
    "r": 8,
    "alpha": 16,
    "dropout": 0.05,
    "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
}


@dataclass
class ICLMOutput:
    loss: torch.Tensor
    logits: torch.Tensor  # [N, V] at the selected positions (the answer's, or the last in decoding)
    route: Route | None = None


def answer_positions(labels: torch.Tensor) -> torch.Tensor:
    """[B, T] bool: the positions whose next token is an answer token."""
    positions = torch.zeros_like(labels, dtype=torch.bool)
    positions[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return positions


def next_tokens(labels: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """[N] the token each selected position predicts."""
    return labels[:, 1:][positions[:, :-1]]


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, so left- and right-padded rows agree."""
    return (mask.long().cumsum(-1) - 1).clamp_min(0)


class IndependentCausalLM(Method, nn.Module):
    name = "iclm"
    batch_fields = frozenset({"source", "prompt_positions"})
    single_pass = False

    def __init__(
        self,
        name: str | None = None,
        domains: int = 2,
        adapter: dict | None = None,
        latent: int = 64,
        beta: float = 0.25,
        aggregation: str = "norm_hidden_states",
        mode: str = "dense",
        route_on: str = "prompt",
        mask_padding: bool = True,
        lambda_route: float = 0.1,
        lambda_mi: float = 0.01,
        lambda_inv: float = 0.1,
        lambda_dom: float = 0.1,
        mi_direction: str = "product_joint",
        mi_reduce_to: int | None = None,
        mi_eps: float = 1e-6,
        eval_module: str = "aggregate",
        head: str = "full",
    ):
        nn.Module.__init__(self)
        Method.__init__(self, name)
        for key, value, allowed in (
            ("aggregation", aggregation, AGGREGATIONS),
            ("mode", mode, MODES),
            ("route_on", route_on, ROUTE_ON),
            ("mi_direction", mi_direction, DIRECTIONS),
            ("head", head, HEADS),
        ):
            if value not in allowed:
                raise ValueError(f"method.{key}={value!r}; choose from {allowed}")
        if domains < 1:
            raise ValueError(f"method.domains must be >= 1, got {domains}")
        self.domains = [f"domain_{k}" for k in range(domains)]
        modules = ("aggregate", "invariant", "routed", *self.domains)
        if eval_module not in modules:
            raise ValueError(f"method.eval_module={eval_module!r}; choose from {modules}")
        if eval_module == "invariant" and aggregation == "no_invariant":
            raise ValueError("method.eval_module=invariant: aggregation=no_invariant has no invariant module")
        self.adapter = {**DEFAULT_ADAPTER, **dict(adapter or {})}
        if self.adapter["target_modules"] is not None:  # a Hydra ListConfig is not JSON
            self.adapter["target_modules"] = list(self.adapter["target_modules"])
        self.latent, self.beta = latent, beta
        self.aggregation, self.mode = aggregation, mode
        self.route_on, self.mask_padding = route_on, mask_padding
        self.lambdas = {"route": lambda_route, "mi": lambda_mi, "inv": lambda_inv, "dom": lambda_dom}
        self.mi = {"direction": mi_direction, "reduce_to": mi_reduce_to, "eps": mi_eps}
        self.eval_module, self.head_kind = eval_module, head
        self.config = {
            "domains": domains, "adapter": self.adapter, "latent": latent, "beta": beta,
            "aggregation": aggregation, "mode": mode, "route_on": route_on, "mask_padding": mask_padding,
            "lambda_route": lambda_route, "lambda_mi": lambda_mi, "lambda_inv": lambda_inv,
            "lambda_dom": lambda_dom, "mi_direction": mi_direction, "mi_reduce_to": mi_reduce_to,
            "mi_eps": mi_eps, "head": head, "name": self.name,
        }  # fmt: skip
        self.router: VQRouter | None = None
        self.norm: nn.Module | None = None
        self.head: nn.Linear | None = None
        self._pending: dict | None = None  # what the last training forward left for `losses`
        self._counts: dict[str, RoutingCounts] = {}
        self._adapter_weights: dict[str, list] = {}

    # ---- building ------------------------------------------------------------------------------
    @property
    def adapter_names(self) -> list[str]:
        invariant = [] if self.aggregation == "no_invariant" else ["invariant"]
        return ["router", *invariant, *self.domains]

    def build(self, model, tokenizer=None):
        """m + 2 LoRA adapters on the one frozen base, then the router and the aggregation head."""
        model = add_named_adapters(model, self.adapter_names, owner=self.name, **self.adapter)
        base = model.get_base_model()
        hidden = base.get_output_embeddings().in_features
        vocab = base.get_output_embeddings().out_features
        self.router = VQRouter(hidden, len(self.domains), self.latent, self.beta)
        if self.aggregation in ("norm_hidden_states", "hidden_states"):
            self.norm = (
                nn.BatchNorm1d(2 * hidden) if self.aggregation == "norm_hidden_states" else nn.Identity()
            )
            if self.head_kind == "full":
                self.head = nn.Linear(2 * hidden, vocab, bias=False)
            else:  # 2D -> D, then the base's own (frozen) output head
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

    def _routed_tokens(self, mask: torch.Tensor, prompt: torch.Tensor | None = None) -> torch.Tensor:
        """The tokens routing reads: the real ones (every one with mask_padding=false), and of those
        only the `prompt` positions where given."""
        routed = mask.bool() if self.mask_padding else torch.ones_like(mask, dtype=torch.bool)
        return routed if prompt is None else routed & prompt

    def _route_mask(self, batch: dict, training: bool) -> torch.Tensor:
        """A training-view batch's routed tokens: the prompt's, or the whole sequence's when training
        with route_on=sequence."""
        prompt = batch["prompt_positions"] if self.route_on == "prompt" or not training else None
        return self._routed_tokens(batch["attention_mask"], prompt)

    def _domains(self, model, ids, mask, sel, route: Route, only: int | None = None):
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
            if self.mode == "sparse" and only is None:
                rows = (route.choice == k).nonzero()[:, 0]
                if rows.numel() == 0:
                    continue
            h, logits = self._run(model, name, ids[rows], mask[rows], sel[rows])
            index = torch.isin(row_of, rows).nonzero()[:, 0]  # same row-major order as sel[rows]
            states[k] = (rows, index, h, logits)
            w_rows = route.weights[rows, k].to(h.dtype) if only is None else h.new_ones(rows.shape[0])
            if h_dom is None:
                h_dom = h.new_zeros(ids.shape[0], *h.shape[1:])
                logits_dom = logits.new_zeros(row_of.shape[0], logits.shape[-1])
            h_dom = h_dom.index_add(0, rows, w_rows[:, None, None] * h)
            logits_dom = logits_dom.index_add(
                0, index, w_rows[torch.searchsorted(rows, row_of[index])][:, None] * logits
            )
        return states, h_dom, logits_dom

    def _aggregate(self, model, h_inv, h_dom, logits_inv, logits_dom, mask, sel) -> torch.Tensor:
        if self.aggregation == "no_invariant":
            return logits_dom
        if self.aggregation == "logits":
            return logits_inv + logits_dom
        if self.aggregation == "probas":
            return torch.log((logits_inv.float().softmax(-1) + logits_dom.float().softmax(-1)) / 2)
        joint = torch.cat([h_inv, h_dom], dim=-1).float()
        if isinstance(self.norm, nn.BatchNorm1d) and self.norm.training:
            # batch statistics over every real token, as the released norm; the head only where needed
            mask = mask.bool()
            normed = self.norm(joint[mask])[sel[mask]]
        else:
            normed = self.norm(joint[sel])
        if self.head_kind == "projected":
            output = model.get_base_model().get_output_embeddings()
            return output(self.head(normed).to(output.weight.dtype))
        return self.head(normed)

    def _predict(self, model, ids, mask, sel, route: Route, stage: str):
        """Final logits [N, V] at `sel` (and the pieces the losses need) for `stage`'s module."""
        module = "aggregate" if stage == "train" else self.eval_module
        if module == "invariant":
            return self._run(model, "invariant", ids, mask, sel)[1], {}
        if module.startswith("domain_"):
            return self._domains(model, ids, mask, sel, route, only=self.domains.index(module))[2], {}
        states, h_dom, logits_dom = self._domains(model, ids, mask, sel, route)
        if module == "routed" or self.aggregation == "no_invariant":
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

    # ---- the method contract -------------------------------------------------------------------
    def forward(self, model, batch: dict, stage: str) -> ICLMOutput:
        training = stage == "train"
        ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
        route = self.route(model, ids, mask, self._route_mask(batch, training))
        self._count(stage, route, batch)
        sel = answer_positions(labels)
        logits, parts = self._predict(model, ids, mask, sel, route, stage)
        targets = next_tokens(labels, sel)
        loss = F.cross_entropy(logits.float(), targets)
        if training:
            self._pending = {**parts, "route": route, "targets": targets}
        return ICLMOutput(loss=loss, logits=logits, route=route)

    def losses(self, outputs, batch: dict, progress: float, epoch: int):
        pending, self._pending = self._pending, None
        targets, route = pending["targets"], pending["route"]
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
            sel = pending["sel"]
            for k, (rows, _, h, _) in pending["states"].items():  # on the answer positions
                mi = mutual_information(pending["h_inv"][rows][sel[rows]], h[sel[rows]], **self.mi)
                mi_total = mi_total + mi
                logs[f"mi_{k}"] = mi.detach()
            terms["mi"] = self.lambdas["mi"] * mi_total
        if self.mode == "sparse":  # a module no input chose still takes part (DDP waits for every gradient)
            unused = [n for k, n in enumerate(self.domains) if k not in pending["states"]]
            if unused:
                terms["unused"] = sum(p.sum() * 0.0 for p in self._adapter_params(unused))
        logs["codebook_used"] = float(route.weights.sum(0).gt(0).float().mean())
        return terms, logs

    def _adapter_params(self, names: list[str]):
        return [p for name in names for p in self._adapter_weights[name]]

    @torch.no_grad()
    def generate(self, model, batch: dict, stage: str, max_new_tokens: int, pad_token_id, eos_token_id, **_):
        """Greedy decoding; the route is chosen once on the prompt and kept for every new token."""
        ids, mask = batch["prompt_ids"], batch["prompt_mask"]
        route = self.route(model, ids, mask, self._routed_tokens(mask))  # a batch of prompts
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
        counts = self._counts.setdefault(stage, RoutingCounts(len(self.domains)))
        counts.update(route.choice.detach().cpu(), batch["source"].cpu() if "source" in batch else None)

    def epoch_metrics(self, stage: str) -> dict[str, float]:
        out = {}
        for key in [k for k in self._counts if k.split("/")[0] == stage]:
            counts = self._counts.pop(key)
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                gathered = [None] * torch.distributed.get_world_size()
                torch.distributed.all_gather_object(gathered, counts.counts)
                counts.counts = {}
                for part in gathered:
                    counts.merge(part)
            out.update({f"{key}/{name}": value for name, value in counts.figures().items()})
        return out

    # ---- saving and loading --------------------------------------------------------------------
    def save_pretrained(self, directory, model) -> None:
        """Adapters (each in its own folder, written by peft), plus iclm.pt and iclm.json."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        torch.save(nn.Module.state_dict(self), directory / "iclm.pt")
        (directory / "iclm.json").write_text(json.dumps(self.config, indent=2))

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
        state = torch.load(directory / "iclm.pt", map_location=next(model.parameters()).device)
        nn.Module.load_state_dict(method, state)
        return method, model
