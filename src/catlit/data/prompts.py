"""How a prompt meets the model: `raw` (the row's text as it is, as the CAT authors' train_general.py
feeds every model, instruct ones included) or `chat` (the row as one turn of the tokenizer's chat
template: the input as the user's message, the target as the assistant's reply, closed by EOS).

An instruct model asked a raw question often answers nothing at all (SmolLM2-135M-Instruct ends
"Question: What is the capital of France?\\nAnswer:" at once with <|im_end|>); in its chat template
it says "Paris". Causal masks are unaffected: phrases are found in the text wherever the template put
them, and the template's own text never holds an annotated phrase before the row's.
"""

from __future__ import annotations

import dataclasses

from catlit.data.example import Example
from catlit.errors import ConfigError

FORMATS = ("raw", "chat")


def check_format(prompt_format: str) -> str:
    if prompt_format not in FORMATS:
        raise ConfigError(f"data.prompt_format={prompt_format!r}: must be one of {list(FORMATS)}")
    return prompt_format


def as_chat(ex: Example, tokenizer) -> Example:
    """`ex` as one chat turn in `tokenizer`'s template (with the assistant's header at the end)."""
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": ex.input.strip()}], tokenize=False, add_generation_prompt=True
    )
    bos = tokenizer.bos_token
    if bos and prompt.startswith(bos) and _adds_bos(tokenizer):  # the tokenizer puts it there itself
        prompt = prompt[len(bos) :]
    return dataclasses.replace(ex, input=prompt, target=ex.target.lstrip())


def formatter(prompt_format: str, tokenizer):
    """Example -> Example for `prompt_format`; an error naming the tokenizer if it has no template."""
    if check_format(prompt_format) == "raw":
        return lambda ex: ex
    if not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", type(tokenizer).__name__)
        raise ConfigError(f"data.prompt_format=chat: the tokenizer of {name} has no chat template")
    return lambda ex: as_chat(ex, tokenizer)


def _adds_bos(tokenizer) -> bool:
    ids = tokenizer("x", add_special_tokens=True)["input_ids"]
    return bool(ids) and tokenizer.bos_token_id is not None and ids[0] == tokenizer.bos_token_id
