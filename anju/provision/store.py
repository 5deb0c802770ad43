"""``secrets.json``: the clear secrets of a provisioned city (mode 0600), read back on every run
so that a re-run keeps every identity it already made."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from anju.errors import ConfigError
from anju.provision.files import write_private

VERSION = 1


@dataclass(slots=True)
class Secret:
    """One broker identity's password, its Mosquitto hash and its EMQX hash (backend broker)."""

    password: str
    hash: str
    emqx_salt: str = ""
    emqx_hash: str = ""


@dataclass(slots=True)
class TokenSecret:
    token: str
    sha256: str


@dataclass(slots=True)
class SecretStore:
    passwords: dict[str, Secret]  # "backend/<user>" or "lan/<gateway>/<user>"
    tokens: dict[str, TokenSecret]  # token name

    @classmethod
    def load(cls, path: Path) -> SecretStore:
        if not path.exists():
            return cls({}, {})
        try:
            data: Any = json.loads(path.read_text(encoding="utf-8"))
            if data.get("version") != VERSION:
                raise ConfigError(f"{path}: version {data.get('version')!r}; expected {VERSION}")
            return cls(
                {k: Secret(**v) for k, v in data["passwords"].items()},
                {k: TokenSecret(**v) for k, v in data["tokens"].items()},
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"{path}: not a provisioning secrets file ({exc})") from exc

    def save(self, path: Path) -> None:
        data = {
            "version": VERSION,
            "passwords": {k: asdict(v) for k, v in sorted(self.passwords.items())},
            "tokens": {k: asdict(v) for k, v in sorted(self.tokens.items())},
        }
        write_private(path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")
