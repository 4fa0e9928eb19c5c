"""The STG generators: released rules (and quirk), STG_H, the parametric family, seeded splits."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from catlit.data.sources import STG_PRESETS, STGHSource, STGSource
from catlit.data.stg_family import STGFamily
from catlit.data.stg_h import CAUSAL as STGH_CAUSAL
from catlit.data.stg_h import aqi
from catlit.data.stg_released import released_label, released_score


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
