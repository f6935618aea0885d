"""Stable hashes (process-independent, unlike hash()) for session rings and prefix chunks."""

from __future__ import annotations

import hashlib


def stable_hash(data: str | bytes) -> int:
    raw = data.encode() if isinstance(data, str) else data
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "big")


def chunk_hashes(text: str, chunk_chars: int, limit: int = 256) -> list[int]:
    """Hashes of successive whole prefixes: h[i] identifies text[: (i + 1) * chunk_chars]."""
    hashes: list[int] = []
    h = hashlib.blake2b(digest_size=8)
    for start in range(0, len(text) - chunk_chars + 1, chunk_chars):
        h.update(text[start : start + chunk_chars].encode())
        hashes.append(int.from_bytes(h.copy().digest(), "big"))
        if len(hashes) >= limit:
            break
    return hashes
