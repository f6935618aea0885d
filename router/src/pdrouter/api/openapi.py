"""OpenAPI description of the generation and forwarded routes, which are plain ASGI routes that
FastAPI cannot describe itself. Clients and schemathesis read it from /openapi.json."""

from __future__ import annotations

from typing import Any

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "code": {"type": ["string", "null"]},
                "param": {"type": ["string", "null"]},
            },
        }
    },
}

_COMMON_PROPS: dict[str, Any] = {
    "model": {"type": "string", "minLength": 1},
    "stream": {"type": "boolean"},
    "max_tokens": {"type": ["integer", "null"], "minimum": 1},
    "max_completion_tokens": {"type": ["integer", "null"], "minimum": 1},
    "temperature": {"type": "number", "minimum": 0},
    "stream_options": {"type": "object"},
}

_COMPLETIONS = {
    "type": "object",
    "required": ["model", "prompt"],
    "properties": {
        **_COMMON_PROPS,
        "prompt": {
            "oneOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "string"}, "minItems": 1},
                {"type": "array", "items": {"type": "integer"}, "minItems": 1},
            ]
        },
    },
}

_CHAT = {
    "type": "object",
    "required": ["model", "messages"],
    "properties": {
        **_COMMON_PROPS,
        "messages": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["role", "content"],
                "properties": {"role": {"type": "string"}, "content": {"type": "string"}},
            },
        },
    },
}


def _operation(summary: str, schema: dict[str, Any]) -> dict[str, Any]:
    error = {"content": {"application/json": {"schema": _ERROR}}}
    return {
        "post": {
            "summary": summary,
            "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
            "responses": {
                "200": {
                    "description": "The engine's answer (JSON, or text/event-stream if stream)",
                    "content": {
                        "application/json": {"schema": {"type": "object"}},
                        "text/event-stream": {"schema": {"type": "string"}},
                    },
                },
                "400": {"description": "Invalid request", **error},
                "401": {"description": "Missing or invalid API key", **error},
                "404": {"description": "Unknown model", **error},
                "413": {"description": "Body too large", **error},
                "415": {"description": "Not JSON", **error},
                "502": {"description": "Engine failed", **error},
                "503": {"description": "No ready engine", **error},
                "504": {"description": "Engine timed out", **error},
            },
        }
    }


# Forwarded as they are: the engine judges everything but `model` (optional with one model).
_PASSTHROUGH = {
    "type": "object",
    "properties": {"model": {"type": "string", "minLength": 1, "maxLength": 256}},
}


def add_generation_routes(
    schema: dict[str, Any], passthrough: dict[str, str] | None = None
) -> dict[str, Any]:
    paths = schema.setdefault("paths", {})
    paths["/v1/completions"] = _operation("OpenAI completions (routed to an engine)", _COMPLETIONS)
    paths["/v1/chat/completions"] = _operation("OpenAI chat completions (routed)", _CHAT)
    for path, api in (passthrough or {}).items():
        paths[path] = _operation(f"vLLM {api} (forwarded to an engine of the model)", _PASSTHROUGH)
    return schema
