"""Finding the first generated token in an engine's SSE stream, cheaply.

Only chunks before the first token are searched (one regex pass each); the tail of the last
chunk is kept so a marker split across two chunks is still found.
"""

from __future__ import annotations

import re

# An event that carries output: completions `text`, chat `content`, reasoning (vLLM's
# `reasoning`, formerly `reasoning_content`) or the start of a tool call. Empty strings (the
# chat role event's `"content":""`) are not output.
FIRST_TOKEN = re.compile(rb'"(?:text|content|reasoning|reasoning_content)":"[^"]|"tool_calls":\[\{')
# Bytes of the previous chunk searched again with the next one: the longest marker prefix.
TAIL_BYTES = len(b'"reasoning_content":"')


def carries_token(tail: bytes, chunk: bytes) -> bool:
    """Whether `chunk`, following `tail` (the end of the previous chunk), carries output."""
    return FIRST_TOKEN.search(tail + chunk if tail else chunk) is not None
