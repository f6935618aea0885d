"""The features of a request that routing decisions look at."""

from __future__ import annotations

from dataclasses import dataclass

# Routers without a tokenizer estimate tokens from characters (llm-d and Dynamo use 4).
CHARS_PER_TOKEN = 4


@dataclass(frozen=True, slots=True)
class RequestFeatures:
    """Model, optional session key, and the prompt: its text (for guesses and size estimates)
    and, when the router tokenized it, its exact length and the hashes of its full KV blocks
    as the engines compute them (for the KV-event index)."""

    model: str
    session: str | None = None
    prompt: str = ""
    prompt_tokens: int | None = None
    block_hashes: tuple[int, ...] = ()
    block_size: int = 0

    @property
    def estimated_tokens(self) -> int:
        if self.prompt_tokens is not None:
            return self.prompt_tokens
        return (len(self.prompt) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN
