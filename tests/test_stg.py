"""The STG generators: released rules (and quirk), STG_H, the parametric family, seeded splits."""

from __future__ import annotations

import json
import random
import re
import statistics
from collections import Counter

import pytest
from hydra.utils import instantiate

from catlit.data.sources import STG_PRESETS, STGHSource, STGSource
from catlit.data.stg_family import STGFamily
from catlit.data.stg_h import CAUSAL as STGH_CAUSAL
from catlit.data.stg_h import RELEASED_CAUSAL, RELEASED_QUESTION, RELEASED_SPURIOUS, aqi
from catlit.data.stg_released import released_label, released_score
from tests.helpers.runs import compose_cfg


def values(example) -> dict[str, float]:
    return {
        k.strip(): float(v) for k, v in re.findall(r"([A-Z][a-z]+(?: [a-z]+)*): (-?[\d.]+)", example.input)
    }


def test_released_rules_in_and_out_of_distribution():
    splits = STGSource("released", seed=3).load()
    assert splits.sizes() == {"train": 1600, "val/iid": 200, "val/ood": 200, "test/iid": 400, "test/ood": 400}
    for ex in splits.train + splits.test["iid"]:
        v = values(ex)
        assert v["Yellow fingers"] == int(1.5 * v["Smoking"])
        assert v["Clothing size"] == v["Weight"] and v["Hormones"] == int(0.5 * v["Exercise"])
        assert ex.target == released_label(released_score(v["Smoking"], v["Weight"], v["Exercise"]))
        assert ex.input.endswith(" Answer: ") and len(v) == 8
        (link,) = ex.important
        assert link.effect == ex.target and len(link.causes) == 3
        assert all(c in ex.input for c in link.causes)
        positions = [ex.input.index(c) for c in link.causes]
        assert positions == sorted(positions)  # causes listed in text order, as released
    ood = splits.test["ood"]
    copies = sum(values(e)["Clothing size"] == values(e)["Weight"] for e in ood)
    assert copies < 0.3 * len(ood)  # independent out of distribution (1/10 by chance)
    assert all(1 <= values(e)["Hormones"] <= 10 for e in ood)


def test_released_label_quirk_and_intended_rule():
    assert released_label(released_score(1, 5, 2)) == "Middle Risk"  # v == 2.7 exactly, as released
    assert released_label(released_score(2, 5, 2)) == "Low Risk"  # v = 3.9: Low under the quirk
    assert released_label(released_score(2, 5, 2), "intended") == "Middle Risk"
    assert released_label(released_score(8, 4, 2)) == "High Risk"
    labels = Counter(e.target for e in STGSource("released", 0).load().train)
    assert labels["Middle Risk"] < 20 and labels["Low Risk"] > labels["High Risk"] > 300
    intended = Counter(e.target for e in STGSource("released_intended", 0).load().train)
    assert intended["Middle Risk"] > 200


def test_released_subsets_are_prefixes_of_the_full_train_stream():
    full = STGSource("released", seed=1).load().train
    assert STGSource("released_m", seed=1).load().train == full[:800]
    assert STGSource("released_s", seed=1).load().train == full[:400]


def test_splits_are_seeded_and_independent():
    a, b = STGSource("toy", seed=5).load(), STGSource("toy", seed=5).load()
    assert a.train == b.train and a.test["ood"] == b.test["ood"]
    assert STGSource("toy", seed=6).load().train != a.train
    bigger = STGSource("toy", seed=5, params={"n_iid": 50}).load()
    assert bigger.train == a.train  # a test size never changes the training data
    texts = {e.input for e in a.train}
    assert len(texts & {e.input for e in a.test["iid"]}) < 0.5 * len(a.test["iid"])


def test_stg_h_targets_follow_the_aqi_formula():
    splits = STGHSource(seed=0, params={"n_train": 200}).load()
    for ex in splits.train[:50] + splits.test["ood"][:50]:
        (link,) = ex.important
        assert 1 <= len(link.causes) <= 6 and all(c in ex.input for c in link.causes)
        v = values(ex)
        ordered = [v[n] for n in STGH_CAUSAL]
        assert ex.target == str(aqi(ordered)) and 0 <= int(ex.target) <= 100
    ood_haze = [values(e)["Haze reports"] for e in splits.test["ood"]]
    assert min(ood_haze) >= 60  # spurious factors on a shifted scale out of distribution


def test_family_spurious_strength_and_ood_shift():
    fam = STGFamily(spurious_strength=1.0, n_train=400, n_ood=400)
    splits = STGSource("family", seed=0, params={"spurious_strength": 1.0}).load()

    def agreement(rows):
        mid = (fam.low + fam.high) // 2
        return sum((values(e)["Yellow fingers"] > mid) == (e.target == "High Risk") for e in rows) / len(rows)

    assert agreement(splits.train) == 1.0  # the spurious cue tracks the label perfectly
    assert 0.3 < agreement(splits.test["ood"]) < 0.7  # and is independent out of distribution
    flipped = STGSource("family", seed=0, params={"ood_shift": "flipped"}).load()
    assert agreement(flipped.test["ood"]) == 0.0
    weak = STGSource("family", seed=0, params={"spurious_strength": 0.5}).load()
    assert 0.6 < agreement(weak.train) < 0.9
    labels = Counter(e.target for e in splits.train)
    assert min(labels.values()) > 0.35 * len(splits.train)  # default threshold keeps labels balanced


def test_family_copy_mode_and_validation():
    splits = STGSource("family", 0, {"spurious_mode": "copy", "n_causal": 3, "n_spurious": 2}).load()
    for ex in splits.train[:30]:
        v = values(ex)
        assert v["Yellow fingers"] == v["Smoking"] and v["Clothing size"] == v["Weight"]
    with pytest.raises(ValueError, match="ood_shift"):
        STGFamily(ood_shift="sideways")
    with pytest.raises(ValueError, match="weights"):
        STGFamily(n_causal=2, weights=[1.0])
    assert {"toy", "released", "family"} <= set(STG_PRESETS)


def released_stg_h_values(ex) -> dict[str, float]:
    """Every 'Name: value' of a released-format STG_H prompt, units and suffixes stripped."""
    out = {}
    for part in re.split(r"[;.] ", ex.input.split(" Given these")[0]):
        name, value = part.split(": ")
        out[name] = float(re.match(r"-?\d+(?:\.\d+)?", value).group())
    return out


def test_released_stg_h_follows_the_released_process():
    splits = STGHSource("released", seed=0, params={"n_train": 3000, "n_ood": 1000}).load()
    train, ood = splits.train, splits.test["ood"]
    first = train[0]
    assert first.input.startswith("Industrial Emissions: ") and first.input.endswith(RELEASED_QUESTION)
    assert re.search(r"Coal Dependency: \d+\.\d%; ", first.input)
    assert re.search(r"City Anniversary: \d+(st|nd|rd|th); Average Internet Speed: \d+\.\dMbps;", first.input)
    assert re.search(r"Renewable Stock Index: -?\d+; ", first.input)  # shown without decimals
    (link,) = first.important
    assert link.effect == f"Answer: {first.target}" and len(link.causes) <= 6
    assert all(c in first.input for c in link.causes)
    rows = [released_stg_h_values(e) for e in train]
    targets = [int(e.target) for e in train]
    # AQI = round((raw + 20) / 50 * 100): mean 42, std 13.5 under the process (raw: mean 1, std 6.75)
    assert abs(statistics.mean(targets) - 42) < 1.0 and abs(statistics.stdev(targets) - 13.5) < 1.0
    assert min(targets) >= 0 and max(targets) <= 100
    for name, _, lo, hi, sd in RELEASED_CAUSAL:
        values_ = [r[name] for r in rows]
        assert lo - 4 * sd < min(values_) < lo + 2 and hi - 2 < max(values_) < hi + 4 * sd, name
    ood_rows = [released_stg_h_values(e) for e in ood]
    for name, k, slope, sd, (lo, hi), _, _ in RELEASED_SPURIOUS:
        cause = RELEASED_CAUSAL[k][0]
        iid_r = statistics.correlation([r[name] for r in rows], [r[cause] for r in rows])
        ood_r = statistics.correlation([r[name] for r in ood_rows], [r[cause] for r in ood_rows])
        _, _, c_lo, c_hi, c_sd = RELEASED_CAUSAL[k]
        var = (c_hi - c_lo) ** 2 / 12 + c_sd**2  # uniform + Gaussian noise
        expected = slope * var**0.5 / (slope**2 * var + sd**2) ** 0.5  # corr(slope * f + noise, f)
        assert abs(iid_r - expected) < 0.05, (name, iid_r, expected)  # tracks its cause as specified
        assert abs(ood_r) < 0.1, (name, ood_r)  # independent out of distribution
        assert lo - 0.05 <= min(r[name] for r in ood_rows) and max(r[name] for r in ood_rows) <= hi + 0.05
    # two spurious factors move to a new scale out of distribution (5-9 and 3-7 there)
    assert statistics.mean(r["Ice Cream Sales Index"] for r in rows) > 20  # 0.4 x f6: about 28
    assert statistics.mean(r["Renewable Stock Index"] for r in rows) > 40  # 1.1 x f1: about 55
    with pytest.raises(ValueError, match="not an STG_H preset"):
        STGHSource("paper")


def test_stg_h_files_preset_reads_released_format_files(tmp_path):
    """`data=stg_h_files` reads $CATLIT_DATA_DIR/STG_H/*.jsonl as released (integer targets)."""
    gen = STGHSource("released", seed=1).generator
    folder = tmp_path / "STG_H"
    folder.mkdir()
    rng = random.Random(1)
    for name, n, ood in (
        ("STG_H_train", 12, False),
        ("STG_H_iid_test", 5, False),
        ("STG_H_ood_test", 6, True),
    ):
        with (folder / f"{name}.jsonl").open("w") as handle:
            for _ in range(n):
                ex = gen.sample(rng, ood)
                row = {"input": ex.input, "target": int(ex.target), "important": ex.important_json()}
                handle.write(json.dumps(row) + "\n")
    cfg = compose_cfg(tmp_path, ["data=stg_h_files", f"paths.data_dir={tmp_path}"])
    dm = instantiate(cfg.data, fields=["causal_mask"])
    assert dm.task == "stg_h" and dm.test_names == ["iid", "ood"]
    assert len(dm.splits.train) == 12 and len(dm.splits.test["ood"]) == 6
    first = dm.splits.train[0]
    assert first.target.isdigit() and first.important[0].effect == f"Answer: {first.target}"


def test_validation_never_shares_a_prompt_with_the_test_splits():
    for source in (STGSource("toy", seed=3), STGHSource("catlit", seed=3, params={"n_train": 50})):
        splits = source.load()
        tested = {ex.input for rows in splits.test.values() for ex in rows}
        for name, rows in splits.val.items():
            assert not tested & {ex.input for ex in rows}, name
            assert len(rows) == source.generator.n_val
