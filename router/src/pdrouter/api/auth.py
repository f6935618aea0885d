"""Optional router API keys, compared in constant time."""

from __future__ import annotations

import hmac

from pdrouter.proxy.errors import RouterError


class ApiKeyCheck:
    """With keys configured, every request needs `Authorization: Bearer <one of them>`; the
    engines then get the router's engine key (or none) instead of the client's credential."""

    def __init__(self, keys: list[str], engine_key: str = "") -> None:
        self._keys = [k.encode() for k in keys if k]
        self._engine_auth = f"Bearer {engine_key}" if engine_key else None
        self.enabled = bool(self._keys)

    def check(self, authorization: bytes | None) -> str | None:
        """Raise 401 for a missing or wrong key; return the Authorization to send engines."""
        if not self.enabled:
            return None
        token = b""
        if authorization and authorization[:7].lower() == b"bearer ":
            token = authorization[7:].strip()
        ok = False
        for key in self._keys:  # check all keys so timing does not reveal which one matched
            ok |= hmac.compare_digest(token, key)
        if not ok:
            raise RouterError(
                401,
                "missing or invalid API key (send Authorization: Bearer <key>)",
                type="invalid_request_error",
                code="invalid_api_key",
            )
        return self._engine_auth
