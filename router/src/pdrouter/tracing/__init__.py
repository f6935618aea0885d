"""OpenTelemetry tracing: a request's spans across the router and both engine legs.

Off unless an OTLP endpoint is configured; then `provider.build_tracing` imports the SDK and every
accepted request carries a `RequestTrace` (`req.trace`), else `req.trace` is None and the hot path
does nothing for tracing.
"""
