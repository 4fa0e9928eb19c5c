"""Secrets never reach a file: config values that look like keys are written as "***".

A value is a secret when its key's last word is key, token, secret, password, passwd or credential(s)
(`api_key`, `hf_token`, `client_secret`; not a tokenizer's `pad_token` nor `max_new_tokens`), or when
a key ending in `_env`, which names an environment variable, holds something that is no variable
name (a key pasted in its place). `redact` applies the rule to a config, `redact_override` to a
command-line override. Every file catlit or Hydra writes goes through it: Hydra's own `.hydra/`
copies are written by `RedactedHydraFiles` (a Hydra callback; `hydra.output_subdir` is null so that
Hydra writes no plain copy first), the run's `config.yaml` by `catlit.rundir`, wandb's config by the
training recipe, and the command line that wandb records is scrubbed of them (`scrub_argv`).
"""

from __future__ import annotations

import re
import sys
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, ListConfig, OmegaConf

REDACTED = "***"
SECRET_WORDS = {"key", "apikey", "token", "secret", "password", "passwd", "credential", "credentials"}
NAMED_TOKENS = {"pad", "bos", "eos", "unk", "sep", "cls", "mask"}  # a tokenizer's tokens, not secrets
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def is_secret_key(key: str) -> bool:
    words = [w for w in re.split(r"[^a-z0-9]+", str(key).lower()) if w]
    if not words or words[-1] not in SECRET_WORDS:
        return False
    return not (words[-1] == "token" and len(words) > 1 and words[-2] in NAMED_TOKENS)


def is_secret(key: str, value: Any) -> bool:
    if not isinstance(value, str) or value == "":
        return False
    if is_secret_key(key):
        return True
    return str(key).lower().endswith("_env") and not ENV_NAME.match(value)


def redact(node: Any, values: set[str] = frozenset()) -> Any:
    """A plain copy of a config (DictConfig, dict, list) with every secret value replaced, and the
    known secret `values` taken out of any other string that quotes them (Hydra's override_dirname)."""
    if isinstance(node, DictConfig | ListConfig):
        node = OmegaConf.to_container(node, resolve=False)
    if isinstance(node, dict):
        return {k: REDACTED if is_secret(k, v) else redact(v, values) for k, v in node.items()}
    if isinstance(node, list):
        return [redact_override(v) if isinstance(v, str) else redact(v, values) for v in node]
    if isinstance(node, str):
        for value in values:
            node = node.replace(value, REDACTED)
    return node


def redact_override(text: str) -> str:
    """`+annotator.api_key=sk-...` -> `+annotator.api_key=***` (anything else unchanged)."""
    key, sep, value = text.partition("=")
    if sep and is_secret(key.lstrip("+~").split(".")[-1], value):
        return f"{key}={REDACTED}"
    return text


_SEEN: set[str] = set()  # secret values taken off the command line, for `redact_text`


def _secret_values(args: list[str]) -> set[str]:
    found = set()
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and value and is_secret(key.lstrip("+~").split(".")[-1], value):
            found.add(value)
    return found


def redact_text(text: str) -> str:
    """A message with the values of secret overrides on this command line taken out."""
    for value in _SEEN | _secret_values(sys.argv[1:]):
        text = text.replace(value, REDACTED)
    return text


def scrub_argv() -> None:
    """Redact secret overrides in this process's command line (tools such as wandb record it)."""
    _SEEN.update(_secret_values(sys.argv[1:]))
    sys.argv[1:] = [redact_override(a) for a in sys.argv[1:]]


def check_env_name(key: str, value: str | None) -> None:
    """A `*_env` setting must name an environment variable; the value is not echoed (it may be a key)."""
    if value and not ENV_NAME.match(value):
        raise ValueError(
            f"{key} must name an environment variable (letters, digits, _), and this value does not look "
            "like one: it is not shown here, in case it is the key itself; put the key in an environment "
            f"variable and set {key} to that variable's name"
        )


class RedactedHydraFiles(Callback):
    """A Hydra callback: writes `.hydra/config.yaml`, `hydra.yaml` and `overrides.yaml` into the run
    directory with secrets redacted (`hydra.output_subdir` null keeps Hydra from writing plain ones),
    and redacts the sweep's `multirun.yaml`."""

    def on_job_start(self, config: DictConfig, **_: Any) -> None:
        import os
        from pathlib import Path

        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        from catlit.files import write_text

        if os.environ.get("LOCAL_RANK", "0") != "0":  # a DDP child joins the job its rank 0 wrote
            return
        hydra = HydraConfig.get()
        out = Path(hydra.runtime.output_dir) / ".hydra"

        task = {k: v for k, v in OmegaConf.to_container(config, resolve=False).items() if k != "hydra"}
        values = _SEEN | _secret_values(list(hydra.overrides.task))
        files = {
            "config.yaml": redact(task, values),
            "hydra.yaml": {"hydra": redact(OmegaConf.to_container(hydra, resolve=False), values)},
            "overrides.yaml": [redact_override(o) for o in hydra.overrides.task],
        }
        for name, payload in files.items():
            write_text(out / name, OmegaConf.to_yaml(OmegaConf.create(payload)))
        if hydra.mode == RunMode.MULTIRUN:
            sweep = Path(hydra.sweep.dir) / "multirun.yaml"
            if sweep.is_file():
                write_text(sweep, OmegaConf.to_yaml(OmegaConf.create(redact(OmegaConf.load(sweep), values))))
