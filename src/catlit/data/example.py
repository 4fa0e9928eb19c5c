"""The one record every source produces and every later stage consumes."""

from __future__ import annotations

from dataclasses import dataclass, field


class DataError(ValueError):
    """Bad input data; the message names the file, line and field."""


@dataclass(frozen=True)
class CausalLink:
    """One `important` entry: an effect phrase and the cause phrases that produce it."""

    effect: str
    causes: tuple[str, ...]


@dataclass(frozen=True)
class Example:
    """A prompt, its answer and (for training) its causal annotations.

    `origin` is "file:line" (or "generator:index") so later stages can point back at the row.
    """

    input: str
    target: str
    important: tuple[CausalLink, ...] = ()
    origin: str = "?"
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def text(self) -> str:
        return self.input + self.target

    def important_json(self) -> list[dict[str, list[str]]]:
        """`important` in the released format: `[{effect: [cause, ...]}, ...]`."""
        return [{link.effect: list(link.causes)} for link in self.important]


def parse_important(
    value, where: str, on_error: str = "raise", skipped: list[str] | None = None
) -> tuple[CausalLink, ...]:
    """Validate the released `important` format: `[{effect: [cause, ...]}, ...]`.

    Accepted variants that occur in the released files and are unambiguous: a single cause string
    instead of a list, an object with several effect keys (one link each), and an effect with no
    causes. Anything else raises a DataError naming `where` and the field, or, with
    `on_error="skip"`, drops that entry and appends its location to `skipped` (so it is counted).
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if value is None:
        return ()
    if not isinstance(value, list):
        raise DataError(
            f"{where}: field 'important' must be a list of {{effect: [causes]}} objects, "
            f"got {type(value).__name__}"
        )
    links = []
    for i, entry in enumerate(value):
        try:
            links += _parse_entry(entry, f"{where}: field 'important[{i}]'")
        except DataError:
            if on_error == "raise":
                raise
            if skipped is not None:
                skipped.append(f"{where}: important[{i}]")
    return tuple(links)


def _parse_entry(entry, field: str) -> list[CausalLink]:
    if not isinstance(entry, dict) or not entry:
        raise DataError(f"{field} must be a non-empty {{effect: [causes]}} object, got {entry!r}")
    links = []
    for effect, causes in entry.items():
        if isinstance(causes, str):
            causes = [causes]
        if not isinstance(causes, list) or not all(isinstance(c, str) for c in causes):
            raise DataError(
                f"{field}[{effect!r}] must be a list of cause strings, got "
                f"{type(causes).__name__}: {str(causes)[:120]}"
            )
        if not effect.strip() or not all(c.strip() for c in causes):
            raise DataError(f"{field} has an empty phrase: {entry!r}")
        links.append(CausalLink(effect=effect, causes=tuple(causes)))
    return links
