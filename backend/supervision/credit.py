"""Credit evaluation of property companies and community scorecards: pure functions of a
month's figures and a rule set (``evaluate``, ``scorecard``), and the database side (compute a
month with its evidence, publish it, read what was published)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from backend.supervision.measures import (
    EVERYTHING,
    Level,
    Period,
    Scope,
    evidence,
    evidence_many,
    figures,
    month_bounds,
)
from backend.supervision.ruleset import Line, LoadedRules, RuleSet


@dataclass(frozen=True, slots=True)
class LineResult:
    id: str
    kind: str
    reason: str
    figure: str
    value: float | None
    rule: str
    points: float  # signed: negative for a deduction

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "reason": self.reason,
            "figure": self.figure,
            "value": self.value,
            "rule": self.rule,
            "points": self.points,
        }


def _line(line: Line, value: float | None) -> LineResult:
    sign = -1.0 if line.kind == "deduction" else 1.0
    if line.per is not None:
        units = max(0.0, (value or 0.0) - line.free)
        pts = units * line.per
        if line.cap is not None:
            pts = min(pts, line.cap)
        rule = f"{line.per:g} per {line.figure} beyond {line.free:g}" + (
            f", at most {line.cap:g}" if line.cap is not None else ""
        )
    else:
        assert line.points is not None
        pts = line.points if line.holds(value) else 0.0
        rule = f"{line.points:g} if {line.text()}"
    return LineResult(line.id, line.kind, line.reason, line.figure, value, rule, sign * pts + 0.0)


def evaluate(figs: dict[str, Any], rules: RuleSet) -> dict[str, Any]:
    """Score, grade and list of one company for one month, with every line explained."""
    lines = [_line(x, figs.get(x.figure)) for x in rules.lines]
    raw = rules.base_score + sum(x.points for x in lines)
    score = round(max(0.0, min(rules.base_score, raw)), 2)
    grade = next((g.grade for g in rules.grades if score >= g.min_score), rules.grades[-1].grade)
    black = rules.black_list
    black_why = [c.text() for c in black.any if c.holds(figs.get(c.figure))]
    if black.max_score is not None and score <= black.max_score:
        black_why.insert(0, f"score {score:g} <= {black.max_score:g}")
    red = rules.red_list
    listed: str | None = None
    why: list[str] = []
    if black_why:
        listed, why = "black", black_why
    elif red.min_score is not None and score >= red.min_score:
        listed, why = "red", [f"score {score:g} >= {red.min_score:g}"]
    return {
        "score": score,
        "grade": grade,
        "list": listed,
        "list_reason": why,
        "base_score": rules.base_score,
        "lines": [x.as_dict() for x in lines],
    }


def scorecard(
    month_figs: dict[str, Any], trend: list[dict[str, Any]], rules: RuleSet
) -> list[dict[str, Any]]:
    """Per title: pass/fail of every line against its threshold, with the value and its trend
    (oldest month first). A timing figure with nothing to time passes (nothing was slow)."""
    out = []
    for title in rules.scorecard:
        lines = []
        for ln in title.lines:
            value = month_figs.get(ln.figure)
            passed = True if value is None else ln.holds(value)
            lines.append(
                {
                    "id": ln.id,
                    "area": ln.area,
                    "label": ln.label,
                    "figure": ln.figure,
                    "rule": ln.text(),
                    "value": value,
                    "passed": passed,
                    "trend": [
                        {"month": str(t["period"]), "value": t.get(ln.figure)} for t in trend
                    ],
                }
            )
        out.append(
            {
                "id": title.id,
                "name": title.name,
                "passed": all(x["passed"] for x in lines),
                "lines": lines,
            }
        )
    return out


# ---- the database side -------------------------------------------------------------------


async def evaluate_month(
    conn: AsyncConnection,
    month: date,
    loaded: LoadedRules,
    *,
    scope: Scope = EVERYTHING,
    with_evidence: bool = True,
) -> list[dict[str, Any]]:
    """Every property company's result for ``month`` (from the rollup as it stands), with
    the alerts behind each line that deducted or added points."""
    start, end = month_bounds(month)
    rows = await figures(
        conn, level=Level.PROPERTY, period=Period.MONTH, start=start, end=end, scope=scope
    )
    names = await org_names(conn)
    results = [(r, evaluate(r, loaded.rules)) for r in rows]
    if with_evidence:
        # One query per line: the alerts behind it for every company it cost points.
        for i, line in enumerate(loaded.rules.lines):
            keys = tuple(
                r["key"]
                for r, res in results
                if res["lines"][i]["points"] and line.kind == "deduction"
            )
            found = await evidence_many(
                conn,
                figure=line.figure,
                level=Level.PROPERTY,
                keys=keys,
                start=start,
                end=end,
                districts=scope.districts,
            )
            for r, res in results:
                res["lines"][i]["evidence"] = found.get(r["key"], [])
    out = []
    for r, res in results:
        out.append(
            {
                "month": start.isoformat(),
                "org_id": r["key"],
                "org_name": names.get(r["key"], r["key"]),
                "ruleset_version": loaded.rules.version,
                "ruleset_sha256": loaded.sha256,
                "figures": {k: v for k, v in r.items() if k not in ("key", "period")},
                **res,
            }
        )
    out.sort(key=lambda x: (-x["score"], x["org_id"]))
    return out


async def org_names(conn: AsyncConnection) -> dict[str, str]:
    cur = await conn.execute("SELECT org_id, name FROM sv_org")
    return {k: v for k, v in await cur.fetchall()}


async def publish(
    conn: AsyncConnection, month: date, loaded: LoadedRules, *, by: str
) -> list[dict[str, Any]]:
    """Compute and keep every company's result for ``month`` with the rule set (its text is
    kept too). Publishing again with the same rule set replaces that rule set's results."""
    results = await evaluate_month(conn, month, loaded)
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO sv_ruleset (sha256, version, body) VALUES (%s, %s, %s)"
            " ON CONFLICT (sha256) DO NOTHING",
            (loaded.sha256, loaded.rules.version, loaded.body),
        )
        await conn.execute(
            "DELETE FROM sv_credit WHERE month = %s AND ruleset_sha256 = %s",
            (month_bounds(month)[0], loaded.sha256),
        )
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO sv_credit (month, org_id, ruleset_sha256, ruleset_version, score,"
                " grade, list, result, published_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (
                        month_bounds(month)[0],
                        r["org_id"],
                        loaded.sha256,
                        loaded.rules.version,
                        r["score"],
                        r["grade"],
                        r["list"],
                        Jsonb(r),
                        by,
                    )
                    for r in results
                ],
            )
    return results


async def published(
    conn: AsyncConnection, month: date, *, org_ids: tuple[str, ...] | None = None
) -> list[dict[str, Any]]:
    """The latest publication for ``month`` (all companies published together), or []."""
    q = (
        "SELECT result, published_at, published_by FROM sv_credit WHERE month = %(m)s AND"
        " ruleset_sha256 = (SELECT ruleset_sha256 FROM sv_credit WHERE month = %(m)s"
        " ORDER BY published_at DESC LIMIT 1)"
    )
    if org_ids is not None:
        q += " AND org_id = ANY(%(ids)s)"
    q += " ORDER BY score DESC, org_id"
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(q.encode(), {"m": month_bounds(month)[0], "ids": list(org_ids or ())})
        rows = await cur.fetchall()
    return [
        {
            **r["result"],
            "published_at": r["published_at"].isoformat(),
            "published_by": r["published_by"],
        }
        for r in rows
    ]


async def ruleset_text(conn: AsyncConnection, sha256: str) -> str | None:
    cur = await conn.execute("SELECT body FROM sv_ruleset WHERE sha256 = %s", (sha256,))
    row = await cur.fetchone()
    return None if row is None else str(row[0])


async def community_scorecard(
    conn: AsyncConnection, community_id: str, month: date, loaded: LoadedRules
) -> dict[str, Any]:
    """The scorecard of one community for ``month``, with the trend over the months before
    and the evidence (alerts) behind each failed line."""
    rules = loaded.rules
    start, end = month_bounds(month)
    first = start
    for _ in range(rules.trend_months - 1):
        first = month_bounds(date.fromordinal(first.toordinal() - 1))[0]
    scope = Scope(ids=(community_id,))
    trend = await figures(
        conn, level=Level.COMMUNITY, period=Period.MONTH, start=first, end=end, scope=scope
    )
    now = next((t for t in trend if t["period"] == start), None)
    if now is None:
        return {"community_id": community_id, "month": start.isoformat(), "titles": []}
    titles = scorecard(now, trend, rules)
    for t in titles:
        for ln in t["lines"]:
            ln["evidence"] = (
                []
                if ln["passed"]
                else await evidence(
                    conn,
                    figure=ln["figure"],
                    level=Level.COMMUNITY,
                    key=community_id,
                    start=start,
                    end=end,
                    limit=10,
                )
            )
    return {
        "community_id": community_id,
        "month": start.isoformat(),
        "ruleset_version": rules.version,
        "figures": {k: v for k, v in now.items() if k not in ("key", "period")},
        "titles": titles,
    }
