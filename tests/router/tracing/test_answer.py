"""GenAI attributes read from the first and last bytes of an engine's answer."""

from __future__ import annotations

import orjson
from pdrouter.tracing.answer import answer_attributes

FIRST = (
    b'data: {"id":"cmpl-7","object":"text_completion","created":1,"model":"tiny",'
    b'"choices":[{"index":0,"text":"a","finish_reason":null}]}\n\n'
)
LAST = (
    b'data: {"id":"cmpl-7","choices":[{"index":0,"text":"b","finish_reason":"length"}]}\n\n'
    b'data: {"id":"cmpl-7","choices":[],"usage":{"prompt_tokens":12,"total_tokens":20,'
    b'"completion_tokens":8}}\n\n'
    b"data: [DONE]\n\n"
)


def test_stream_id_model_finish_reason_and_usage() -> None:
    assert answer_attributes(FIRST, LAST) == {
        "gen_ai.response.id": "cmpl-7",
        "gen_ai.response.finish_reasons": ["length"],
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 8,
    }


def test_stream_without_usage_has_no_token_counts() -> None:
    attrs = answer_attributes(FIRST, LAST.split(b"\n\n")[0])
    assert attrs["gen_ai.response.finish_reasons"] == ["length"]
    assert "gen_ai.usage.output_tokens" not in attrs


def test_body_with_several_choices() -> None:
    body = orjson.dumps(
        {
            "id": "chatcmpl-1",
            "model": "tiny",
            "choices": [
                {"index": 0, "message": {"content": "x"}, "finish_reason": "stop"},
                {"index": 1, "message": {"content": "y"}, "finish_reason": "length"},
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8},
        }
    )
    attrs = answer_attributes(body, body)
    assert attrs["gen_ai.response.finish_reasons"] == ["stop", "length"]
    assert attrs["gen_ai.usage.output_tokens"] == 5


def test_generated_text_that_looks_like_keys_is_not_read() -> None:
    text = '"finish_reason":"stop","completion_tokens":99,"id":"evil"'
    body = orjson.dumps({"choices": [{"text": text, "finish_reason": None}]})
    assert answer_attributes(body, body) == {}


def test_error_bodies_and_empty_answers_give_nothing() -> None:
    assert answer_attributes(b"", b"") == {}
    assert answer_attributes(b'{"error":{"message":"x"}}', b'{"error":{"message":"x"}}') == {}
