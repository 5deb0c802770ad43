"""Mosquitto's own password hashes: ``$7$`` is PBKDF2-HMAC-SHA512 (Mosquitto 2.0 and later),
written as ``user:$7$<iterations>$<base64 salt>$<base64 hash>``, the format of
``mosquitto_passwd``; a broker reads the iteration count from each line."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re

ITERATIONS = 1000  # the passwords are random (144 bits or more): iterations add little
_SALT_BYTES = 12
_HASH_BYTES = 64
_LINE = re.compile(r"^\$7\$(\d+)\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)$")


def hash_password(password: str, *, iterations: int = ITERATIONS, salt: bytes | None = None) -> str:
    """The ``$7$...`` form of ``password`` (a fresh random salt unless one is given)."""
    salt = os.urandom(_SALT_BYTES) if salt is None else salt
    dk = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, _HASH_BYTES)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(dk).decode()}"


def verify_password(password: str, hashed: str) -> bool:
    """Whether ``hashed`` (a ``$7$`` string) is the hash of ``password``."""
    m = _LINE.match(hashed)
    if m is None:
        return False
    iterations, salt, want = int(m[1]), base64.b64decode(m[2]), base64.b64decode(m[3])
    got = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, len(want))
    return hmac.compare_digest(got, want)


def is_mosquitto_hash(text: str) -> bool:
    return _LINE.match(text) is not None


def password_file(entries: dict[str, str]) -> str:
    """A Mosquitto ``password_file`` from user -> ``$7$`` hash, one ``user:hash`` a line."""
    for user in entries:
        if not user or ":" in user or "\n" in user:
            raise ValueError(f"user name {user!r} cannot go in a Mosquitto password file")
    return "".join(f"{user}:{h}\n" for user, h in sorted(entries.items()))
