"""The credit rule set and the community scorecard thresholds: one versioned YAML file that
the bureau can change without code (``backend/supervision/default_rules.yaml`` is the shipped
default, a sensible starting point, not any city's policy). Errors name the file and line.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from anju.errors import ConfigError
from anju.yamlfile import read_yaml, validation_message
from backend.supervision.measures import FIGURES

DEFAULT_RULES: Final = Path(__file__).parent / "default_rules.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _known(figure: str) -> str:
    if figure not in FIGURES:
        raise ValueError(f"unknown figure {figure!r}; expected one of {list(FIGURES)}")
    return figure


class Condition(_Strict):
    """``figure`` compared with a limit: exactly one of above, below, at_least, at_most."""

    figure: str
    above: float | None = None
    below: float | None = None
    at_least: float | None = None
    at_most: float | None = None

    @field_validator("figure")
    @classmethod
    def _fig(cls, v: str) -> str:
        return _known(v)

    @model_validator(mode="after")
    def _one(self) -> Condition:
        given = [x for x in (self.above, self.below, self.at_least, self.at_most) if x is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of above, below, at_least, at_most")
        return self

    def holds(self, value: float | None) -> bool:
        """A figure with no value (no alerts to time) meets no condition."""
        if value is None:
            return False
        if self.above is not None:
            return value > self.above
        if self.below is not None:
            return value < self.below
        if self.at_least is not None:
            return value >= self.at_least
        assert self.at_most is not None
        return value <= self.at_most

    def text(self) -> str:
        for op, v in (
            (">", self.above),
            ("<", self.below),
            (">=", self.at_least),
            ("<=", self.at_most),
        ):
            if v is not None:
                return f"{self.figure} {op} {v:g}"
        return self.figure


class Line(Condition):
    """One deduction or bonus. Either ``per`` points for each unit of the figure beyond
    ``free`` (counts), at most ``cap``; or ``points`` when the condition holds."""

    id: str = Field(pattern=r"^[a-z][a-z0-9_]{0,47}$")
    kind: Literal["deduction", "bonus"]
    reason: str = Field(min_length=1)
    per: float | None = Field(default=None, gt=0)
    free: float = Field(default=0, ge=0)
    cap: float | None = Field(default=None, gt=0)
    points: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _one(self) -> Line:
        limits = (self.above, self.below, self.at_least, self.at_most)
        if self.per is not None:
            if self.points is not None or any(x is not None for x in limits):
                raise ValueError("a 'per' line has no points or condition (use free and cap)")
        else:
            if self.points is None:
                raise ValueError("give either per (points per unit) or points with a condition")
            if sum(x is not None for x in limits) != 1:
                raise ValueError("give exactly one of above, below, at_least, at_most")
        return self


class Grade(_Strict):
    grade: str = Field(min_length=1)
    min_score: float


class ListRule(_Strict):
    """Red list: score >= min_score and no black-list entry. Black list: score <= max_score
    or any of the conditions."""

    reason: str
    min_score: float | None = None
    max_score: float | None = None
    any: list[Condition] = Field(default_factory=list)


class ScoreLine(Condition):
    """A scorecard line: passes when the condition holds (``at_most: 0`` trapped, ...)."""

    id: str = Field(pattern=r"^[a-z][a-z0-9_]{0,47}$")
    area: Literal["fire", "elevator", "security", "operations"]
    label: str


class Title(_Strict):
    id: str = Field(pattern=r"^[a-z][a-z0-9_]{0,47}$")
    name: str
    lines: list[ScoreLine] = Field(min_length=1)


class RuleSet(_Strict):
    version: str = Field(min_length=1, max_length=64)
    status: str = Field(description="what this rule set is (a default, a draft, adopted by ...)")
    period: Literal["month"] = "month"
    base_score: float = Field(default=100, gt=0)
    lines: list[Line] = Field(min_length=1)
    grades: list[Grade] = Field(min_length=1)
    red_list: ListRule
    black_list: ListRule
    scorecard: list[Title] = Field(default_factory=list)
    trend_months: int = Field(default=6, ge=1, le=24)

    @field_validator("grades")
    @classmethod
    def _grades(cls, v: list[Grade]) -> list[Grade]:
        if [g.min_score for g in v] != sorted((g.min_score for g in v), reverse=True):
            raise ValueError("grades go from the highest min_score down")
        return v

    @model_validator(mode="after")
    def _unique(self) -> RuleSet:
        ids = [x.id for x in self.lines]
        if len(ids) != len(set(ids)):
            raise ValueError(f"line ids repeat: {ids}")
        return self


class LoadedRules:
    """A rule set with the text it came from and that text's SHA-256 (what results keep)."""

    def __init__(self, rules: RuleSet, body: str, source: str) -> None:
        self.rules = rules
        self.body = body
        self.source = source
        self.sha256 = hashlib.sha256(body.encode()).hexdigest()


def parse_rules(body: str, *, source: str = "<rules>") -> LoadedRules:
    """Validate a rule set's text; errors are ``source:line: key: expected``."""
    import yaml

    try:
        node = yaml.compose(body, Loader=yaml.SafeLoader)
        data = yaml.safe_load(body)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "?"
        raise ConfigError(f"{source}:{where}: not valid YAML: {exc}") from exc
    try:
        rules = RuleSet.model_validate(data or {})
    except ValidationError as exc:
        raise ConfigError(validation_message(Path(source), node, exc)) from exc
    return LoadedRules(rules, body, source)


def load_rules(path: Path | None = None) -> LoadedRules:
    """The rule set in ``path`` (the shipped default when None)."""
    p = path or DEFAULT_RULES
    read_yaml(p)  # readable, UTF-8, YAML: its errors name the file
    return parse_rules(p.read_text(encoding="utf-8"), source=str(p))
