"""Is a checkpoint file whole? A safetensors file states its own length (an 8-byte header size, a JSON
header, then tensors whose byte ranges the header lists), so a truncated or padded file is found without
loading it, and named, where safetensors itself raises an error that names no file."""

from __future__ import annotations

import json
from pathlib import Path


def safetensors_problem(path: Path) -> str | None:
    """What is wrong with `path` as a safetensors file, or None if its length is what it says."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as handle:
            header_len = int.from_bytes(handle.read(8), "little")
            if size < 8 or 8 + header_len > size:
                return f"{path} is truncated ({size} bytes, shorter than its own header)"
            header = json.loads(handle.read(header_len))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except (ValueError, KeyError, TypeError, IndexError) as err:
        return f"{path} is not a readable safetensors file ({type(err).__name__})"
    if 8 + header_len + end != size:
        return f"{path} has {size} bytes where its header says {8 + header_len + end}: truncated or damaged"
    return None


def check_weights(folder: str | Path, fix: str) -> None:
    """Every safetensors file in `folder` whole, or an error naming the first that is not and `fix`."""
    for path in sorted(Path(folder).glob("*.safetensors")):
        problem = safetensors_problem(path)
        if problem:
            raise ValueError(f"{problem}; {fix}")
