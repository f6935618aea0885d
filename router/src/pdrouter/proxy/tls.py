"""TLS to engines: one client context for every connection to an https:// engine (requests and
probes alike), so the engine API key never leaves the router in clear text."""

from __future__ import annotations

import ssl


def engine_ssl_context(ca_file: str = "", verify: bool = True) -> ssl.SSLContext:
    """Verify against `ca_file` (else the system's trust store); `verify=False` still encrypts
    but accepts any certificate."""
    context = ssl.create_default_context(cafile=ca_file or None)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
