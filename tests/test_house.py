"""The house's seams: one architecture table that every part reads, hooks that never outlive their
block, a Method core that the pipeline reads without naming a method, and imports that point down."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoConfig, AutoModelForCausalLM

from catlit.hooks.attention import CAPTURE_TAPS
from catlit.hooks.points import PATTERN_TAPS
from catlit.models.architectures import ARCHITECTURES, Layout, decoder_layer_classes, lora_target_modules
from catlit.models.lora import apply_lora
from tests.helpers.runs import FAST, ROOT, SMALL_DATA, compose_cfg

SRC = ROOT / "src" / "catlit"
SMALL = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}


def small_model(model_type: str):
    config = AutoConfig.for_model(model_type, **SMALL, num_key_value_heads=2, vocab_size=64)
    for key, value in {"n_embd": 32, "n_layer": 2, "n_head": 4, "head_dim": 8, "rotary_dim": 4}.items():
        if hasattr(config, key):
            setattr(config, key, value)
    for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
        if getattr(config, key, None) is not None and getattr(config, key) >= 64:
            setattr(config, key, 1)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config)


@pytest.mark.parametrize("model_type", sorted(ARCHITECTURES))
def test_every_architecture_of_the_table_resolves_and_takes_lora(model_type):
    model = small_model(model_type)
    layout = Layout(model)
    assert layout.n_layers == 2 and layout.n_heads == 4
    assert layout.head_width * layout.n_heads == layout.layers[0].attn_out.weight.numel() // layout.d_model
    assert len(decoder_layer_classes(model)) == 1
    # the default LoRA targets exist in the model: peft adapts exactly them
    wrapped = apply_lora(model, r=2, alpha=4, dropout=0.0)
    adapted = {n.split(".lora_A")[0] for n, _ in wrapped.named_parameters() if ".lora_A." in n}
    targets = lora_target_modules(model)
    assert len(adapted) == 2 * len(targets)  # every target in both layers
    assert all(any(name.endswith(t) for t in targets) for name in adapted)
    assert Layout(wrapped).n_layers == 2  # and the table still reads through the wrapper


def test_lora_roles_resolve_per_family():
    llama, gpt2 = small_model("llama"), small_model("gpt2")
    assert lora_target_modules(llama, ["attn_in", "mlp"]) == [
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "mlp.gate_proj",
        "mlp.up_proj",
        "mlp.down_proj",
    ]
    assert lora_target_modules(gpt2, ["attn_in", "mlp"]) == ["attn.c_attn", "mlp.c_fc", "mlp.c_proj"]
    assert lora_target_modules(llama, ["q_proj", "v_proj"]) == ["q_proj", "v_proj"]  # plain names pass


# ---- hooks live exactly as long as their block ----------------------------------------------------
def hooks(model) -> dict[str, list]:
    """Every forward (pre-)hook on the model but those transformers installs for itself (it adds
    output-capturing hooks the first time attention maps are asked for, and keeps them)."""
    found = {}
    for name, m in model.named_modules():
        fns = [*m._forward_hooks.values(), *m._forward_pre_hooks.values()]
        fns = [f for f in fns if not getattr(f, "__module__", "").startswith("transformers.")]
        if fns:
            found[name] = fns
    return found


def catlit_traces(model, before: dict) -> list[str]:
    """Anything of catlit's left on the model: new hooks, attributes, taps, a switched attention."""
    found = [f"{name}: hook" for name, fns in hooks(model).items() if fns != before.get(name, [])]
    found += [f"{name}.{k}" for name, m in model.named_modules() for k in vars(m) if "catlit" in k]
    if len(CAPTURE_TAPS) or len(PATTERN_TAPS):
        found.append("taps")
    if model.config._attn_implementation != "sdpa":
        found.append(f"attention {model.config._attn_implementation}")
    return found


@pytest.mark.parametrize("capture", ["efficient", "eager"])
def test_after_fit_the_model_carries_nothing_of_catlits(tmp_path, capture):
    from catlit.rundir import RunDir
    from catlit.training.run import setup

    cfg = compose_cfg(tmp_path, [*FAST, *SMALL_DATA, "method=cat", f"method.capture={capture}"])
    module, datamodule, trainer, _ = setup(cfg, RunDir(cfg.paths.output_dir), True)
    before = hooks(module.model)
    assert catlit_traces(module.model, before) == []
    trainer.fit(module, datamodule=datamodule)
    assert "train/attn_ratio" in trainer.logged_metrics  # the capture was there during the fit
    assert catlit_traces(module.model, before) == []


def test_a_fit_that_raises_still_removes_the_hooks(tmp_path):
    from lightning.pytorch.callbacks import Callback

    from catlit.rundir import RunDir
    from catlit.training.run import setup

    class Boom(Callback):
        def on_train_batch_end(self, trainer, pl_module, *args):
            assert len(CAPTURE_TAPS) > 0  # attached while the fit runs
            raise RuntimeError("boom")

    cfg = compose_cfg(tmp_path, [*FAST, *SMALL_DATA, "method=cat"])
    module, datamodule, trainer, _ = setup(cfg, RunDir(cfg.paths.output_dir), True)
    before = hooks(module.model)
    trainer.callbacks.append(Boom())
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(module, datamodule=datamodule)
    assert catlit_traces(module.model, before) == []


# ---- the pipeline reads declarations, never a method's name ----------------------------------------
METHOD_NAMES = {yaml.safe_load(p.read_text()).get("name") for p in (ROOT / "conf" / "method").glob("*.yaml")}
METHOD_KEYS = {  # config keys and logged names that belong to one method
    "alpha", "gamma", "share", "variant", "heads_from", "per_head", "alpha_mode", "capture",
    "attn", "attn_ratio", "attn_share", "attn_active", "attn_rows", "attn_active_steps",
    "domains", "aggregation", "route_on", "mask_padding", "lambda_route", "lambda_mi", "lambda_inv",
    "lambda_dom", "vq", "routing_purity", "codebook_usage", "single_pass",
}  # fmt: skip
GENERIC = {"share", "capture", "variant"}  # also ordinary attribute names (coverage.share(...))


def method_words(path: Path) -> list[str]:
    """String constants naming a method or a method's key, and attributes named like such keys."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            segments = set(node.value.replace("/", ".").split("."))
            if node.value in METHOD_NAMES or (segments & METHOD_KEYS and " " not in node.value):
                found.append(f"{path.name}:{node.lineno}: {node.value!r}")
        elif isinstance(node, ast.Attribute) and node.attr in METHOD_KEYS - GENERIC:
            found.append(f"{path.name}:{node.lineno}: .{node.attr}")
    return found


def test_training_data_and_report_never_name_a_method():
    assert {"cat", "cat_share", "baseline", "iclm"} <= METHOD_NAMES
    files = [*(SRC / "training").glob("*.py"), *(SRC / "data").glob("*.py"), SRC / "report.py"]
    assert [w for f in files for w in method_words(f)] == []
    # and the check itself bites: the method packages do name their keys
    assert method_words(SRC / "methods" / "cat.py")


# ---- dependencies point down ---------------------------------------------------------------------
FLOORS = [  # a module may import from its own floor's other packages only where noted, and below
    {"errors", "stats", "files"},
    {"plotting", "schedules", "console", "resolvers", "secrets", "summaries", "configs"},
    {"rundir"},
    {"models"},
    {"hooks"},
    {"data"},
    {"methods"},
    {"eval"},
    {"training", "tracing", "annotate", "pretraining"},  # one floor, four rooms: none imports another
    {"cli", "report"},
]


def floor_of(name: str) -> int:
    return next(i for i, rooms in enumerate(FLOORS) if name in rooms)


def test_imports_point_down():
    upward = []
    for path in SRC.rglob("*.py"):
        if path.name == "__init__.py" and path.parent == SRC:
            continue
        rel = path.relative_to(SRC).with_suffix("")
        here = rel.parts[0]
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("catlit."):
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.startswith("catlit.")]
            for name in names:
                there = name.split(".")[1]
                if there == here:
                    continue
                if floor_of(there) >= floor_of(here):
                    upward.append(f"{rel}: imports {name}")
    assert upward == []


def module_imports() -> dict[str, set[str]]:
    """Each catlit module -> the catlit modules it names (at any depth of the file: lazy imports
    count). `from pkg import name` names the submodule where one exists, else the package."""
    modules = {}
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        modules[name] = path
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("catlit"):
                subs = {f"{node.module}.{a.name}" for a in node.names} & modules.keys()
                found |= subs if len(subs) == len(node.names) else {node.module, *subs}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name in modules}
        graph[name] = found - {name}
    return graph


def circles_within_packages(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import circles whose modules all sit in one package (`catlit.methods`, `catlit.tracing`, ...)."""
    found = []
    for start in sorted(graph):
        package = ".".join(start.split(".")[:2])
        stack = [(start, [start])]
        while stack:
            here, path = stack.pop()
            for there in sorted(graph.get(here, ())):
                if there == start:
                    found.append(path)
                elif there not in path and there > start and there.startswith(package + "."):
                    stack.append((there, [*path, there]))
    return found


def test_no_import_circle_inside_a_package():
    graph = module_imports()
    assert circles_within_packages(graph) == []
    # and the check bites: a circle put into the graph is found
    graph["catlit.methods.base"] = graph["catlit.methods.base"] | {"catlit.methods.finetune"}
    assert ["catlit.methods.base", "catlit.methods.finetune"] in circles_within_packages(graph)


# ---- the Method contract ---------------------------------------------------------------------------
def test_a_method_checks_its_settings_by_the_rules_train_py_checks(tmp_path):
    from catlit.errors import ConfigError
    from catlit.methods.cat import CausalAttentionTuning
    from catlit.methods.iclm import IndependentCausalLM
    from catlit.training.checks import check_config

    for method, key, value in [
        (CausalAttentionTuning, "variant", "hinge2"),
        (CausalAttentionTuning, "share", 1.5),
        (IndependentCausalLM, "aggregation", "mean"),
        (IndependentCausalLM, "domains", 0),
    ]:
        message = re.escape(f"method.{key}={value!r}: must be {method.capabilities.config_rules[key][1]}")
        with pytest.raises(ConfigError, match=message):
            method(**{key: value})  # built in Python
        name = "cat" if method is CausalAttentionTuning else "iclm"
        cfg = compose_cfg(tmp_path, [f"method={name}", f"method.{key}={value}"])
        with pytest.raises(ConfigError, match=message):
            check_config(cfg)  # composed by Hydra: the same rule, the same words


def test_a_capacity_matched_lora_is_handed_the_method_it_matches(tmp_path):
    from hydra.utils import instantiate

    from catlit.methods.base import Method
    from catlit.methods.finetune import Baseline
    from catlit.methods.iclm import IndependentCausalLM

    cfg = compose_cfg(tmp_path, ["method=lora_matched", "method.match.domains=3"])
    method = instantiate(cfg.method)
    assert isinstance(method, Baseline) and isinstance(method.match, IndependentCausalLM)
    assert method.match.config.domains == 3
    with pytest.raises(TypeError, match="method.match must build a method"):
        Baseline(adapter={"r": 4}, match={"domains": 2})
    with pytest.raises(NotImplementedError, match="does not say what it would train"):
        Method().trainable_parameters(None)
    # the finetune reference and the contract: base.py imports no method
    base = (SRC / "methods" / "base.py").read_text()
    assert "finetune" not in base.split('"""')[-1] and "iclm" not in base.split('"""')[-1]


def test_summaries_are_a_declared_part_of_the_contract():
    from catlit.eval.attention_probe import AttentionReport
    from catlit.methods.base import Method
    from catlit.summaries import RunSummary

    assert issubclass(Method, RunSummary) and issubclass(AttentionReport, RunSummary)
    assert "hasattr" not in (SRC / "training" / "run.py").read_text()
