"""Supervision for the construction bureau (issue 15): figures per property company,
community and maintenance company, the credit evaluation with its red and black lists, the
community scorecards, and a plausible past to show them on (docs/supervision.md).

The names below are imported on first use, so that ``anju`` can register ``anju supervision``
(``backend.supervision.cli``) without loading psycopg on a gateway.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from backend.supervision.credit import (
        community_scorecard,
        evaluate,
        evaluate_month,
        publish,
        published,
        scorecard,
    )
    from backend.supervision.measures import (
        FIGURES,
        Level,
        Period,
        Scope,
        alerts_by_type,
        figures,
    )
    from backend.supervision.rollup import refresh, sync_registry
    from backend.supervision.ruleset import (
        DEFAULT_RULES,
        LoadedRules,
        RuleSet,
        load_rules,
        parse_rules,
    )

_WHERE = {
    "community_scorecard": "credit",
    "evaluate": "credit",
    "evaluate_month": "credit",
    "publish": "credit",
    "published": "credit",
    "scorecard": "credit",
    "FIGURES": "measures",
    "Level": "measures",
    "Period": "measures",
    "Scope": "measures",
    "alerts_by_type": "measures",
    "figures": "measures",
    "refresh": "rollup",
    "sync_registry": "rollup",
    "DEFAULT_RULES": "ruleset",
    "LoadedRules": "ruleset",
    "RuleSet": "ruleset",
    "load_rules": "ruleset",
    "parse_rules": "ruleset",
}
__all__ = [
    "DEFAULT_RULES",
    "FIGURES",
    "Level",
    "LoadedRules",
    "Period",
    "RuleSet",
    "Scope",
    "alerts_by_type",
    "community_scorecard",
    "evaluate",
    "evaluate_month",
    "figures",
    "load_rules",
    "parse_rules",
    "publish",
    "published",
    "refresh",
    "scorecard",
    "sync_registry",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"backend.supervision.{module}"), name)
