"""Secrets never reach a file: config values that look like keys are written as "***".

A value is a secret when its key's last word is key, token, secret, password, passwd or credential(s)
(`api_key`, `hf_token`, `client_secret`; not a tokenizer's `pad_token` nor `max_new_tokens`), or when
a key ending in `_env`, which names an environment variable, holds something that is no variable
name (a key pasted in its place). `redact` applies the rule to a config, `redact_override` to a
command-line override (a secret inside a dict or list value too). Every file catlit or Hydra writes
goes through it: the `.hydra/` copies are written by `write_hydra_files` once the run owns its
directory (`hydra.output_subdir` is null so that Hydra writes no plain copy first), the sweep's
`multirun.yaml` by `RedactedHydraFiles`, the run's `config.yaml` by `catlit.rundir`, wandb's config by
the training recipe; the command line that wandb records is scrubbed of them (`scrub_argv`), and the
console (Hydra's own error lines, tracebacks) goes through `RedactingStream` (`guard_streams`).
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
    """`+annotator.api_key=sk-...` -> `+annotator.api_key=***`, and a secret inside a dict or list
    value (`+logger.wandb.settings={api_key: sk-...}`) likewise; anything else unchanged."""
    for value in sorted(_secret_values([text]), key=len, reverse=True):
        key, _, rest = text.partition("=")
        text = f"{key}={rest.replace(value, REDACTED)}"
    return text


_SEEN: set[str] = set()  # secret values taken off the command line, for `redact_text`


def _secret_values(args: list[str]) -> set[str]:
    """The secret values an override list carries: `key=value` with a secret key, and secret keys'
    values inside a dict or list value (`settings={api_key: ...}`)."""
    found = set()
    for arg in args:
        key, sep, value = arg.partition("=")
        if not (sep and value):
            continue
        if is_secret(key.lstrip("+~").split(".")[-1], value):
            found.add(value)
        elif value.lstrip()[:1] in "{[":
            found |= _nested_secrets(_parse_value(value))
    return found


def _parse_value(value: str) -> Any:
    """A dict or list override value as Hydra reads it (its flow syntax is YAML's for these)."""
    import yaml

    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return None


def _nested_secrets(node: Any, key: str = "") -> set[str]:
    if isinstance(node, dict):
        return set().union(*(_nested_secrets(v, str(k)) for k, v in node.items()))
    if isinstance(node, list):
        return set().union(*(_nested_secrets(v, key) for v in node))
    if node is not None and not isinstance(node, dict | list) and is_secret(key, str(node)):
        return {str(node)}
    return set()


def redact_text(text: str) -> str:
    """A message with the values of secret overrides on this command line taken out."""
    for value in _SEEN | _secret_values(sys.argv[1:]):
        text = text.replace(value, REDACTED)
    return text


def scrub_argv() -> None:
    """Redact secret overrides in this process's command line (tools such as wandb record it)."""
    _SEEN.update(_secret_values(sys.argv[1:]))
    sys.argv[1:] = [redact_override(a) for a in sys.argv[1:]]


class RedactingStream:
    """stdout / stderr with this command line's secret values taken out of everything written:
    Hydra's "Error executing job with overrides" line, tracebacks and log lines that quote them."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(redact_text(text) if _SEEN else text)
        return len(text)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def guard_streams() -> None:
    """Before Hydra reads the command line: note its secret values and redact them from the console."""
    _SEEN.update(_secret_values(sys.argv[1:]))
    if _SEEN:
        if not isinstance(sys.stdout, RedactingStream):
            sys.stdout = RedactingStream(sys.stdout)
        if not isinstance(sys.stderr, RedactingStream):
            sys.stderr = RedactingStream(sys.stderr)


def check_env_name(key: str, value: str | None) -> None:
    """A `*_env` setting must name an environment variable; the value is not echoed (it may be a key)."""
    if value and not ENV_NAME.match(value):
        raise ValueError(
            f"{key} must name an environment variable (letters, digits, _), and this value does not look "
            "like one: it is not shown here, in case it is the key itself; put the key in an environment "
            f"variable and set {key} to that variable's name"
        )


def write_hydra_files(run_dir, config: DictConfig) -> None:
    """`.hydra/config.yaml`, `hydra.yaml` and `overrides.yaml` of the running Hydra job, every secret
    redacted, into `run_dir`; written by the run once it owns the directory (`catlit.rundir`), so a run
    that is refused never rewrites another run's copies. Outside a Hydra job (tests composing the
    config), nothing."""
    from pathlib import Path

    from hydra.core.hydra_config import HydraConfig

    from catlit.files import write_text

    if not HydraConfig.initialized():
        return
    hydra = HydraConfig.get()
    if OmegaConf.select(hydra, "runtime.output_dir", default=None) != str(run_dir):
        return
    task = {k: v for k, v in OmegaConf.to_container(config, resolve=False).items() if k != "hydra"}
    values = _SEEN | _secret_values(list(hydra.overrides.task))
    files = {
        "config.yaml": redact(task, values),
        "hydra.yaml": {"hydra": redact(OmegaConf.to_container(hydra, resolve=False), values)},
        "overrides.yaml": [redact_override(o) for o in hydra.overrides.task],
    }
    for name, payload in files.items():
        write_text(Path(run_dir) / ".hydra" / name, OmegaConf.to_yaml(OmegaConf.create(payload)))


class RedactedHydraFiles(Callback):
    """A Hydra callback: redacts the sweep's `multirun.yaml` (each run's `.hydra/` copies are written
    by `write_hydra_files` once the run owns its directory; `hydra.output_subdir` null keeps Hydra from
    writing plain ones)."""

    def on_job_start(self, config: DictConfig, **_: Any) -> None:
        import os
        from pathlib import Path

        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        from catlit.files import write_text

        if os.environ.get("LOCAL_RANK", "0") != "0":  # a DDP child joins the job its rank 0 wrote
            return
        hydra = HydraConfig.get()
        values = _SEEN | _secret_values(list(hydra.overrides.task))
        if hydra.mode == RunMode.MULTIRUN:
            sweep = Path(hydra.sweep.dir) / "multirun.yaml"
            if sweep.is_file():
                write_text(sweep, OmegaConf.to_yaml(OmegaConf.create(redact(OmegaConf.load(sweep), values))))
