"""Supervision for the construction bureau (issue 15): figures per property company,
community and maintenance company, the credit evaluation with its red and black lists, the
community scorecards, and a plausible past to show them on (docs/supervision.md)."""

from backend.supervision.credit import (
    community_scorecard,
    evaluate,
    evaluate_month,
    publish,
    published,
    scorecard,
)
from backend.supervision.figures import FIGURES, Level, Period, Scope, alerts_by_type, figures
from backend.supervision.rollup import refresh, sync_registry
from backend.supervision.ruleset import DEFAULT_RULES, LoadedRules, RuleSet, load_rules, parse_rules

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
