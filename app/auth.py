"""API keys for the prediction routes: one check, shared by every protocol.

Keys are configured as the keys themselves or as ``sha256:<hex digest>`` (so a
deployment can keep only digests in its secrets). A presented key is hashed and
compared with every configured digest in constant time, all of them every time, so
neither the answer's timing nor its content says which key came close.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

DIGEST_PREFIX = "sha256:"


class KeyRing:
    def __init__(self, keys: Iterable[str]) -> None:
        digests = []
        for key in keys:
            key = key.strip()
            if not key:
                continue
            if key.startswith(DIGEST_PREFIX):
                digest = bytes.fromhex(key.removeprefix(DIGEST_PREFIX))
                if len(digest) != hashlib.sha256().digest_size:
                    raise ValueError("an API key digest must be 64 hex digits after sha256:")
                digests.append(digest)
            else:
                digests.append(hashlib.sha256(key.encode()).digest())
        self._digests = tuple(digests)

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def accepts(self, presented: str | None) -> bool:
        """Whether ``presented`` is one of the keys (constant time in the key tried)."""
        if presented is None:
            return False
        digest = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
        found = False
        for known in self._digests:
            found |= hmac.compare_digest(digest, known)
        return found


def presented_key(authorization: str | None, api_key: str | None) -> str | None:
    """The key a client sent: ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``."""
    if api_key:
        return api_key
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return None
