"""The annotation prompt: instructions, hand-written demonstrations (human priors), then the row."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from catlit.data.example import Example

SYSTEM = (
    "You annotate causal structure in text. Given a problem and its answer, list which phrases "
    "(causes) determine which other phrases (effects), especially the final answer. Reply with JSON "
    'only: a list of objects {"effect phrase": ["cause phrase", ...]}. Copy every phrase verbatim '
    "from the text, and only name causes that appear before their effect."
)
TEMPLATE = "Text:\n{input}{target}\n\nAnnotation:"


@dataclass
class PromptBuilder:
    system: str = SYSTEM
    template: str = TEMPLATE
    demos: list[dict] = field(default_factory=list)  # {input, target, important}

    def __post_init__(self) -> None:
        for i, demo in enumerate(self.demos):
            missing = {"input", "target", "important"} - set(demo)
            if missing:
                raise ValueError(f"annotation demo {i} lacks {sorted(missing)}")
        try:
            self.template.format(input="", target="")
        except (KeyError, IndexError) as err:
            raise ValueError(f"prompt template may use only {{input}} and {{target}}: {err}") from None

    def fingerprint(self) -> str:
        """A hash of everything the annotator is shown besides the row: instructions, template, demos."""
        text = json.dumps([self.system, self.template, self.demos], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def messages(self, ex: Example) -> list[dict[str, str]]:
        out = [{"role": "system", "content": self.system}]
        for demo in self.demos:
            out.append(
                {"role": "user", "content": self.template.format(input=demo["input"], target=demo["target"])}
            )
            out.append({"role": "assistant", "content": json.dumps(demo["important"], ensure_ascii=False)})
        out.append({"role": "user", "content": self.template.format(input=ex.input, target=ex.target)})
        return out


def render_plain(messages: list[dict[str, str]]) -> str:
    """For tokenizers without a chat template: a plain transcript ending where the reply begins."""
    parts = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n\n".join(parts) + "\n\nAssistant:"
