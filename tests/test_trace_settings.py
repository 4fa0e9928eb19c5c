"""The trace's typed settings (search, baselines) and selection.json's one schema."""

from __future__ import annotations

import inspect
import json

import pytest
from omegaconf import OmegaConf

from catlit.cli import config_dir
from catlit.errors import ConfigError
from catlit.hooks.selection import Selection, read_head_selection
from catlit.tracing.search import pgbct
from catlit.tracing.settings import BaselineSettings, SearchSettings
from tests.helpers.runs import compose_cfg
from tests.helpers.traces import write_selection


def test_the_yaml_is_the_one_place_for_the_defaults():
    for name in ("default", "paper", "ranking"):
        yaml = OmegaConf.to_container(OmegaConf.load(f"{config_dir()}/search/{name}.yaml"))
        assert SearchSettings.preset(name).to_dict() == yaml
    trace = OmegaConf.to_container(OmegaConf.load(f"{config_dir()}/trace.yaml"))["baselines"]
    assert BaselineSettings.preset().to_dict() == trace
    # no function carries a default of the search's own: pgbct takes the settings object
    params = inspect.signature(pgbct).parameters
    assert set(params) == {"tracer", "indices", "settings", "seed", "threshold", "changes"}


def test_composed_config_gives_the_same_settings(tmp_path):
    cfg = compose_cfg(tmp_path, ["search=paper", "search.epochs=4"], config_name="trace")
    search = SearchSettings.from_config(cfg.search)
    assert (search.epochs, search.schedule, search.lambda1) == (4, "linear", 1e-4)
    assert search.passes == 4 and search.rate("heads") == 0.1


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"epochs": 0}, "search.epochs=0: must be an integer >= 1"),
        (
            {"loss": "hinge"},
            "search.loss='hinge': must be one of inverse, scaled, pooled, negative, relative",
        ),
        ({"schedule": "cosine"}, "search.schedule='cosine': must be one of"),
        ({"lr": 0.1}, "search.lr=0.1: must be a rate per component kind"),
        ({"lr": {"heads": 50}}, r"search.lr.heads=50: must be a number in \(0, 10\]"),
        ({"epoch": 3}, r"search: unknown setting\(s\) \['epoch'\]"),
    ],
)
def test_a_bad_search_setting_is_named(changes, message):
    with pytest.raises(ConfigError, match=message):
        SearchSettings.preset(**changes)


def test_missing_settings_and_rates_are_named():
    values = SearchSettings.preset().to_dict()
    del values["restarts"]
    with pytest.raises(ConfigError, match=r"search: missing setting\(s\) \['restarts'\]"):
        SearchSettings.from_config(values)
    with pytest.raises(ConfigError, match="search.lr has no rate for mlp components"):
        SearchSettings.preset(lr={"heads": 0.1}).rate("mlp")
    with pytest.raises(ConfigError, match="baselines.tau=-1: must be a finite number >= 0"):
        BaselineSettings.preset(tau=-1)


def test_selection_round_trips_and_a_reader_names_what_does_not_fit(tmp_path):
    heads = [{"name": "L2H3", "kind": "heads", "layer": 2, "index": 3, "z": 0.9}]
    write_selection(tmp_path, heads)
    (tmp_path / "metrics.json").write_text("{}")
    selection = Selection.read(tmp_path / "selection.json")
    assert selection.components == heads and selection.size == 1
    assert read_head_selection(tmp_path) == {2: [3]}
    data = json.loads((tmp_path / "selection.json").read_text())
    for key, value, message in [
        ("effect_kind", None, "field 'effect_kind' is missing"),
        ("size", "1", "field 'size' is str, not int"),
        ("size", 2, "size 2 but 1 components"),
        ("components", [{"kind": "heads"}], r"components\[0\] lacks \['name', 'layer', 'index'\]"),
    ]:
        broken = {k: v for k, v in data.items() if k != key}
        if value is not None:
            broken[key] = value
        (tmp_path / "selection.json").write_text(json.dumps(broken))
        with pytest.raises(ValueError, match=message):
            read_head_selection(tmp_path)
