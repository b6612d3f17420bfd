"""Deterministic model output: completion words, token estimates and embedding vectors.

Everything here is a pure function of its arguments, so tests can predict every answer of the mock.
"""

import base64
import hashlib
import math
import struct
from typing import Any

__all__ = (
    "completion_words",
    "count_words",
    "embedding",
    "embedding_base64",
    "input_tokens",
    "prompt_tokens",
    "text_of",
)

# Real chat models charge a few tokens per message for the role markers; the mock does the same.
TOKENS_PER_MESSAGE = 3


def completion_words(n: int) -> list[str]:
    """The completion as stream deltas: ``["word0", " word1", " word2", …]``; joined they are the full text."""
    return ["word0" if i == 0 else f" word{i}" for i in range(n)]


def count_words(text: str) -> int:
    return len(text.split())


def text_of(content: Any) -> str:
    """The text of a message ``content``: a string, or a list of parts of which the ``text`` ones count."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = (part.get("text") for part in content if isinstance(part, dict))
        return " ".join(text for text in texts if isinstance(text, str))
    return ""


def prompt_tokens(messages: list[Any]) -> int:
    """Estimate: the whitespace-separated words of every message's content plus 3 per message."""
    total = 0
    for message in messages:
        total += TOKENS_PER_MESSAGE
        if isinstance(message, dict):
            total += count_words(text_of(message.get("content")))
    return total


def input_tokens(value: Any) -> int:
    """Token estimate for a completions ``prompt``, an embeddings ``input`` or a responses ``input``."""
    if isinstance(value, str):
        return count_words(value)
    if isinstance(value, list):
        if all(isinstance(item, int) for item in value):
            return len(value)
        total = 0
        for item in value:
            if isinstance(item, dict):
                total += TOKENS_PER_MESSAGE + count_words(text_of(item.get("content")))
            else:
                total += input_tokens(item)
        return total
    return 0


def embedding(text: str, dim: int) -> list[float]:
    """A unit vector derived from SHA-256 of ``text``: equal inputs give equal vectors, others differ."""
    raw: list[float] = []
    counter = 0
    while len(raw) < dim:
        digest = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        raw.extend((byte - 127.5) / 127.5 for byte in digest)
        counter += 1
    raw = raw[:dim]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    # float32 precision, so the float and the base64 encodings carry the same numbers
    return [struct.unpack("<f", struct.pack("<f", x / norm))[0] for x in raw]


def embedding_base64(vector: list[float]) -> str:
    """The encoding OpenAI uses for ``encoding_format=base64``: little-endian float32, base64."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
