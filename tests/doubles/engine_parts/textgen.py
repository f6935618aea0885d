"""Deterministic tokenizer and "model" of the fake engine (a test double, not a real LLM).

The generator is autoregressive over a rolling hash of all previous token ids, so it behaves
like greedy decoding: continuing from ``prompt + [t1]`` yields exactly the tokens that a plain
request for ``prompt`` yields after ``t1``. That lets tests compare a prefill/decode split
(NIXL or LMCache style) with a plain request byte for byte.
"""

from __future__ import annotations

import re
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

_MASK = (1 << 64) - 1
_WORD = re.compile(r"\w+|[^\w\s]")

# A fixed output vocabulary of pronounceable words; token id == index for generated tokens.
_CONS = "bdfghklmnprstvz"
_VOWELS = "aeiou"
_SYLLABLES = [c + v for c in _CONS for v in _VOWELS]
VOCAB: list[str] = [a + b for a in _SYLLABLES for b in _SYLLABLES][:1024]
VOCAB_SIZE = len(VOCAB)
_VOCAB_INDEX = {w: i for i, w in enumerate(VOCAB)}
# Ids of prompt words outside the output vocabulary live above it, spread by a stable hash.
_PROMPT_ID_SPAN = 30000

# Pre-encoded JSON strings for each generated token (with the leading space and quotes),
# so the streaming hot path concatenates bytes instead of encoding JSON per token.
TOKEN_TEXT: list[str] = [" " + w for w in VOCAB]
TOKEN_JSON: list[bytes] = [orjson.dumps(t) for t in TOKEN_TEXT]


def tokenize_text(text: str) -> list[int]:
    """Split on words and punctuation; each piece maps to a stable id (no PYTHONHASHSEED)."""
    ids: list[int] = []
    for piece in _WORD.findall(text):
        idx = _VOCAB_INDEX.get(piece)
        if idx is None:
            idx = VOCAB_SIZE + zlib.crc32(piece.encode()) % _PROMPT_ID_SPAN
        ids.append(idx)
    return ids


def _content_text(content: Any) -> str:
    """OpenAI message content: a string or a list of parts; only text parts count."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text", "")) for p in content if isinstance(p, dict) and "text" in p
        )
    return str(content)


def apply_chat_template(messages: Sequence[Any], add_generation_prompt: bool = True) -> str:
    """A tiny chat template, the same shape as the tiny real model's (see vllm-cpu.md)."""
    parts: list[str] = []
    for m in messages:
        role = m.get("role", "user") if isinstance(m, dict) else "user"
        content = _content_text(m.get("content") if isinstance(m, dict) else m)
        parts.append(f"<|{role}|>{content}<|end|>")
    if add_generation_prompt:
        parts.append("<|assistant|>")
    return "".join(parts)


def _mix(h: int) -> int:
    # splitmix64 finalizer: spreads the rolling state so consecutive tokens look random.
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & _MASK
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & _MASK
    return h ^ (h >> 33)


def _step(h: int, token: int) -> int:
    return (h * 1000003 + token + 1) & _MASK


def fold_prompt(tokens: Iterable[int], block_size: int) -> tuple[int, list[int]]:
    """Rolling state after the prompt, and the chained hash at every full block boundary."""
    h = 0x9E3779B97F4A7C15
    blocks: list[int] = []
    for n, t in enumerate(tokens, 1):
        h = _step(h, t)
        if n % block_size == 0:
            blocks.append(h)
    return h, blocks


def generate(state: int, count: int) -> list[int]:
    """Greedy continuation: ``count`` token ids from the rolling state after the prompt."""
    out: list[int] = []
    h = state
    for _ in range(count):
        t = _mix(h) % VOCAB_SIZE
        out.append(t)
        h = _step(h, t)
    return out


def detokenize(tokens: Iterable[int]) -> str:
    """Text of generated ids; ids outside the output vocabulary render as ``<id>``."""
    return "".join(TOKEN_TEXT[t] if 0 <= t < VOCAB_SIZE else f" <{t}>" for t in tokens)


class PrefixCache:
    """Bounded LRU of block hashes, standing in for vLLM's automatic prefix caching."""

    def __init__(self, capacity_blocks: int) -> None:
        self._blocks: OrderedDict[int, None] = OrderedDict()
        self.capacity = max(1, capacity_blocks)

    def match(self, blocks: Sequence[int], prompt_len: int, block_size: int) -> int:
        """Tokens served from cache: leading cached blocks, never the whole prompt."""
        usable = (prompt_len - 1) // block_size if prompt_len > 0 else 0
        hits = 0
        for b in blocks[:usable]:
            if b not in self._blocks:
                break
            self._blocks.move_to_end(b)
            hits += 1
        return hits * block_size

    def insert(self, blocks: Sequence[int]) -> None:
        for b in blocks:
            self._blocks[b] = None
            self._blocks.move_to_end(b)
        while len(self._blocks) > self.capacity:
            self._blocks.popitem(last=False)

    def clear(self) -> None:
        self._blocks.clear()
