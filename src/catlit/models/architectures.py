"""The one table of decoder architectures that every part of catlit reads.

Per Hugging Face `model_type`, an `Architecture` names where things live, relative to the model that
`base_model()` returns (a peft wrapper's inner model, otherwise the model itself):

  layers      the ModuleList of decoder layers (its element class is the FSDP wrap unit)
  attention   below one layer: the attention module (what CAT's capture and attention patterns see)
  attn_in     the query/key/value projections, or the one fused projection (GPT-2's c_attn)
  attn_out    the attention output projection; its *input* is the heads' outputs side by side
  mlp         the MLP block
  mlp_in      the MLP's input projections (gate and up, or one)
  mlp_out     the MLP's output projection; its input holds the hidden neurons

Readers: CAT's attention capture (`attention`), tracing's hook points (every path), LoRA and ICLM
adapter targets (`lora_targets`, default `attn_in + attn_out`; roles below), FSDP wrapping
(`decoder_layer_classes`) and the model presets (`conf/model/*.yaml` name a family of this table).
A peft LoRA wrapper keeps the wrapped module's path, so the table holds with or without adapters.

To add an architecture: one `ARCHITECTURES` entry (the paths above for its `model_type`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn


@dataclass(frozen=True)
class Architecture:
    layers: str
    attention: str
    attn_in: tuple[str, ...]
    attn_out: str
    mlp: str
    mlp_in: tuple[str, ...]
    mlp_out: str
    lora_targets: tuple[str, ...] = field(default=("attn_in", "attn_out"))  # roles or module paths
    parallel: bool = False  # attention and MLP read one residual (GPT-J); use_parallel_residual wins

    def role(self, name: str) -> tuple[str, ...]:
        """Module paths below one decoder layer for a role name (`attn_in`, `attn_out`, `attention`
        = both, `mlp_in`, `mlp_out`, `mlp` = both, `all`), or the name itself (a module path)."""
        roles = {
            "attn_in": self.attn_in,
            "attn_out": (self.attn_out,),
            "attention": (*self.attn_in, self.attn_out),
            "mlp_in": self.mlp_in,
            "mlp_out": (self.mlp_out,),
            "mlp": (*self.mlp_in, self.mlp_out),
        }
        roles["all"] = roles["attention"] + roles["mlp"]
        return roles.get(name, (name,))


def _arch(
    layers: str, attention: str, attn_in, attn_out: str, mlp_in, mlp_out: str, parallel: bool = False
) -> Architecture:
    """An entry whose paths below a layer are given relative to its attention module / its MLP."""
    return Architecture(
        layers=layers,
        attention=attention,
        attn_in=tuple(f"{attention}.{p}" for p in attn_in),
        attn_out=f"{attention}.{attn_out}",
        mlp="mlp",
        mlp_in=tuple(f"mlp.{p}" for p in mlp_in),
        mlp_out=f"mlp.{mlp_out}",
        parallel=parallel,
    )


QKV = ("q_proj", "k_proj", "v_proj")
LLAMA_LIKE = _arch("model.layers", "self_attn", QKV, "o_proj", ("gate_proj", "up_proj"), "down_proj")
LLAMA_FAMILY = (
    "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "olmo", "olmo2", "granite",
    "smollm3", "stablelm", "cohere",
)  # fmt: skip
ARCHITECTURES: dict[str, Architecture] = {
    **dict.fromkeys(LLAMA_FAMILY, LLAMA_LIKE),
    "phi3": _arch("model.layers", "self_attn", ("qkv_proj",), "o_proj", ("gate_up_proj",), "down_proj"),
    "starcoder2": _arch("model.layers", "self_attn", QKV, "o_proj", ("c_fc",), "c_proj"),
    "gpt2": _arch("transformer.h", "attn", ("c_attn",), "c_proj", ("c_fc",), "c_proj"),
    "gpt_neox": _arch(
        "gpt_neox.layers", "attention", ("query_key_value",), "dense", ("dense_h_to_4h",), "dense_4h_to_h"
    ),
    "gptj": _arch("transformer.h", "attn", QKV, "out_proj", ("fc_in",), "fc_out", parallel=True),
}


def base_model(model: nn.Module) -> nn.Module:
    """The Hugging Face model inside a peft wrapper (the model itself otherwise)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def text_config(model: nn.Module):
    config = base_model(model).config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def model_type(model: nn.Module) -> str:
    return getattr(text_config(model), "model_type", type(base_model(model)).__name__)


def architecture(model: nn.Module) -> Architecture:
    """The table entry of `model` (peft-wrapped or not); an unknown model_type is an error naming it."""
    kind = model_type(model)
    if kind not in ARCHITECTURES:
        raise ValueError(
            f"catlit has no architecture entry for model_type={kind!r}; known: {sorted(ARCHITECTURES)} "
            "(add one to ARCHITECTURES in catlit/models/architectures.py)"
        )
    return ARCHITECTURES[kind]


def in_features(module: nn.Module) -> int:
    """Input width of a Linear or a GPT-2 Conv1D (weight stored [in, out]), also inside a peft wrapper."""
    base = getattr(module, "base_layer", module)
    return base.in_features if isinstance(base, nn.Linear) else int(base.weight.shape[0])


def input_slice_weight(module: nn.Module, start: int, stop: int):
    """The weight block that reads input features [start, stop) (a view: writing to it edits the model)."""
    base = getattr(module, "base_layer", module)
    return base.weight[:, start:stop] if isinstance(base, nn.Linear) else base.weight[start:stop, :]


@dataclass
class LayerModules:
    """One decoder layer's modules, resolved from the table."""

    layer: nn.Module
    attention: nn.Module
    attn_out: nn.Module
    mlp: nn.Module
    mlp_out: nn.Module


class Layout:
    """A model's modules and sizes as the table resolves them (the same objects, never copies)."""

    def __init__(self, model: nn.Module):
        arch = architecture(model)
        self.model, self.base, self.arch, self.config = model, base_model(model), arch, text_config(model)
        self.layers = [
            LayerModules(
                layer=layer,
                attention=layer.get_submodule(arch.attention),
                attn_out=layer.get_submodule(arch.attn_out),
                mlp=layer.get_submodule(arch.mlp),
                mlp_out=layer.get_submodule(arch.mlp_out),
            )
            for layer in self.base.get_submodule(arch.layers)
        ]
        self.n_layers = len(self.layers)
        self.n_heads = int(self.config.num_attention_heads)
        width = in_features(self.layers[0].attn_out)
        if width % self.n_heads:
            raise ValueError(f"attention output width {width} is not divisible by {self.n_heads} heads")
        # attn_out.in_features / heads: some models' head_dim * heads differs from hidden_size
        self.head_width = width // self.n_heads
        self.d_model = int(self.config.hidden_size)
        self.d_mlp = in_features(self.layers[0].mlp_out)
        self.parallel = bool(getattr(self.config, "use_parallel_residual", arch.parallel))

    def attention_modules(self) -> list[nn.Module]:
        return [site.attention for site in self.layers]

    def head_output_weight(self, layer: int, head: int):
        """The attention output-projection weight block that reads `head` (a view into the model)."""
        w = self.head_width
        return input_slice_weight(self.layers[layer].attn_out, head * w, (head + 1) * w)


def decoder_layer_classes(model: nn.Module) -> set[type]:
    """The decoder-layer classes (FSDP's wrap units)."""
    return {type(site.layer) for site in Layout(model).layers}


def lora_target_modules(model: nn.Module, targets=None) -> list[str]:
    """Module paths for LoRA: `targets` (role names of `Architecture.role` or module names), or the
    table's default. Paths are matched by peft as suffixes of the full module names."""
    arch = architecture(model)
    names = targets if targets else arch.lora_targets
    return list(dict.fromkeys(path for name in names for path in arch.role(str(name))))
