"""ANJU_BREAK (test only) is read from ``ANJU_BREAK`` alone: an environment variable without
the project's prefix (``BREAK_GUARANTEES``) never breaks a guarantee (issue 11 review)."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.config import BackendSettings


def settings(**kw: object) -> BackendSettings:
    return BackendSettings(
        database_url="postgresql://x@127.0.0.1/x", mqtt_url="mqtt://127.0.0.1:1883",
        registry=Path("city.yaml"), **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def test_only_anju_break_enables_a_broken_guarantee(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANJU_BREAK", raising=False)
    monkeypatch.setenv("BREAK_GUARANTEES", "skip_dedupe")
    assert settings().break_guarantees == frozenset()
    monkeypatch.setenv("ANJU_BREAK", "skip_dedupe")
    assert settings().break_guarantees == {"skip_dedupe"}
    monkeypatch.delenv("ANJU_BREAK")
    assert settings(break_guarantees="no_event_priority").break_guarantees == {"no_event_priority"}
