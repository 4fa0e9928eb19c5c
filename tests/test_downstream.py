"""Downstream tasks on the released files: configs, holdout splits, OOD pairing, scorers on real rows."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate

from catlit.data.coverage import file_coverage
from catlit.data.jsonl import read_jsonl
from catlit.eval.scoring import get_scorer
from tests.helpers.runs import compose_cfg, train

pytestmark = pytest.mark.released_data

EXPECTED = {  # data option -> (task, test splits, train rows after holdout)
    "mawps": ("numeric", ["iid", "ood"], 1239),
    "svamp": ("numeric", ["iid", "ood"], 600),
    "gsm8k": ("gsm8k", ["iid"], 1319 - 131),
    "asdiv": ("numeric", ["iid"], 2215 - 443 - 221),
    "arc_e": ("choice", ["iid"], 2251),
}


@pytest.mark.parametrize("option", sorted(EXPECTED))
def test_downstream_configs_load_the_released_files(tmp_path, released_data, option):
    cfg = compose_cfg(tmp_path, [f"data={option}", f"paths.data_dir={released_data}"])
    dm = instantiate(cfg.data, fields=["causal_mask"])
    task, tests, n_train = EXPECTED[option]
    assert dm.task == task and dm.test_names == tests and dm.val_names == ["iid"]
    assert len(dm.splits.train) == n_train
    if option in ("gsm8k", "asdiv"):  # catlit's own holdouts are disjoint from train (MAWPS's files
        train_ids = {e.origin for e in dm.splits.train}  # repeat some questions themselves)
        held = dm.splits.val["iid"] + (dm.splits.test["iid"] if option == "asdiv" else [])
        assert not train_ids & {e.origin for e in held}


def test_ood_pairing_swaps_mawps_and_svamp(tmp_path, released_data):
    mawps = instantiate(compose_cfg(tmp_path, ["data=mawps", f"paths.data_dir={released_data}"]).data)
    svamp = instantiate(compose_cfg(tmp_path, ["data=svamp", f"paths.data_dir={released_data}"]).data)
    assert len(mawps.splits.test["ood"]) == 1000 and len(svamp.splits.test["ood"]) == 2065
    assert mawps.splits.test["ood"][0].origin.split(":")[0].endswith("svamp_ood.jsonl")
    custom = compose_cfg(
        tmp_path,
        [
            "data=svamp",
            f"paths.data_dir={released_data}",
            "data.test.ood=null",
            f"+data.test.asdiv={released_data}/ASDiv/merged_asdiv.jsonl",
        ],
    )
    assert instantiate(custom.data).test_names == ["iid", "asdiv"]


@pytest.mark.parametrize(
    "option,file",
    [
        ("numeric", "MAWPS/mawps_test.jsonl"),
        ("numeric", "MAWPS/mawps_ood.jsonl"),
        ("numeric", "SVAMP/svamp_test.jsonl"),
        ("numeric", "ASDiv/merged_asdiv.jsonl"),
        ("gsm8k", "GSM8K/gsm8k_test.jsonl"),
        ("choice", "ARC_E/ARC_E_test.jsonl"),
    ],
)
def test_scorers_on_real_rows(released_data, option, file):
    score = get_scorer(option)
    rows = read_jsonl(released_data / file, bad_annotations="skip")
    assert all(score(" " + ex.target, ex.target) for ex in rows)  # the reference answer scores
    wrong = {"numeric": " 123456789", "gsm8k": "so #### 123456789", "choice": " 9"}[option]
    assert not any(score(wrong, ex.target) for ex in rows)


@pytest.mark.parametrize(
    "prediction,target,task,ok",
    [
        ("Answer: 84", "Answer: 84.0", "numeric", True),  # MAWPS train/test form
        ("84", "Answer: 84.0", "numeric", True),
        (" 84.0 (apples)", "84.0", "numeric", True),  # MAWPS ood form
        ("6", "6 (bags)", "numeric", True),  # ASDiv
        ("1,200", "1200.0", "numeric", True),
        ("85", "84.0", "numeric", False),
        ("First 2 * 3 = 6.\n#### 6", "... #### 6", "gsm8k", True),
        ("First 2 * 3 = 6.\nSo 7", "... #### 6", "gsm8k", False),
        ("so the total is 6", "... #### 6", "gsm8k", True),  # no ####: the last number
        ("C. mutualism", "C", "choice", True),
        ("(b)", "B", "choice", True),
        ("Because C", "C", "choice", False),
        ("3. 42 grams", "3", "choice", True),
        (" clara.", "Clara", "numeric", True),
        ("Jim", "Clara", "numeric", False),
    ],
)
def test_numeric_normalisation(prediction, target, task, ok):
    assert get_scorer(task)(prediction, target) is ok


@pytest.mark.parametrize("file", ["GSM8K/gsm8k_val.jsonl", "ARC_E/ARC_E_train.jsonl"])
def test_the_answer_effect_is_matched_where_the_released_matcher_finds_none(released_data, file):
    cov = file_coverage(released_data / file)
    assert cov.share("answer_effect_matched", "examples_annotated") > 0.95


@pytest.mark.slow
@pytest.mark.parametrize("option", ["svamp", "gsm8k"])
def test_downstream_training_reports_every_split(tmp_path, released_data, option):
    _, _, metrics, run_dir = train(
        tmp_path,
        f"data={option}",
        f"paths.data_dir={released_data}",
        "data.limit=24",
        "data.max_new_tokens=8",
        small=False,
    )
    _, tests, _ = EXPECTED[option]
    assert {f"test/{s}/acc" for s in tests} | {"val/iid/acc"} <= set(metrics)
    assert all((run_dir / "predictions" / f"{s}.jsonl").is_file() for s in tests)


def release_clone(tmp_path, released_data):
    """A data folder laid out as the CAT authors' repository names it (`GSM8k/`, lower-case files),
    made of links to the shared files."""
    clone = tmp_path / "CAT" / "data"
    for folder in released_data.iterdir():
        if not folder.is_dir():
            continue
        target = clone / ("GSM8k" if folder.name == "GSM8K" else folder.name)
        target.mkdir(parents=True)
        for file in folder.iterdir():
            (target / file.name).symlink_to(file)
    return clone


@pytest.mark.parametrize("option", sorted(EXPECTED))
def test_a_clone_of_the_release_works_for_every_data_option(tmp_path, released_data, option):
    clone = release_clone(tmp_path, released_data)
    assert (clone / "GSM8k").is_dir() and not (clone / "GSM8K").exists()
    cfg = compose_cfg(tmp_path, [f"data={option}", f"paths.data_dir={clone}"])
    dm = instantiate(cfg.data, fields=["causal_mask"])
    assert len(dm.splits.train) == EXPECTED[option][2]


@pytest.mark.released_data
def test_a_missing_task_folder_says_what_was_looked_for(tmp_path):
    (tmp_path / "data" / "MAWPS").mkdir(parents=True)
    cfg = compose_cfg(tmp_path, ["data=gsm8k", f"paths.data_dir={tmp_path / 'data'}"])
    dm = instantiate(cfg.data, fields=["causal_mask"])
    with pytest.raises(
        FileNotFoundError, match=r"looked for 'GSM8K' \(any case\) in .*data/, which holds \['MAWPS'\]"
    ):
        dm.splits  # noqa: B018  (reading the splits reads the files)
