"""Writing provisioning output: secrets readable by their owner (and group) only, written whole
(temporary file, then rename) so that a broker never reads half a file."""

from __future__ import annotations

import os
from pathlib import Path

SECRET_MODE = 0o600
SHARED_SECRET_MODE = 0o640  # password files and server keys the broker's group reads
PUBLIC_MODE = 0o644


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # O_CREAT's mode is masked by the umask, and ignored if it existed
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_private(path: Path, data: bytes | str, *, mode: int = SECRET_MODE) -> None:
    _write(path, data.encode() if isinstance(data, str) else data, mode)


def write_public(path: Path, data: bytes | str) -> None:
    _write(path, data.encode() if isinstance(data, str) else data, PUBLIC_MODE)


def write_if_changed(path: Path, data: str, *, mode: int) -> bool:
    """Write only when the content differs (brokers reload on change); whether it did."""
    if path.exists() and path.read_text(encoding="utf-8") == data:
        if path.stat().st_mode & 0o777 != mode:
            os.chmod(path, mode)
        return False
    _write(path, data.encode(), mode)
    return True
