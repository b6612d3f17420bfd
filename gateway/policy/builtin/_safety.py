"""The engines of ``llm-content-safety`` and the text it checks (docs/content-safety.md).

Three engines, chosen by the policy's ``backend-id``:

- ``AzureContentSafety``: the Azure AI Content Safety REST protocol (``text:analyze``, ``text:shieldPrompt``,
  api-version 2024-09-01) at the backend's URL, with the backend's credentials (``Ocp-Apim-Subscription-Key`` or an
  ``Authorization: Bearer`` header).
- ``OpenAiModeration``: the OpenAI-compatible moderation protocol (``POST /moderations``), its categories mapped to
  Hate, SelfHarm, Sexual and Violence (``MODERATION_CATEGORIES``), its scores to severities (``severity_of_score``).
- the built-in engine (``backend-id="builtin"``): no service; only the blocklists of the management plane.

Blocklists of the management plane (``gateway.blocklists``, in the snapshot) are matched locally by every engine; a
blocklist name the snapshot does not hold is passed to Azure (a blocklist of the Content Safety resource).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import orjson

from gateway.http.client import UpstreamError

if TYPE_CHECKING:
    from gateway.http.client import UpstreamPool
    from gateway.model import BackendTarget

__all__ = (
    "API_VERSION",
    "AZURE_MAX_CHARS",
    "BUILTIN_BACKEND",
    "CATEGORIES",
    "MODERATION_CATEGORIES",
    "Analysis",
    "AzureContentSafety",
    "Engine",
    "EngineError",
    "OpenAiModeration",
    "completion_text",
    "prompt_texts",
    "severity_of_score",
    "windows",
)

API_VERSION: Final = "2024-09-01"
AZURE_MAX_CHARS: Final = 10_000  # text:analyze takes at most 10k characters per request
BUILTIN_BACKEND: Final = "builtin"
CATEGORIES: Final = ("Hate", "SelfHarm", "Sexual", "Violence")
_QUERY: Final = f"api-version={API_VERSION}"
ENGINE_TIMEOUT: Final = 10.0  # seconds for one call to the engine (connect + answer)

# OpenAI moderation categories → the policy's categories. "illicit" and "illicit/violent" have no counterpart in
# the four harm categories and are not used; "harassment" is counted as Hate, as Azure's Hate category covers it.
MODERATION_CATEGORIES: Final[Mapping[str, str]] = {
    "hate": "Hate",
    "hate/threatening": "Hate",
    "harassment": "Hate",
    "harassment/threatening": "Hate",
    "self-harm": "SelfHarm",
    "self-harm/intent": "SelfHarm",
    "self-harm/instructions": "SelfHarm",
    "sexual": "Sexual",
    "sexual/minors": "Sexual",
    "violence": "Violence",
    "violence/graphic": "Violence",
}


class EngineError(Exception):
    """The engine could not answer (down, timed out, refused the credentials, or answered garbage)."""


@dataclass(frozen=True, slots=True)
class Analysis:
    """What an engine found in one text: the severity of each category, and a blocklist hit (its name)."""

    severities: Mapping[str, int]
    blocklist: str | None = None


def severity_of_score(score: float, eight_levels: bool) -> int:
    """A moderation score (0..1) as a Content Safety severity: 0..7 in eighths (EightSeverityLevels), or rounded
    down to 0, 2, 4, 6 (FourSeverityLevels). A threshold of 4 thus blocks a score of 0.5 and more."""
    level = min(7, max(0, int(score * 8)))
    return level if eight_levels else level - level % 2


def windows(text: str, size: int | None, overlap: int) -> list[str]:
    """``text`` in windows of ``size`` characters, each starting ``size - overlap`` after the previous one."""
    if size is None or len(text) <= size:
        return [text]
    step = size - overlap
    return [text[start : start + size] for start in range(0, len(text) - overlap, step)]


#
# The text of requests and responses
#


def _content_text(content: Any) -> Iterable[str]:
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict):
                text = part.get("text")
                if isinstance(text, str):
                    yield text
                elif isinstance(text, dict) and isinstance(text.get("value"), str):
                    yield text["value"]


def prompt_texts(body: Mapping[str, Any]) -> tuple[list[str], str]:
    """``(all texts, the user prompt)`` of a chat, completions, responses or Anthropic messages request: every
    message's text (``system`` given as a string or as blocks included), and the last user message's text."""
    texts: list[str] = []
    user = ""
    texts.extend(_content_text(body.get("system")))
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict):
                parts = list(_content_text(message.get("content")))
                texts.extend(parts)
                if message.get("role") == "user":
                    user = "\n".join(parts)
    for key in ("prompt", "input", "instructions"):
        value = body.get(key)
        if isinstance(value, str):
            texts.append(value)
            user = value if key != "instructions" else user
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, str):
                    texts.append(item)
                    user = item
                elif isinstance(item, dict):
                    parts = list(_content_text(item.get("content")))
                    texts.extend(parts)
                    if item.get("role") == "user":
                        user = "\n".join(parts)
    return texts, user


def _choice_texts(document: dict[str, Any], member: str) -> list[str]:
    """The texts of ``choices[].<member>.content`` (``message`` or ``delta``) and of ``choices[].text``."""
    texts: list[str] = []
    choices = document.get("choices")
    if isinstance(choices, list):
        for choice in choices:
            if isinstance(choice, dict):
                message = choice.get(member)
                if isinstance(message, dict):
                    content = message.get("content")
                    if isinstance(content, str):  # the common case, without _content_text's generator
                        texts.append(content)
                    else:
                        texts.extend(_content_text(content))
                if isinstance(choice.get("text"), str):
                    texts.append(choice["text"])
    return texts


def completion_text(document: Any) -> str:
    """The generated text of a chat completion, completion, responses or Anthropic messages response."""
    if not isinstance(document, dict):
        return ""
    texts = _choice_texts(document, "message")
    output = document.get("output")
    if isinstance(output, list):
        for item in output:
            if isinstance(item, dict):
                texts.extend(_content_text(item.get("content")))
    texts.extend(_content_text(document.get("content")))
    return "\n".join(texts)


def delta_text(event: Any) -> str:
    """The generated text carried by one streamed event (chat ``delta.content``, completions ``text``, responses
    ``response.output_text.delta``, Anthropic ``content_block_delta``)."""
    if not isinstance(event, dict):
        return ""
    texts = _choice_texts(event, "delta")
    kind = event.get("type")
    if kind == "response.output_text.delta" and isinstance(event.get("delta"), str):
        texts.append(event["delta"])
    elif kind == "content_block_delta":
        delta = event.get("delta")
        if isinstance(delta, dict) and isinstance(delta.get("text"), str):
            texts.append(delta["text"])
    return "".join(texts)


#
# Engines
#


class Engine:
    """A content-safety service. ``max_chars``: the longest text one call may carry (None: no limit)."""

    name: str = ""
    max_chars: int | None = None
    analyses: bool = True  # False: the engine has no harm classifier (only the local blocklists)
    shields: bool = False  # True: the engine detects prompt attacks

    async def analyze(
        self, pool: UpstreamPool, text: str, categories: Sequence[str], eight_levels: bool, blocklists: Sequence[str]
    ) -> Analysis:
        return Analysis({})

    async def shield(self, pool: UpstreamPool, user_prompt: str, documents: Sequence[str]) -> bool:
        raise EngineError(f"the {self.name} engine has no prompt-attack detection")


class BuiltinEngine(Engine):
    name = "builtin"
    analyses = False


class _HttpEngine(Engine):
    def __init__(self, target: BackendTarget) -> None:
        if target.origin is None:
            raise ValueError(f"a safety engine needs a single backend, not the pool '{target.name}'")
        self.target = target
        self.origin = target.origin

    async def _post(self, pool: UpstreamPool, path: str, document: Mapping[str, Any], query: str = "") -> Any:
        target = self.target
        headers = [(b"content-type", b"application/json"), (b"accept", b"application/json"), *target.headers]
        body = orjson.dumps(document)
        try:
            async with asyncio.timeout(ENGINE_TIMEOUT):
                request_target = target.url_for(path, query)
                response = await pool.request(self.origin, "POST", request_target, headers, body)
                try:
                    data = await response.read()
                finally:
                    await response.aclose()
        except (UpstreamError, TimeoutError, ValueError, OSError) as exc:
            raise EngineError(f"{self.name} engine at {target.url}: {type(exc).__name__}: {exc}") from None
        if response.status != 200:
            raise EngineError(f"{self.name} engine at {target.url} answered {response.status}")
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            raise EngineError(f"{self.name} engine at {target.url} answered with invalid JSON") from None


class AzureContentSafety(_HttpEngine):
    name = "azure-content-safety"
    max_chars = AZURE_MAX_CHARS
    shields = True

    async def analyze(
        self, pool: UpstreamPool, text: str, categories: Sequence[str], eight_levels: bool, blocklists: Sequence[str]
    ) -> Analysis:
        request: dict[str, Any] = {
            "text": text,
            "categories": list(categories or CATEGORIES),
            "outputType": "EightSeverityLevels" if eight_levels else "FourSeverityLevels",
        }
        if blocklists:
            request["blocklistNames"] = list(blocklists)
            request["haltOnBlocklistHit"] = True
        data = await self._post(pool, "/contentsafety/text:analyze", request, _QUERY)
        try:
            severities = {str(item["category"]): int(item["severity"]) for item in data.get("categoriesAnalysis", [])}
            matches = data.get("blocklistsMatch") or []
            hit = str(matches[0]["blocklistName"]) if matches else None
        except (AttributeError, KeyError, TypeError, ValueError, IndexError):
            raise EngineError(f"{self.name} engine: unexpected text:analyze answer") from None
        return Analysis(severities, hit)

    async def shield(self, pool: UpstreamPool, user_prompt: str, documents: Sequence[str]) -> bool:
        request = {"userPrompt": user_prompt, "documents": list(documents)}
        data = await self._post(pool, "/contentsafety/text:shieldPrompt", request, _QUERY)
        try:
            attacked = bool(data["userPromptAnalysis"]["attackDetected"])
            attacked = attacked or any(bool(doc["attackDetected"]) for doc in data.get("documentsAnalysis") or [])
        except (KeyError, TypeError):
            raise EngineError(f"{self.name} engine: unexpected text:shieldPrompt answer") from None
        return attacked


class OpenAiModeration(_HttpEngine):
    name = "openai-moderation"

    def __init__(self, target: BackendTarget) -> None:
        super().__init__(target)
        # a backend may point at the full URL (…/v1/moderations), as APIM's embeddings backends do
        self.path = "" if target.base_path.endswith("/moderations") else "/moderations"

    async def analyze(
        self, pool: UpstreamPool, text: str, categories: Sequence[str], eight_levels: bool, blocklists: Sequence[str]
    ) -> Analysis:
        data = await self._post(pool, self.path, {"input": text})
        severities: dict[str, int] = dict.fromkeys(CATEGORIES, 0)
        try:
            for result in data["results"]:
                for name, score in result["category_scores"].items():
                    category = MODERATION_CATEGORIES.get(name)
                    if category is not None:
                        level = severity_of_score(float(score), eight_levels)
                        severities[category] = max(severities[category], level)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise EngineError(f"{self.name} engine: unexpected /moderations answer") from None
        return Analysis(severities)


def engine_for(target: BackendTarget) -> Engine:
    """The engine a backend speaks: OpenAI moderation when its URL ends in ``/moderations`` or ``/v1``, else Azure
    AI Content Safety (``https://<name>.cognitiveservices.azure.com``)."""
    path = target.base_path
    if path.endswith("/moderations") or path.endswith("/v1"):
        return OpenAiModeration(target)
    return AzureContentSafety(target)
