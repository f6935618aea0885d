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
    # The keys of the prompt's leading full blocks, up to the first one no engine holds
    # (what prefix matching needs; the rest of the prompt is not hashed).
    block_hashes: tuple[int, ...] = ()
    block_size: int = 0

    @property
    def prompt_blocks(self) -> int:
        """Full KV blocks in the prompt (0 when it was not tokenized)."""
        if not self.block_size or self.prompt_tokens is None:
            return 0
        return self.prompt_tokens // self.block_size

    @property
    def estimated_tokens(self) -> int:
        if self.prompt_tokens is not None:
            return self.prompt_tokens
        return (len(self.prompt) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN
