"""Nothing lost, nothing leaked, nothing silently wrong: catlit's entry points under faults (kills
timed to checkpoint writes, a full disk, concurrent runs, secrets on the command line, crafted
checkpoints, settings that cannot work, damaged run folders)."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from catlit.rundir import RunDir
from tests.helpers.runs import FAST, ROOT, SMALL_DATA, compose_cfg, train

QUICK = [*SMALL_DATA, "logger=csv", "trainer.max_epochs=1", "trainer.enable_progress_bar=false"]


def cli(script: str, *args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "WANDB_MODE": "offline", **(env or {})}
    return subprocess.run(
        [sys.executable, script, *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


# ---- checkpoints: a kill or a full disk never costs the last good one ------------------------------
def save_forever(path: Path, payloads: list[torch.Tensor]) -> None:
    """A process that saves checkpoints through catlit's checkpoint I/O until it is killed. The
    tensors come from the parent: the forked child runs no parallel kernel (OpenMP is not fork-safe)."""
    import tempfile

    from catlit.training.checkpoints import AtomicCheckpointIO

    tempfile.tempdir = "/dev/shm"  # the system temp dir on another filesystem: a rename there is a copy
    io, step = AtomicCheckpointIO(), 0
    while True:
        step += 1
        weights = payloads[step % len(payloads)]
        io.save_checkpoint({"step": step, "fill": float(weights[0]), "weights": weights}, path)


def test_a_save_killed_at_random_times_always_leaves_a_loadable_checkpoint(tmp_path):
    import multiprocessing

    if not Path("/dev/shm").is_dir():
        pytest.skip("needs /dev/shm (a tmpfs) as a temporary directory on another filesystem")
    path = tmp_path / "last.ckpt"
    rng, steps_seen = random.Random(0), []
    fork = multiprocessing.get_context("fork")  # a forked saver starts at once: no interpreter start-up
    payloads = [torch.full((2_000_000,), float(v)) for v in range(3)]
    for _ in range(12):
        saver = fork.Process(target=save_forever, args=(path, payloads))
        saver.start()
        deadline = time.time() + 20
        while not path.exists() and time.time() < deadline:  # one save done: from now on it must load
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.25))
        os.kill(saver.pid, signal.SIGKILL)
        saver.join()
        state = torch.load(path, weights_only=True)
        assert state["weights"].shape == (2_000_000,) and bool((state["weights"] == state["fill"]).all())
        steps_seen.append(state["step"])
    assert max(steps_seen) > 1  # the kills landed while it kept saving


FULL_DISK = """
import resource, signal, sys, torch
sys.path.insert(0, "src")
from catlit.training.checkpoints import AtomicCheckpointIO
io, path = AtomicCheckpointIO(), sys.argv[1]
io.save_checkpoint({"step": 1, "weights": torch.zeros(1000)}, path)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG, as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
try:
    io.save_checkpoint({"step": 2, "weights": torch.zeros(1_000_000)}, path)
except Exception as err:  # torch reports the failed write as a RuntimeError
    print("save failed:", type(err).__name__, err)
"""


def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "last.ckpt"
    result = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(path)], cwd=ROOT, capture_output=True, text=True
    )
    assert "save failed: WriteFailed" in result.stdout, result.stderr[-2000:]
    assert f"checkpoint {path} could not be written" in result.stdout and "is the disk full?" in result.stdout
    assert f"{path} is the previous checkpoint, whole" in result.stdout
    assert torch.load(path, weights_only=True)["step"] == 1  # the old checkpoint, whole
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary left behind


def test_resuming_from_a_damaged_checkpoint_names_it_and_offers_a_loadable_one(tmp_path):
    _, _, _, run_dir = train(tmp_path / "a", "trainer.max_epochs=2")
    from catlit.training.checkpoints import AtomicCheckpointIO
    from catlit.training.run import setup

    _, _, trainer, _ = setup(compose_cfg(tmp_path / "b", FAST), RunDir(tmp_path / "b" / "run"), True)
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    last = run_dir / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # cut short, as a crash would
    (best,) = (run_dir / "checkpoints").glob("best-*.ckpt")
    with pytest.raises(
        ValueError, match=rf"checkpoint {last} cannot be loaded .* resume with ckpt_path={best}"
    ):
        train(tmp_path / "a", f"ckpt_path={last}", "trainer.max_epochs=3")


# ---- one run per directory -----------------------------------------------------------------------
def test_a_run_directory_in_use_refuses_a_second_run_in_one_line(tmp_path):
    from catlit.rundir import RunDirBusy
    from catlit.tracing.run import run as trace_run

    run_dir = tmp_path / "run"
    busy = f"run directory {run_dir} is in use by another catlit run (pid {os.getpid()})"
    with RunDir(run_dir).claim():  # as a first run holds it
        result = cli("train.py", f"hydra.run.dir={run_dir}", *QUICK)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
        (line,) = error_lines(result)
        assert busy in line
        with pytest.raises(RunDirBusy, match=busy.replace("(", r"\(").replace(")", r"\)")):
            trace_run(compose_cfg(tmp_path, ["model.path=/unused"], config_name="trace"))


@pytest.mark.slow
def test_two_runs_started_together_into_one_directory_one_is_refused(tmp_path):
    run_dir = tmp_path / "shared"
    cmd = [sys.executable, "train.py", f"hydra.run.dir={run_dir}", *QUICK]
    env = {**os.environ, "WANDB_MODE": "offline"}
    runs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(r.wait(timeout=600), r.stderr.read()) for r in runs]
    assert sorted(code for code, _ in results) == [0, 2], [e[-1500:] for _, e in results]
    refused = next(err for code, err in results if code == 2)
    assert "is in use by another catlit run" in refused or "already holds a run" in refused
    assert json.loads((run_dir / "metrics.json").read_text())["test/iid/acc"] >= 0  # the winner's, whole


def test_a_trace_folder_is_never_reused(tmp_path):
    from catlit.tracing.run import run as trace_run

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "selection.json").write_text("{}")  # an earlier trace's
    cfg = compose_cfg(tmp_path, ["model.path=/unused"], config_name="trace")
    with pytest.raises(FileExistsError, match="already holds a trace .*selection.json"):
        trace_run(cfg)
    assert (tmp_path / "run" / "selection.json").read_text() == "{}"


def test_an_unfinished_default_trace_model_is_set_aside_and_built_anew(tmp_path):
    from catlit.cli import default_trace_model

    overrides = "['experiment=quick','method=baseline','logger=none','data.limit=16']"
    cfg = compose_cfg(tmp_path, [f"default_model.overrides={overrides}"], config_name="trace")
    folder = Path(cfg.default_model.dir)
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "config.json").write_text("{}")  # what a kill during its first build left
    from hydra import initialize_config_dir

    from catlit.cli import config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        model_dir = default_trace_model(cfg)
    assert model_dir == folder / "model" and (model_dir / "model.safetensors").is_file()
    (aside,) = folder.parent.glob(f".{folder.name}.unfinished-*")
    assert (aside / "model" / "config.json").read_text() == "{}"  # kept, not deleted


# ---- secrets never reach a file --------------------------------------------------------------------
SECRET = "hf_Zq8SECRETvalue7741"


def files_holding(root: Path, text: str) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and text in p.read_text(errors="ignore")]


@pytest.mark.slow
def test_a_key_on_the_command_line_is_written_nowhere(tmp_path):
    result = cli("train.py", f"paths.log_dir={tmp_path}", *QUICK, "logger=wandb", f"+hf_token={SECRET}")
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs" / "train").iterdir()
    assert (run_dir / ".hydra" / "overrides.yaml").is_file() and list(run_dir.glob("wandb/*/files"))
    assert files_holding(tmp_path, SECRET) == []
    assert "+hf_token=***" in (run_dir / ".hydra" / "overrides.yaml").read_text()
    assert SECRET not in result.stdout + result.stderr


@pytest.mark.slow
def test_a_key_inside_a_dict_override_is_written_nowhere_and_a_crash_does_not_print_it(tmp_path):
    settings = f"+logger.wandb.settings={{api_key: {SECRET}}}"
    result = cli("train.py", f"paths.log_dir={tmp_path}", *QUICK, "logger=wandb", settings)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs" / "train").iterdir()
    assert list(run_dir.glob("wandb/*/files")) and (run_dir / ".hydra" / "hydra.yaml").is_file()
    assert files_holding(tmp_path, SECRET) == [] and SECRET not in result.stdout + result.stderr
    assert "api_key: ***" in (run_dir / ".hydra" / "overrides.yaml").read_text()
    # a crash (not a user error: a traceback) with keys on the command line, both forms
    crash = cli(
        "annotate.py", f"input={tmp_path / 'absent.jsonl'}", f"+annotator.api_key={SECRET}",
        f"paths.log_dir={tmp_path / 'a'}",
    )  # fmt: skip
    crash2 = cli("train.py", f"paths.log_dir={tmp_path / 'b'}", *QUICK, settings, "+trainer.no_such_arg=1")
    for done in (crash, crash2):
        assert done.returncode != 0 and SECRET not in done.stdout + done.stderr, done.stderr[-2000:]
    assert files_holding(tmp_path, SECRET) == []


def test_a_refused_run_never_touches_the_folder_it_was_refused(tmp_path):
    from catlit.rundir import RunDir

    run_dir = tmp_path / "run"
    first = cli("train.py", f"hydra.run.dir={run_dir}", *QUICK, "seed=3")
    assert first.returncode == 0, first.stderr[-2000:]
    before = {p: p.read_bytes() for p in (run_dir / ".hydra").iterdir()}
    assert "seed=3" in (run_dir / ".hydra" / "overrides.yaml").read_text()
    again = cli("train.py", f"hydra.run.dir={run_dir}", *QUICK, "seed=7")  # into a finished run
    assert again.returncode == 2 and "already holds a run" in again.stderr
    with RunDir(run_dir).claim(resume_from=str(run_dir / "checkpoints" / "last.ckpt")):  # a live run holds it
        busy = cli("train.py", f"hydra.run.dir={run_dir}", *QUICK, "seed=8")
        assert busy.returncode == 2 and "is in use by another catlit run" in busy.stderr
        traced = cli("trace.py", f"hydra.run.dir={run_dir}", "model.path=/unused", "seed=9")
        assert traced.returncode == 2 and "is in use by another catlit run" in traced.stderr
    assert {p: p.read_bytes() for p in (run_dir / ".hydra").iterdir()} == before


def test_a_key_given_as_the_variable_name_is_refused_without_echoing_it(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"input": "Smoking: 3 Answer: ", "target": "Low Risk"}) + "\n")
    key = "sk-proj-Abc123SECRETkey456xyz"
    result = cli(
        "annotate.py",
        f"input={rows}",
        "annotator=openai",
        f"annotator.api_key_env={key}",
        f"paths.log_dir={tmp_path}",
    )
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = error_lines(result)
    assert "annotator.api_key_env must name an environment variable" in line
    assert key not in result.stdout + result.stderr and files_holding(tmp_path, key) == []


def test_secret_keys_are_told_from_tokenizer_tokens():
    from catlit.secrets import REDACTED, redact, redact_override

    config = {
        "annotator": {"api_key": "sk-1", "api_key_env": "OPENAI_API_KEY", "max_tokens": 5},
        "model": {"tokenizer": {"pad_token": "<pad>"}, "hf_token": "hf_x"},
        "data": {"max_new_tokens": 4},
        "slip": {"api_key_env": "sk-not-a-variable-name"},
    }
    assert redact(config) == {
        "annotator": {"api_key": REDACTED, "api_key_env": "OPENAI_API_KEY", "max_tokens": 5},
        "model": {"tokenizer": {"pad_token": "<pad>"}, "hf_token": REDACTED},
        "data": {"max_new_tokens": 4},
        "slip": {"api_key_env": REDACTED},
    }
    assert redact_override("+annotator.api_key=sk-1") == "+annotator.api_key=***"
    assert redact_override("+logger.wandb.settings={api_key: sk-1, mode: x}") == (
        "+logger.wandb.settings={api_key: ***, mode: x}"
    )
    assert redact_override("+x=[{hf_token: hf_1}, 2]") == "+x=[{hf_token: ***}, 2]"
    assert redact_override("model.tokenizer.pad_token=<pad>") == "model.tokenizer.pad_token=<pad>"


# ---- a crafted file runs no code -------------------------------------------------------------------
class Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_crafted_checkpoint_runs_no_code_even_when_the_environment_allows_it(tmp_path, monkeypatch):
    marker = tmp_path / "ran"
    crafted = tmp_path / "crafted.ckpt"
    torch.save({"state_dict": {}, "x": Payload(marker)}, crafted)
    result = cli(
        "train.py",
        f"paths.log_dir={tmp_path}",
        *QUICK,
        f"ckpt_path={crafted}",
        env={"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"},
    )
    assert result.returncode == 2 and not marker.exists(), result.stderr[-2000:]
    (line,) = error_lines(result)
    assert f"checkpoint {crafted} cannot be loaded" in line
    # a saved ICLM model's iclm.pt likewise
    from catlit.methods.iclm import IndependentCausalLM
    from tests.helpers.models import tiny_llama

    method = IndependentCausalLM(adapter={"dropout": 0.0})
    model = method.build(tiny_llama())
    method.save_pretrained(tmp_path / "iclm", model)
    torch.save({"router.codebook.weight": Payload(marker)}, tmp_path / "iclm" / "iclm.pt")
    for name in method.adapter_names:
        model.save_pretrained(tmp_path / "iclm", selected_adapters=[name])
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(Exception, match="Weights only load failed"):
        IndependentCausalLM.from_pretrained(tmp_path / "iclm", tiny_llama())
    assert not marker.exists()


# ---- settings that cannot work are refused before anything runs ------------------------------------
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("search.lambda1=inf", "search.lambda1=inf: must be a finite number >= 0"),
        ("search.lambda2=-0.1", "search.lambda2=-0.1: must be a finite number >= 0"),
        ("search.init=nan", "search.init=nan: must be a number in [0, 1]"),
        ("search.epochs=0", "search.epochs=0: must be an integer >= 1"),
        ("select.k=0", "select.k=0: must be null or an integer >= 1"),
        ("search.lr.heads=-1", "search.lr.heads=-1: must be a number in (0, 10]"),
        ("search.lr.heads=1e38", "search.lr.heads=1e+38: must be a number in (0, 10]"),
        ("search.lr=0.1", "search.lr=0.1: must be a rate per component kind"),
        ("pairs.limit=1", "pairs.limit=1: must be null or an integer >= 2"),
    ],
)
def test_trace_settings_are_checked_before_anything_is_written(tmp_path, override, message):
    import re

    from catlit.errors import ConfigError
    from catlit.tracing.run import run as trace_run

    with pytest.raises(ConfigError, match=re.escape(message)):
        trace_run(compose_cfg(tmp_path, ["model.path=/unused", override], config_name="trace"))
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from catlit.data.sources import STGSource
    from tests.helpers.models import save_tiny_checkpoint

    corpus = [ex.text for ex in STGSource("toy", seed=0, params={"n_train": 100}).load().train]
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "model", "llama", corpus)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("select.k=99", r"select.k=99: the model has 8 components"),
        ("baselines.sizes=[50,100]", r"baselines.sizes=\[50, 100\]: none is within \[1, 8\]"),
    ],
)
def test_trace_sizes_are_checked_against_the_model(tmp_path, tiny_checkpoint, override, message):
    from catlit.errors import ConfigError
    from catlit.tracing.run import run as trace_run

    cfg = compose_cfg(
        tmp_path, [f"model.path={tiny_checkpoint}", "pairs.loader.n=8", override], config_name="trace"
    )
    with pytest.raises(ConfigError, match=message):
        trace_run(cfg)
    assert not (tmp_path / "run" / "selection.json").exists()


def test_a_model_with_a_nan_weight_stops_the_trace(tmp_path, tiny_checkpoint):
    from safetensors.torch import load_file, save_file

    from catlit.tracing.run import run as trace_run

    broken = tmp_path / "broken"
    broken.mkdir()
    for file in tiny_checkpoint.iterdir():
        (broken / file.name).write_bytes(file.read_bytes())
    weights = load_file(broken / "model.safetensors")
    name = next(k for k in weights if "o_proj" in k)
    weights[name][0, 0] = float("nan")
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    cfg = compose_cfg(
        tmp_path, [f"model.path={broken}", "pairs.loader.n=8", "search.epochs=1"], config_name="trace"
    )
    with pytest.raises(FloatingPointError, match="not finite"):
        trace_run(cfg)
    assert not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("method.lambda_mi=-1", "method.lambda_mi=-1: must be a number >= 0"),
        ("method.latent=0", "method.latent=0: must be an integer >= 1"),
    ],
)
def test_iclm_settings_are_checked_before_anything_runs(tmp_path, override, message):
    from catlit.errors import ConfigError
    from catlit.training.run import run

    with pytest.raises(ConfigError, match=message):
        run(compose_cfg(tmp_path, [*FAST, "method=iclm", override]))
    assert not (tmp_path / "run").exists()


def test_a_mistake_inside_a_loader_is_one_error_line(tmp_path, tiny_checkpoint):
    missing = tmp_path / "no_such.jsonl"
    result = cli("trace.py", "pairs=jsonl", f"pairs.loader.path={missing}", f"model.path={tiny_checkpoint}")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    (line,) = error_lines(result)
    assert "no_such.jsonl" in line


# ---- report.py reads what it can and names what it cannot ------------------------------------------
def test_report_skips_damaged_runs_by_name_and_ignores_traces(tmp_path, capsys):
    from catlit.report import main

    good = {"test/iid/acc": 0.9, "test/ood/acc": 0.6, "extra": [1, 2]}
    configs = {
        "a": ({"method": {"name": "baseline"}, "trainer": {}, "seed": 1}, json.dumps(good)),
        "b": (
            {"method": {"name": "baseline"}, "trainer": {}, "seed": 2},
            '{"test/iid/acc": 0.8',
        ),  # truncated
        "c": ({"method": {"name": "baseline"}, "trainer": {}, "seed": 3}, '{"test/iid/acc": NaN}'),
        "trace": ({"pairs": {}, "search": {}}, json.dumps({"pgbct/size": 3})),  # a trace.py run
    }
    for name, (config, metrics) in configs.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.yaml").write_text(json.dumps(config))
        (folder / "metrics.json").write_text(metrics)
    assert main([str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert f"skipped {tmp_path / 'b' / 'metrics.json'}: metrics.json is not valid JSON" in err
    assert f"skipped {tmp_path / 'c' / 'metrics.json'}: test/iid/acc=nan is not a finite number" in err
    assert "2 run(s) skipped" in err and "trace" not in err
    assert "1 runs, 1 settings" in out


# ---- bad input named in one line (file, field), never a traceback ---------------------------------
def test_a_model_folder_with_a_damaged_config_json_is_named(tmp_path, tiny_checkpoint):
    import shutil

    from catlit.models.loading import load_pretrained

    folder = tmp_path / "model"
    shutil.copytree(tiny_checkpoint, folder)
    (folder / "config.json").write_text('{"model_type": "llama", "hidd')
    with pytest.raises(ValueError, match=r"could not be read: .*config.json.* is not a valid JSON file"):
        load_pretrained(folder)


def test_a_damaged_selection_json_is_named(tmp_path):
    from catlit.hooks.selection import read_head_selection

    (tmp_path / "selection.json").write_text('{"components": [{"kind": "heads", "lay')
    (tmp_path / "metrics.json").write_text("{}")
    with pytest.raises(ValueError, match=f"{tmp_path / 'selection.json'} is damaged"):
        read_head_selection(tmp_path)


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"null", "expected a list of problems, got NoneType"), (b"[\xff\xfe]", "not UTF-8 text (byte 1")],
)
def test_an_acre_file_holding_null_or_other_bytes_is_named(tmp_path, content, message):
    from catlit.data.acre_benchmark import read_raw
    from catlit.data.example import DataError

    (tmp_path / "train.json").write_bytes(content)
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'train.json'}: {message}")):
        read_raw(tmp_path / "train.json")


def test_acre_files_with_a_test_split_missing_say_so(tmp_path, caplog):
    from catlit.data import acre_benchmark as bench
    from catlit.data.sources import ACREFilesSource

    rng = random.Random(1)
    splits = [(regime, split) for regime in bench.REGIMES for split in ("train", "val", "test")]
    bench.write_raw(tmp_path, {key: [bench.sample_problem(rng, *key) for _ in range(2)] for key in splits})
    (tmp_path / "Sys" / "test.json").unlink()
    with caplog.at_level("WARNING"):
        splits = ACREFilesSource(str(tmp_path)).load()
    assert "systematic" not in splits.test and "1 ACRE test split(s) missing" in caplog.text
    assert str(tmp_path / "Sys" / "test.json") in caplog.text


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("max_cause_share=abc", "max_cause_share='abc': must be a number in (0, 1]"),
        ("max_cause_share=0", "max_cause_share=0: must be a number in (0, 1]"),
        ("max_cause_share=-1", "max_cause_share=-1: must be a number in (0, 1]"),
    ],
)
def test_annotate_settings_are_checked_before_any_request(tmp_path, override, message):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"input": "Smoking: 9 Answer: ", "target": "High"}\n')
    args = [sys.executable, "annotate.py", f"input={rows}", override, f"paths.log_dir={tmp_path}"]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert message in done.stderr
    assert not (tmp_path / "annotations").exists()  # nothing asked, nothing written


def test_an_unset_api_key_variable_is_one_line(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"input": "Smoking: 9 Answer: ", "target": "High"}\n')
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    args = [sys.executable, "annotate.py", f"input={rows}", "annotator=openai", f"paths.log_dir={tmp_path}"]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("error:")]
    assert "annotator.api_key_env=OPENAI_API_KEY: that environment variable is not set" in line


def test_a_run_that_died_before_its_first_checkpoint_does_not_block_its_folder(tmp_path):
    """Its leftovers are kept aside and the rerun trains; a trace's likewise."""
    from catlit.tracing.run import run as trace_run

    run_dir = tmp_path / "run"
    (run_dir / "csv").mkdir(parents=True)
    (run_dir / "config.yaml").write_text("method: {name: cat}\n")  # what a run killed in epoch 0 left
    (run_dir / "csv" / "metrics.csv").write_text("step\n")
    _, _, metrics, _ = train(tmp_path)
    assert "test/iid/acc" in metrics
    (aside,) = run_dir.glob(".stopped-*")
    assert (aside / "config.yaml").read_text() == "method: {name: cat}\n" and (aside / "csv").is_dir()
    # a finished run is still refused, and so is one with a checkpoint to resume
    with pytest.raises(FileExistsError, match="already holds a run"):
        train(tmp_path)
    trace_dir = tmp_path / "trace"
    trace_dir.mkdir()
    (trace_dir / "config.yaml").write_text("seed: 1\n")  # a trace killed mid-search
    cfg = compose_cfg(tmp_path, ["model.path=/unused"], config_name="trace")
    cfg.paths.output_dir = str(trace_dir)
    with pytest.raises(FileNotFoundError, match="/unused"):  # got past the folder check
        trace_run(cfg)
    assert (next(trace_dir.glob(".stopped-*")) / "config.yaml").read_text() == "seed: 1\n"


def test_partial_files_of_killed_saves_are_removed_when_the_run_dir_is_claimed_again(tmp_path, capsys):
    from catlit.files import PARTIAL

    ckpts = tmp_path / "run" / "checkpoints"
    ckpts.mkdir(parents=True)
    (ckpts / "last.ckpt").write_bytes(b"whole")
    (ckpts / f".last.ckpt{PARTIAL}x1.ckpt.tmp").write_bytes(b"\0" * 1000)  # a kill during a save
    (tmp_path / "run" / f".model{PARTIAL}x2").mkdir()
    with RunDir(tmp_path / "run").claim(resume_from=str(ckpts / "last.ckpt")):
        pass
    assert sorted(p.name for p in ckpts.iterdir()) == ["last.ckpt"]
    assert not list((tmp_path / "run").glob(f".model{PARTIAL}*"))
    assert "removed 2 partial file(s) that killed saves left" in capsys.readouterr().out


# ---- shared filesystems: the lock file where flock is not supported --------------------------------
def test_without_flock_a_lock_file_refuses_a_live_run_and_takes_over_a_dead_ones(
    tmp_path, monkeypatch, capsys
):
    import json
    import socket

    from catlit.rundir import OWNER, RunDirBusy

    monkeypatch.setenv("CATLIT_RUN_LOCK", "file")  # as on Lustre mounted without flock
    run_dir = tmp_path / "run"
    with RunDir(run_dir).claim():
        held = json.loads((run_dir / OWNER).read_text())
        assert (held["host"], held["pid"]) == (socket.gethostname(), os.getpid())
        busy = rf"in use by another catlit run \(pid {os.getpid()} on "
        with pytest.raises(RunDirBusy, match=busy), RunDir(run_dir).claim():
            pass
    assert not (run_dir / OWNER).exists()  # released with the run

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run_dir / OWNER).write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid, "since": "t0"}))
    with RunDir(run_dir).claim():  # a stale lock of a dead process on this host: named, taken over
        assert json.loads((run_dir / OWNER).read_text())["pid"] == os.getpid()
    assert (
        f"a stale lock of pid {dead.pid} (started t0), which is dead; taking the lock over"
        in capsys.readouterr().out
    )

    (run_dir / OWNER).write_text(json.dumps({"host": "node7", "pid": 1, "since": "t0", "slurm_job": "99"}))
    with pytest.raises(RunDirBusy, match=r"pid 1 on node7 since t0"), RunDir(run_dir).claim():
        pass  # another host: whether it lives cannot be told, so it is refused
    monkeypatch.setenv("SLURM_JOB_ID", "99")  # ... unless it is this very SLURM job, requeued
    with RunDir(run_dir).claim():
        pass
    assert "this SLURM job's own (99, requeued)" in capsys.readouterr().out


def test_a_filesystem_without_flock_falls_back_to_the_lock_file(tmp_path, monkeypatch, capsys):
    import errno
    import fcntl

    from catlit.rundir import OWNER

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    with RunDir(tmp_path / "run").claim():
        assert (tmp_path / "run" / OWNER).is_file()
    assert (
        f"flock is not supported here (No locks available); locking with {OWNER} instead"
        in capsys.readouterr().out
    )
