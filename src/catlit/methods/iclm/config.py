"""ICLM's settings: one dataclass, validated once, saved as `iclm.json` beside the adapters."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from catlit.errors import ConfigError, check_values, integer, number, one_of
from catlit.methods.iclm.mutual_information import DIRECTIONS
from catlit.models.lora import AdapterConfig, adapter_config

AGGREGATIONS = (
    "norm_hidden_states", "hidden_states", "logits", "probas", "norm_logits", "shifted_probas",
    "no_invariant",
)  # fmt: skip
MODES = ("dense", "sparse")
ROUTE_ON = ("prompt", "sequence")
HEADS = ("auto", "full", "projected", "base")
MI_POSITIONS = ("predicting", "answer")
MI_REDUCE = ("groups", "topk_shared")

# every setting's rule, in one table: checked when the settings are built and, as the method's
# `config_rules`, by train.py before anything runs
RULES = {
    "domains": (integer(lambda v: v >= 1), "an integer >= 1"),
    "latent": (integer(lambda v: v >= 1), "an integer >= 1"),
    **{
        key: (number(lambda v: v >= 0), "a number >= 0")
        for key in ("beta", "lambda_route", "lambda_mi", "lambda_inv", "lambda_dom")
    },
    **{
        key: (lambda v: v is None or integer(lambda n: n >= 1)(v), "null or an integer >= 1")
        for key in ("restart_after", "mi_reduce_to")
    },
    "aggregation": one_of(AGGREGATIONS),
    "mode": one_of(MODES),
    "route_on": one_of(ROUTE_ON),
    "mi_direction": one_of(DIRECTIONS),
    "head": one_of(HEADS),
    "mi_positions": one_of(MI_POSITIONS),
    "mi_reduce": one_of(MI_REDUCE),
}


@dataclass
class ICLMConfig:
    name: str = "iclm"
    domains: int = 2  # m domain modules (and m router codewords)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)  # every module's LoRA adapter
    latent: int = 64  # router: Linear(D -> latent) -> BatchNorm -> nearest of m codewords
    beta: float = 0.25  # VQ commitment weight
    aggregation: str = "norm_hidden_states"
    mode: str = "dense"
    route_on: str = "prompt"
    mask_padding: bool = True
    lambda_route: float = 0.1
    lambda_mi: float = 0.01
    lambda_inv: float = 0.1
    lambda_dom: float = 0.1
    mi_direction: str = "product_joint"
    mi_reduce_to: int | None = None
    mi_eps: float = 1e-6
    mi_positions: str = "predicting"  # predicting: where the heads run | answer: the answer tokens' own
    mi_reduce: str = "groups"  # with mi_reduce_to: groups (absmax per group) | topk_shared (the release)
    norm_padding: bool = False  # true: the aggregation's BatchNorm also counts padding positions (release)
    restart_after: int | None = None  # revive a codeword no input chose for this many training steps
    eval_module: str = "aggregate"
    head: str = "auto"

    def __post_init__(self) -> None:
        self.adapter = adapter_config(self.adapter)
        check_values({f.name: getattr(self, f.name) for f in fields(self)}, RULES, prefix="method.")
        if self.eval_module not in self.modules:
            raise ConfigError(f"method.eval_module={self.eval_module!r}; choose from {self.modules}")
        if self.eval_module == "invariant" and self.aggregation == "no_invariant":
            raise ConfigError(
                "method.eval_module=invariant: aggregation=no_invariant has no invariant module"
            )

    @property
    def domain_names(self) -> list[str]:
        return [f"domain_{k}" for k in range(self.domains)]

    @property
    def modules(self) -> tuple[str, ...]:
        return ("aggregate", "invariant", "routed", "domains_mean", *self.domain_names)

    @property
    def adapter_names(self) -> list[str]:
        invariant = [] if self.aggregation == "no_invariant" else ["invariant"]
        return ["router", *invariant, *self.domain_names]

    def to_dict(self) -> dict:
        out = asdict(self)
        out["adapter"] = self.adapter.to_dict()
        return out

    @classmethod
    def from_dict(cls, values: dict) -> ICLMConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})
