"""What a span can say about an engine's answer: finish reasons, token usage, response id
(not the response model: the request span names the model, and it is the same).

Read once per request from the answer's first and last bytes (a stream's first and final chunks,
or a whole JSON body), only when tracing is on. Inside JSON strings quotes are escaped, so these
patterns only match real keys, never generated text.
"""

from __future__ import annotations

import re

_FINISH = re.compile(rb'"finish_reason":\s*"([A-Za-z_]{1,32})"')
_INPUT = re.compile(rb'"prompt_tokens":\s*(\d{1,9})')
_OUTPUT = re.compile(rb'"completion_tokens":\s*(\d{1,9})')
_ID = re.compile(rb'"id":\s*"([\x21\x23-\x5b\x5d-\x7e]{1,128})"')

Attributes = dict[str, str | int | float | list[str]]


def answer_attributes(head: bytes, tail: bytes) -> Attributes:
    """GenAI attributes found in an answer: `head` holds its start, `tail` its end."""
    attrs: Attributes = {}
    if (match := _ID.search(head)) is not None:
        attrs["gen_ai.response.id"] = match.group(1).decode()
    reasons = [r.decode() for r in _FINISH.findall(tail)]
    if reasons:
        attrs["gen_ai.response.finish_reasons"] = reasons
    # With continuous usage stats every chunk carries usage: the last one counts.
    if found := _INPUT.findall(tail):
        attrs["gen_ai.usage.input_tokens"] = int(found[-1])
    if found := _OUTPUT.findall(tail):
        attrs["gen_ai.usage.output_tokens"] = int(found[-1])
    return attrs
