"""Key material: new secrets and ids, and the one-way hash that is all the keys table keeps.

A secret is 32 random bytes (256 bits): far beyond guessing, so a plain SHA-256 (no salt, no slow
hash) is enough to make a leaked table useless, and it lets the table be looked up by the hash.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

SECRET_PREFIX = "lgw_"  # recognisable in configs and by secret scanners; not a secret itself
KEY_ID_PREFIX = "key_"


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def new_key_id() -> str:
    """A public, stable name for a key (kept across rotations); reveals nothing about its secret."""
    return KEY_ID_PREFIX + secrets.token_hex(8)


def key_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def same_hash(stored: str, computed: str) -> bool:
    """Constant-time comparison (the table is looked up by hash; this double-checks what came back)."""
    return hmac.compare_digest(stored.encode("ascii", "replace"), computed.encode("ascii", "replace"))
