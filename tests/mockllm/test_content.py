"""The deterministic generators behind the mock's answers."""

import base64
import math
import struct

from mockllm import content


def test_completion_words_join_to_numbered_words():
    assert "".join(content.completion_words(3)) == "word0 word1 word2"
    assert content.completion_words(0) == []


def test_prompt_tokens_counts_words_plus_three_per_message():
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "one two three"}, {"type": "image_url"}]},
    ]
    assert content.prompt_tokens(messages) == (3 + 2) + (3 + 3)


def test_input_tokens_for_strings_lists_and_token_arrays():
    assert content.input_tokens("a b c") == 3
    assert content.input_tokens(["a b", "c"]) == 3
    assert content.input_tokens([1, 2, 3, 4]) == 4
    assert content.input_tokens(None) == 0


def test_embedding_is_a_deterministic_unit_vector():
    first, again, other = content.embedding("hello", 8), content.embedding("hello", 8), content.embedding("bye", 8)
    assert first == again
    assert first != other
    assert len(content.embedding("x", 100)) == 100
    assert math.isclose(math.sqrt(sum(x * x for x in first)), 1.0, rel_tol=1e-5)


def test_base64_round_trips_float32():
    vector = content.embedding("hello", 8)
    decoded = struct.unpack("<8f", base64.b64decode(content.embedding_base64(vector)))
    assert list(decoded) == vector
