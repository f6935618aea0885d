"""The features of a request that routing decisions look at."""

from __future__ import annotations

from dataclasses import dataclass

# Routers without a tokenizer estimate tokens from characters (llm-d and Dynamo use 4).
CHARS_PER_TOKEN = 4


@dataclass(frozen=True, slots=True)
class RequestFeatures:
    """Model, optional session key, and the prompt text used for affinity and size estimates."""

    model: str
    session: str | None = None
    prompt: str = ""

    @property
    def estimated_tokens(self) -> int:
        return (len(self.prompt) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN
