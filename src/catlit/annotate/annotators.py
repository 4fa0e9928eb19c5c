"""Annotators: turn examples into proposed `important` links (validated later by the pipeline).

- `rules`: the STG generators' own causal structure (no model).
- `openai`: any OpenAI-compatible chat-completions endpoint, bounded concurrency, retries with
  backoff on 429 / 5xx / timeouts, and a re-ask when the reply holds no parseable JSON.
- `hf`: a local HF causal LM by path, batched greedy generation.
Each returns one `Proposal` per example; a failure is reported in it, never raised for one row.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import re
from collections import Counter
from dataclasses import dataclass, field

import torch

from catlit.annotate.parse import extract_json
from catlit.annotate.prompt import PromptBuilder, render_plain
from catlit.data.example import CausalLink, DataError, Example, parse_important
from catlit.errors import ConfigError
from catlit.secrets import check_env_name

log = logging.getLogger(__name__)


@dataclass
class Proposal:
    links: tuple[CausalLink, ...] | None = None
    error: str | None = None
    counts: Counter = field(default_factory=Counter)


def proposal_from_reply(reply: str | None, where: str) -> Proposal:
    value = extract_json(reply)
    if value is None:
        return Proposal(error="no JSON annotation in the reply", counts=Counter(malformed_replies=1))
    skipped: list[str] = []
    try:
        links = parse_important(value, where, on_error="skip", skipped=skipped)
    except DataError as err:
        return Proposal(error=str(err), counts=Counter(malformed_replies=1))
    return Proposal(links=links, counts=Counter(entries_malformed=len(skipped)))


# ---- rules -------------------------------------------------------------------------------------
class RulesAnnotator:
    """The generator's structure: the target is the effect; the causal variables' "Name: value"
    strings (or bare values) in text order are its causes."""

    batch_size, concurrency = 1024, 1

    def __init__(
        self, causal_names: list[str], value_only: bool = False, prompt: PromptBuilder | None = None
    ):
        del prompt  # rules need no prompt; accepted so every annotator is built the same way
        if not causal_names:
            raise ValueError("annotator.causal_names is empty")
        self.causal_names, self.value_only = list(causal_names), value_only
        names = "|".join(re.escape(n) for n in self.causal_names)
        self.pattern = re.compile(rf"(?<![A-Za-z])({names}): (-?[\d.]+)")

    async def annotate(self, examples: list[Example]) -> list[Proposal]:
        out = []
        for ex in examples:
            found = self.pattern.findall(ex.input)
            if not found:
                out.append(Proposal(error=f"none of {self.causal_names} in the input"))
                continue
            causes = tuple(dict.fromkeys(v if self.value_only else f"{n}: {v}" for n, v in found))
            out.append(Proposal(links=(CausalLink(ex.target.strip(), causes),)))
        return out


# ---- OpenAI-compatible endpoint ----------------------------------------------------------------
class OpenAIAnnotator:
    batch_size = 1

    def __init__(
        self,
        prompt: PromptBuilder,
        model: str,
        base_url: str | None = None,
        api_key_env: str | None = "OPENAI_API_KEY",
        concurrency: int = 4,
        max_retries: int = 5,
        parse_retries: int = 2,
        timeout: float = 60.0,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        temperature: float = 0.0,
        max_tokens: int = 1024,
    ):
        import openai

        check_env_name("annotator.api_key_env", api_key_env)
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise ConfigError(
                    f"annotator.api_key_env={api_key_env}: that environment variable is not set "
                    "(API keys are read from the environment only)"
                )
        else:
            key = "unused"  # local servers that need no key
        self.openai, self._secret = openai, key if api_key_env else None
        self.client = openai.AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=timeout)
        self.prompt, self.model = prompt, model
        self.concurrency, self.max_retries, self.parse_retries = concurrency, max_retries, parse_retries
        self.backoff, self.max_backoff = backoff, max_backoff
        self.temperature, self.max_tokens = temperature, max_tokens

    async def annotate(self, examples: list[Example]) -> list[Proposal]:
        return [await self._one(ex) for ex in examples]

    def _delay(self, attempt: int, err: Exception) -> float:
        retry_after = getattr(getattr(err, "response", None), "headers", {}).get("retry-after")
        if retry_after is not None:
            try:
                return min(float(retry_after), self.max_backoff)
            except ValueError:
                pass
        return min(self.backoff * 2**attempt, self.max_backoff) * (0.5 + random.random() / 2)

    def redact(self, text: str) -> str:
        """Error text with the API key removed: servers echo request headers into error messages."""
        if self._secret:
            text = text.replace(self._secret, "[redacted]")
        return re.sub(r"(?i)(bearer\s+)\S+", r"\1[redacted]", text)

    async def _one(self, ex: Example) -> Proposal:
        counts, attempt, parse_attempt = Counter(), 0, 0
        transient = (
            self.openai.RateLimitError,
            self.openai.InternalServerError,
            self.openai.APITimeoutError,
            self.openai.APIConnectionError,
            self.openai.APIResponseValidationError,
            json.JSONDecodeError,  # a 200 whose body is not JSON
            InvalidResponse,  # a 200 whose body is not a chat completion
        )
        while True:
            try:
                response = await self.client.chat.completions.create(
                    model=self.model,
                    messages=self.prompt.messages(ex),
                    temperature=self.temperature,
                    max_tokens=self.max_tokens,
                )
                reply = reply_text(response)
            except transient as err:
                counts[f"api_{type(err).__name__}"] += 1
                if attempt >= self.max_retries:
                    detail = (
                        f": {self.redact(str(err))[:200]}"
                        if not isinstance(err, self.openai.APIError)
                        else ""
                    )
                    return Proposal(
                        error=f"{type(err).__name__} after {attempt + 1} attempts{detail}", counts=counts
                    )
                await asyncio.sleep(self._delay(attempt, err))
                attempt += 1
                continue
            except (self.openai.AuthenticationError, self.openai.PermissionDeniedError) as err:
                # every later request would be refused too: stop the run at the first one
                raise AnnotatorRefused(
                    f"the endpoint refused the credentials (HTTP {err.status_code}: "
                    f"{self.redact(str(err))[:160]}); the rows written so far are kept and a rerun "
                    "resumes after them"
                ) from None
            except self.openai.APIStatusError as err:  # other 4xx: retrying will not help
                counts[f"api_status_{err.status_code}"] += 1
                return Proposal(error=f"HTTP {err.status_code}: {self.redact(str(err))[:200]}", counts=counts)
            proposal = proposal_from_reply(reply, ex.origin)
            if proposal.links is not None or parse_attempt >= self.parse_retries:
                proposal.counts.update(counts)
                return proposal
            counts.update(proposal.counts)  # the malformed reply; ask again
            parse_attempt += 1


class AnnotatorRefused(PermissionError):
    """The annotator's service refused the credentials: no row can succeed, so the run stops."""


class InvalidResponse(Exception):
    """A reply that is not a chat completion (an HTML page, a truncated or foreign JSON body)."""


def reply_text(response) -> str | None:
    """The assistant's text from a chat-completions response; InvalidResponse for anything else."""
    try:
        choices = response.choices
        return choices[0].message.content if choices else None
    except (AttributeError, IndexError, KeyError, TypeError) as err:
        raise InvalidResponse(
            f"not a chat completion ({type(response).__name__}): {str(response)[:120]!r}"
        ) from err


# ---- local HF model ----------------------------------------------------------------------------
class HFAnnotator:
    concurrency = 1

    def __init__(
        self,
        prompt: PromptBuilder,
        path: str,
        batch_size: int = 8,
        max_new_tokens: int = 256,
        dtype: str = "float32",
        device: str = "cpu",
        gguf_file: str | None = None,
    ):
        from catlit.models.loading import load_pretrained

        self.model, self.tokenizer = load_pretrained(path, dtype=dtype, gguf_file=gguf_file)
        self.model.to(device).eval()
        self.prompt, self.batch_size, self.max_new_tokens, self.device = (
            prompt,
            batch_size,
            max_new_tokens,
            device,
        )
        self.tokenizer.padding_side = "left"

    def _text(self, ex: Example) -> str:
        messages = self.prompt.messages(ex)
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return render_plain(messages)

    async def annotate(self, examples: list[Example]) -> list[Proposal]:
        batch = self.tokenizer([self._text(ex) for ex in examples], return_tensors="pt", padding=True).to(
            self.device
        )
        with torch.no_grad():
            out = self.model.generate(
                **batch,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        replies = self.tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
        return [proposal_from_reply(reply, ex.origin) for reply, ex in zip(replies, examples)]
