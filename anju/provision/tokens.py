"""Reading the hashed API tokens back (``api/tokens.yaml``): the backend already takes tokens
as SHA-256 digests (``sha256:`` in alerting.yaml, backend/config.py TokenSpec), so the file's
``tokens:`` list goes into alerting.yaml as it is; this loader is for tools that want them."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from anju.errors import ConfigError

_HEX = re.compile(r"^[0-9a-f]{64}$")


def load_token_digests(path: Path) -> list[dict[str, str]]:
    """The ``tokens:`` rows of a tokens file (name, audience, scope, sha256), checked."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    rows = data.get("tokens") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise ConfigError(f"{path}: expected a mapping with a `tokens:` list")
    out = []
    for i, row in enumerate(rows):
        if not (isinstance(row, dict) and isinstance(row.get("name"), str)
                and isinstance(row.get("audience"), str)
                and _HEX.match(str(row.get("sha256", "")))):  # fmt: skip
            raise ConfigError(f"{path}: tokens[{i}]: expected name, audience, sha256 (hex)")
        out.append({k: str(v) for k, v in row.items()})
    return out
