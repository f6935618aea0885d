"""Log lines a client cannot forge: control characters in a message are escaped.

Requests put client text into log messages (the model name, an engine's error message that
quotes the request). A newline in it would start what looks like a new log line of its own.
"""

from __future__ import annotations

import logging
import re

# C0 controls, DEL, C1 controls and the Unicode line/paragraph separators.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char)
    return named or (f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}")


def escape_controls(text: str) -> str:
    return _CONTROL.sub(_escape, text)


class EscapingFormatter(logging.Formatter):
    """A text formatter that keeps every record on one line; tracebacks stay multi-line."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)
        return super().formatMessage(record)
