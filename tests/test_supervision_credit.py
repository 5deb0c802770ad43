"""The credit rule set and its evaluation, pure: loading with file:line errors, deductions
and bonuses, grades, red and black lists, scorecards."""

from __future__ import annotations

from pathlib import Path

import pytest

from anju.errors import ConfigError
from backend.supervision import FIGURES, evaluate, load_rules, parse_rules, scorecard

RULES = """\
version: "test-1"
status: a test
lines:
  - {id: overdue, kind: deduction, reason: overdue, figure: overdue, per: 3, cap: 9}
  - {id: trapped, kind: deduction, reason: trapped, figure: trapped, per: 1, free: 2}
  - {id: slow, kind: deduction, reason: slow, figure: ack_p90_s, above: 600, points: 10}
  - {id: quick, kind: bonus, reason: quick, figure: ack_median_s, at_most: 60, points: 5}
grades:
  - {grade: A, min_score: 90}
  - {grade: B, min_score: 70}
  - {grade: C, min_score: 0}
red_list: {reason: good, min_score: 95}
black_list:
  reason: bad
  max_score: 60
  any: [{figure: escalated, at_least: 4}]
scorecard:
  - id: wx
    name: 温馨家园
    lines:
      - {id: t, area: elevator, label: no trapped, figure: trapped, at_most: 0}
      - {id: a, area: security, label: quick, figure: ack_p90_s, at_most: 300}
"""


def figs(**kw: float | None) -> dict[str, float | None]:
    base: dict[str, float | None] = {f: 0 for f in FIGURES}
    base.update(ack_median_s=None, ack_p90_s=None)
    base.update(kw)
    return base


def test_the_shipped_default_loads_and_says_it_is_a_default() -> None:
    loaded = load_rules()
    assert loaded.rules.version and "非任何城市的正式政策" in loaded.rules.status
    assert len(loaded.sha256) == 64
    assert {t.name for t in loaded.rules.scorecard} == {"温馨家园", "品质楼宇"}


def test_errors_name_the_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "rules.yaml"
    f.write_text(RULES.replace("figure: overdue, per", "figure: overdew, per"), encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_rules(f)
    assert f"{f}:4: lines.0.figure" in str(err.value) and "unknown figure" in str(err.value)


def test_a_line_needs_points_or_per(tmp_path: Path) -> None:
    f = tmp_path / "rules.yaml"
    f.write_text(RULES.replace("above: 600, points: 10", "above: 600"), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"rules.yaml:6: lines.2"):
        load_rules(f)
    f.write_text(RULES.replace("version:", "versoin:"), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"rules.yaml:1: versoin: Extra inputs"):
        load_rules(f)


def test_deductions_bonuses_grades_and_lists() -> None:
    rules = parse_rules(RULES).rules
    good = evaluate(figs(ack_median_s=30, ack_p90_s=100), rules)
    assert (good["score"], good["grade"], good["list"]) == (100, "A", "red")
    assert [x["points"] for x in good["lines"]] == [0, 0, 0, 5]  # the bonus is capped at 100

    mid = evaluate(figs(overdue=2, trapped=5, ack_median_s=90, ack_p90_s=700), rules)
    assert [x["points"] for x in mid["lines"]] == [-6, -3, -10, 0]
    assert (mid["score"], mid["grade"], mid["list"]) == (81, "B", None)
    assert mid["lines"][1]["rule"] == "1 per trapped beyond 2"
    assert mid["lines"][2]["rule"] == "10 if ack_p90_s > 600" and mid["lines"][2]["value"] == 700

    capped = evaluate(figs(overdue=10, trapped=40), rules)
    assert capped["lines"][0]["points"] == -9 and capped["lines"][1]["points"] == -38
    assert (capped["score"], capped["grade"], capped["list"]) == (53, "C", "black")
    assert capped["list_reason"] == ["score 53 <= 60"]

    escal = evaluate(figs(escalated=4, ack_median_s=10), rules)
    assert escal["score"] == 100 and escal["list"] == "black"
    assert escal["list_reason"] == ["escalated >= 4"]


def test_no_alerts_to_time_meets_no_condition() -> None:
    rules = parse_rules(RULES).rules
    r = evaluate(figs(), rules)
    assert [x["points"] for x in r["lines"]] == [0, 0, 0, 0]


def test_the_same_figures_give_the_same_result() -> None:
    rules = parse_rules(RULES).rules
    f = figs(overdue=1, trapped=3, ack_median_s=61, ack_p90_s=601, escalated=1)
    assert evaluate(f, rules) == evaluate(dict(f), parse_rules(RULES).rules)


def test_scorecard_lines_with_trend() -> None:
    rules = parse_rules(RULES).rules
    trend = [{"period": "2026-10-01", "trapped": 1}, {"period": "2026-11-01", "trapped": 0}]
    [wx] = scorecard(figs(trapped=0, ack_p90_s=None), trend, rules)
    assert wx["name"] == "温馨家园" and wx["passed"]
    assert [x["passed"] for x in wx["lines"]] == [True, True]  # nothing to time: not slow
    assert wx["lines"][0]["trend"] == [
        {"month": "2026-10-01", "value": 1},
        {"month": "2026-11-01", "value": 0},
    ]
    [bad] = scorecard(figs(trapped=1, ack_p90_s=301), [], rules)
    assert not bad["passed"] and [x["passed"] for x in bad["lines"]] == [False, False]


def test_check_rules_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from anju.cli import main

    assert main(["supervision", "check-rules"]) == 0
    assert "anju-default" in capsys.readouterr().out
    f = tmp_path / "rules.yaml"
    f.write_text(RULES.replace("per: 3, cap: 9", "per: 3, cap: nine"), encoding="utf-8")
    assert main(["supervision", "check-rules", str(f)]) == 2
    assert f"{f}:4: lines.0.cap" in capsys.readouterr().err
