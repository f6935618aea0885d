"""The trace id in log lines: set once per traced request, read by a logging filter.

The variable lives in the request's task context, so every line logged on the request's behalf
(its warnings, its access-log line) carries the id; untraced requests leave it empty.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar

current_trace_id: ContextVar[str] = ContextVar("pdstack_trace_id", default="")


class TraceIdFilter(logging.Filter):
    """Adds `record.trace_id` (32 hex digits, or "" outside a traced request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.trace_id = current_trace_id.get()
        return True
