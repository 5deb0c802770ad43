"""Supervision for the construction bureau: figures, credit evaluation, lists, scorecards,
exports and the public disclosure (docs/supervision.md).

Who sees what: admin and the construction bureau see everything in their districts (a city
code such as 330400 covers the districts 3304xx; a province code 330000 covers 33xxxx); a
property company sees its own figures, score and explanation; every other token is refused.
``/api/supervision/public`` needs no token and shows published company-level grades and
figures only. Every table takes ``format=csv`` or ``format=xlsx``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from psycopg import AsyncConnection

from anju.contract import Audience
from anju.errors import ConfigError
from anju.registry import CityIndex
from backend.api.deps import AppState, Principal, PrincipalDep, StateDep
from backend.supervision.credit import (
    community_scorecard,
    evaluate_month,
    publish,
    published,
    scorecard,
)
from backend.supervision.export import to_csv, to_xlsx
from backend.supervision.measures import (
    Level,
    Period,
    Scope,
    alerts_by_type,
    figures,
    month_bounds,
)
from backend.supervision.rollup import refresh, sync_registry
from backend.supervision.ruleset import LoadedRules, load_rules

router = APIRouter(prefix="/api/supervision", tags=["supervision"])
CHINA = timezone(timedelta(hours=8))
RULES_ENV = "ANJU_SUPERVISION_RULES"
PUBLIC_FIGURES = (
    "alerts",
    "ack_median_s",
    "resolve_median_s",
    "escalated",
    "overdue",
    "device_online_ratio",
    "trapped",
    "fire_false_alarms",
)
Format = Literal["json", "csv", "xlsx"]


def covers(scope: str, district: str) -> bool:
    """A construction bureau's scope covers a district: its own code, its city's (xxxx00) or
    its province's (xx0000)."""
    if scope == district:
        return True
    if scope.endswith("0000"):
        return district.startswith(scope[:2])
    if scope.endswith("00"):
        return district.startswith(scope[:4])
    return False


@dataclass(frozen=True, slots=True)
class View:
    """What the caller may see: ``districts`` None for every district; ``org`` a property
    company's own id."""

    who: Principal
    districts: tuple[str, ...] | None
    org: str | None

    @property
    def bureau(self) -> bool:
        return self.org is None


def _city(state: AppState) -> CityIndex:
    if state.city is None:
        raise HTTPException(503, "the registry is not loaded")
    return state.city


def _view(state: StateDep, who: PrincipalDep) -> View:
    city = _city(state)
    if who.admin:
        return View(who, None, None)
    if who.audience == Audience.CONSTRUCTION and who.scope:
        codes = tuple(d for d in city.district_names if covers(who.scope, d))
        if not codes:
            raise HTTPException(403, f"{who.name}: no district of this city in scope {who.scope}")
        return View(who, None if len(codes) == len(city.district_names) else codes, None)
    if who.audience == Audience.PROPERTY and who.scope:
        return View(who, None, who.scope)
    raise HTTPException(403, f"{who.name}: supervision is for the construction bureau and the"
                             " property companies")  # fmt: skip


ViewDep = Annotated[View, Depends(_view)]


def _rules(request: Request) -> LoadedRules:
    """The rule set (ANJU_SUPERVISION_RULES, else the shipped default), read once."""
    cached: LoadedRules | None = getattr(request.app.state, "supervision_rules", None)
    if cached is None:
        path = os.environ.get(RULES_ENV)
        try:
            cached = load_rules(Path(path) if path else None)
        except ConfigError as exc:
            raise HTTPException(500, f"the supervision rule set is invalid: {exc}") from exc
        request.app.state.supervision_rules = cached
    return cached


RulesDep = Annotated[LoadedRules, Depends(_rules)]


@asynccontextmanager
async def _ready(request: Request, state: AppState) -> AsyncIterator[AsyncConnection]:
    """A pooled connection to query the supervision tables: the registry snapshot taken once
    per process, the rollup brought up to date every time."""
    city = _city(state)
    async with state.store.pool.connection() as conn:
        if not getattr(request.app.state, "supervision_synced", False):
            await sync_registry(conn, city, today=_today())
            request.app.state.supervision_synced = True
        await refresh(conn)
        yield conn


def _today() -> date:
    return datetime.now(UTC).astimezone(CHINA).date()


def _month(text: str | None) -> date:
    if text is None:
        return _today().replace(day=1)
    try:
        return datetime.strptime(text, "%Y-%m").date()
    except ValueError:
        raise HTTPException(422, f"month: expected YYYY-MM, got {text!r}") from None


def _range(
    period: Period, month: str | None, start: date | None, end: date | None
) -> tuple[date, date]:
    if start is None and end is None:
        return month_bounds(_month(month))
    if start is None or end is None:
        raise HTTPException(422, "give both start and end (local days, end excluded), or month")
    if period is Period.MONTH:
        start, end = start.replace(day=1), month_bounds(end - timedelta(days=1))[1]
    if not start < end or (end - start).days > 400:
        raise HTTPException(422, "start must be before end, and at most 400 days apart")
    return start, end


def _table(rows: list[dict[str, Any]], fmt: Format, name: str, meta: dict[str, Any]) -> Response:
    if fmt == "csv":
        return Response(
            to_csv(rows),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
        )
    if fmt == "xlsx":
        return Response(
            to_xlsx(rows, title=name),
            media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            headers={"Content-Disposition": f'attachment; filename="{name}.xlsx"'},
        )
    return JSONResponse({**meta, "rows": _jsonable(rows)})


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    if isinstance(v, datetime | date):
        return v.isoformat()
    return v


def _scope(view: View, level: Level, city: CityIndex, key: str | None) -> Scope:
    if view.bureau:
        if key is not None and level is Level.COMMUNITY:
            com = city.communities.get(key)
            if com is None or (view.districts is not None and com.district not in view.districts):
                raise HTTPException(404, f"no community {key} in your scope")
        return Scope(view.districts, None if key is None else (key,))
    assert view.org is not None
    if level is Level.PROPERTY:
        if key is not None and key != view.org:
            raise HTTPException(404, f"no company {key} in your scope")
        return Scope(None, (view.org,))
    if level is Level.COMMUNITY:
        own = tuple(c.id for c in city.registry.communities if c.property == view.org)
        if key is not None:
            if key not in own:
                raise HTTPException(404, f"no community {key} in your scope")
            own = (key,)
        return Scope(None, own)
    raise HTTPException(403, "a property company sees its own figures, not maintenance companies'")


@dataclass(frozen=True, slots=True)
class Measure:
    """What a query of the figures asks: the level, the period, local days ``[start, end)``
    and the caller's scope."""

    level: Level
    period: Period
    start: date
    end: date
    scope: Scope

    def query(self) -> dict[str, Any]:
        """The arguments of ``figures`` and ``alerts_by_type``."""
        return {"level": self.level, "period": self.period, "start": self.start,
                "end": self.end, "scope": self.scope}  # fmt: skip

    def meta(self) -> dict[str, Any]:
        return {"level": self.level, "period": self.period, "start": self.start.isoformat(),
                "end": self.end.isoformat()}  # fmt: skip


def _measure(
    state: StateDep,
    view: ViewDep,
    level: Level = Level.PROPERTY,
    period: Period = Period.MONTH,
    month: Annotated[str | None, Query(description="YYYY-MM (default: this month)")] = None,
    start: Annotated[date | None, Query(description="first local day (Asia/Shanghai)")] = None,
    end: Annotated[date | None, Query(description="the day after the last")] = None,
    key: Annotated[str | None, Query(description="one company or community")] = None,
) -> Measure:
    lo, hi = _range(period, month, start, end)
    return Measure(level, period, lo, hi, _scope(view, level, _city(state), key))


MeasureDep = Annotated[Measure, Depends(_measure)]


@router.get("/figures")
async def get_figures(
    request: Request, state: StateDep, q: MeasureDep, format: Format = "json"
) -> Response:
    """Supervision figures per company, community or maintenance company, per local day or
    month (docs/supervision.md defines each)."""
    async with _ready(request, state) as conn:
        rows = await figures(conn, **q.query())
        names = await _names(conn)
    for r in rows:
        r["name"] = names.get(r["key"], r["key"])
    return _table(rows, format, f"figures-{q.level}-{q.period}-{q.start}", q.meta())


async def _names(conn: AsyncConnection) -> dict[str, str]:
    cur = await conn.execute(
        "SELECT org_id, name FROM sv_org UNION ALL SELECT community_id, name FROM sv_community"
    )
    return {k: v for k, v in await cur.fetchall()}


@router.get("/alerts-by-type")
async def get_alerts_by_type(
    request: Request, state: StateDep, q: MeasureDep, format: Format = "json"
) -> Response:
    """Alert counts by type and severity."""
    async with _ready(request, state) as conn:
        rows = await alerts_by_type(conn, **q.query())
    return _table(rows, format, f"alerts-by-type-{q.level}-{q.start}", q.meta())


def _flat(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "org_id": r["org_id"],
        "org_name": r["org_name"],
        "month": r["month"],
        "score": r["score"],
        "grade": r["grade"],
        "list": r["list"] or "",
        "list_reason": "; ".join(r["list_reason"]),
        "ruleset_version": r["ruleset_version"],
        **{k: v for k, v in r["figures"].items()},
    }


async def _credit(
    request: Request, state: StateDep, view: View, month: date, rules: LoadedRules, evidence: bool
) -> list[dict[str, Any]]:
    scope = Scope(view.districts, None if view.bureau else (view.org or "",))
    async with _ready(request, state) as conn:
        return await evaluate_month(conn, month, rules, scope=scope, with_evidence=evidence)


@router.get("/credit")
async def get_credit(
    request: Request,
    state: StateDep,
    view: ViewDep,
    rules: RulesDep,
    month: str | None = None,
    format: Format = "json",
) -> Response:
    """The credit evaluation of every company in scope for a month, as it stands now (the
    bureau's ranking); ``/published`` has what was published."""
    m = _month(month)
    rows = await _credit(request, state, view, m, rules, evidence=False)
    meta = {"month": m.isoformat(), "ruleset_version": rules.rules.version,
            "ruleset_status": rules.rules.status, "ruleset_sha256": rules.sha256}  # fmt: skip
    if format != "json":
        return _table([_flat(r) for r in rows], format, f"credit-{m:%Y-%m}", meta)
    return _table(rows, format, "", meta)


@router.get("/credit/{org_id}")
async def get_company_credit(
    request: Request,
    state: StateDep,
    view: ViewDep,
    rules: RulesDep,
    org_id: str,
    month: str | None = None,
    format: Format = "json",
) -> Response:
    """One company's file: score, grade, list and every line explained with its alerts."""
    if not view.bureau and org_id != view.org:
        raise HTTPException(404, f"no company {org_id} in your scope")
    m = _month(month)
    scope = Scope(view.districts, (org_id,))
    async with _ready(request, state) as conn:
        rows = await evaluate_month(conn, m, rules, scope=scope)
        pub = await published(conn, m, org_ids=(org_id,))
    if not rows:
        raise HTTPException(404, f"no figures for {org_id} in {m:%Y-%m} in your scope")
    r = rows[0]
    if format != "json":
        lines = [
            {"org_id": org_id, "month": r["month"],
             **{k: v for k, v in ln.items() if k != "evidence"},
             "alerts": " ".join(e["alert_id"] for e in ln.get("evidence", []))}
            for ln in r["lines"]
        ]  # fmt: skip
        return _table(lines, format, f"credit-{org_id}-{m:%Y-%m}", {})
    return JSONResponse(_jsonable({**r, "published": pub[0] if pub else None}))


@router.post("/credit/publish")
async def publish_month(
    request: Request, state: StateDep, view: ViewDep, rules: RulesDep, month: str
) -> dict[str, Any]:
    """Publish a month's results with the rule set in force (admin or a whole-city bureau)."""
    if not view.bureau or view.districts is not None:
        raise HTTPException(403, "only the city's construction bureau (or admin) publishes")
    m = _month(month)
    async with _ready(request, state) as conn:
        rows = await publish(conn, m, rules, by=view.who.name)
    return {"month": m.isoformat(), "companies": len(rows), "ruleset_version": rules.rules.version,
            "ruleset_sha256": rules.sha256}  # fmt: skip


@router.get("/published")
async def get_published(
    state: StateDep, view: ViewDep, month: str | None = None, format: Format = "json"
) -> Response:
    """The latest publication of a month (with its rule set's version and SHA-256)."""
    m = _month(month)
    rows = _in_view(state, view, await _published(state, view, m))
    if format != "json":
        return _table([_flat(r) for r in rows], format, f"published-{m:%Y-%m}", {})
    return _table(rows, format, "", {"month": m.isoformat()})


async def _published(state: AppState, view: View, m: date) -> list[dict[str, Any]]:
    """The latest publication of month ``m``: every company's, or the caller's own."""
    async with state.store.pool.connection() as conn:
        return await published(conn, m, org_ids=None if view.bureau else (view.org or "",))


def _in_view(state: AppState, view: View, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of companies with a community in the caller's districts."""
    if view.districts is None:
        return rows
    city = _city(state)
    orgs = {c.property for c in city.registry.communities if c.district in view.districts}
    return [r for r in rows if r["org_id"] in orgs]


@router.get("/lists")
async def get_lists(
    request: Request,
    state: StateDep,
    view: ViewDep,
    rules: RulesDep,
    month: str | None = None,
    format: Format = "json",
) -> Response:
    """The red and black lists of a month: the published ones when the month was published,
    else as they stand now; each entry with its reasons and the lines that cost points."""
    m = _month(month)
    pub = await _published(state, view, m)
    source = "published" if pub else "current"
    rows = _in_view(
        state, view, pub or await _credit(request, state, view, m, rules, evidence=True)
    )
    listed = [
        {
            "list": r["list"],
            "org_id": r["org_id"],
            "org_name": r["org_name"],
            "score": r["score"],
            "grade": r["grade"],
            "reasons": r["list_reason"],
            "lines": [ln for ln in r["lines"] if ln["points"]],
            "ruleset_version": r["ruleset_version"],
        }
        for r in rows
        if r["list"]
    ]
    if format != "json":
        flat = [{**{k: v for k, v in x.items() if k != "lines"},
                 "reasons": "; ".join(x["reasons"]),
                 "lines": "; ".join(f"{ln['reason']} ({ln['points']:+g})" for ln in x["lines"])}
                for x in listed]  # fmt: skip
        return _table(flat, format, f"lists-{m:%Y-%m}", {})
    return _table(listed, format, "", {"month": m.isoformat(), "source": source})


@router.get("/scorecards")
async def get_scorecards(
    request: Request,
    state: StateDep,
    view: ViewDep,
    rules: RulesDep,
    month: str | None = None,
    format: Format = "json",
) -> Response:
    """Every community's titles (温馨家园 / 品质楼宇) for a month: pass or fail."""
    m = _month(month)
    city = _city(state)
    scope = _scope(view, Level.COMMUNITY, city, None)
    lo, hi = month_bounds(m)
    async with _ready(request, state) as conn:
        rows = await figures(
            conn, level=Level.COMMUNITY, period=Period.MONTH, start=lo, end=hi, scope=scope
        )
        names = await _names(conn)
    out = []
    for r in rows:
        titles = scorecard(r, [], rules.rules)
        out.append(
            {
                "community_id": r["key"],
                "name": names.get(r["key"], r["key"]),
                "month": lo.isoformat(),
                **{t["name"]: t["passed"] for t in titles},
                "failed": "; ".join(
                    f"{t['name']}: {ln['label']}"
                    for t in titles
                    for ln in t["lines"]
                    if not ln["passed"]
                ),
            }
        )
    return _table(out, format, f"scorecards-{m:%Y-%m}", {"month": lo.isoformat()})


@router.get("/scorecards/{community_id}")
async def get_scorecard(
    request: Request,
    state: StateDep,
    view: ViewDep,
    rules: RulesDep,
    community_id: str,
    month: str | None = None,
    format: Format = "json",
) -> Response:
    """One community's scorecard: each line's value, threshold, pass or fail, evidence and
    trend over the months before."""
    city = _city(state)
    _scope(view, Level.COMMUNITY, city, community_id)
    m = _month(month)
    async with _ready(request, state) as conn:
        card = await community_scorecard(conn, community_id, m, rules)
    card["name"] = city.communities[community_id].name
    if format != "json":
        flat = [{"community_id": community_id, "month": card["month"], "title": t["name"],
                 **{k: v for k, v in ln.items() if k not in ("trend", "evidence")},
                 "alerts": " ".join(e["alert_id"] for e in ln["evidence"])}
                for t in card["titles"] for ln in t["lines"]]  # fmt: skip
        return _table(flat, format, f"scorecard-{community_id}-{m:%Y-%m}", {})
    return JSONResponse(_jsonable(card))


@router.get("/public")
async def get_public(
    state: StateDep, month: str | None = None, format: Format = "json"
) -> Response:
    """Public disclosure (no token): the published grades and a few company-level figures of
    a month (the latest published month by default). No device, alert or person is named."""
    async with state.store.pool.connection() as conn:
        if month is None:
            cur = await conn.execute("SELECT max(month) FROM sv_credit")
            row = await cur.fetchone()
            m = row[0] if row and row[0] else _today().replace(day=1)
        else:
            m = _month(month)
        rows = await published(conn, m)
    out = [
        {
            "org_name": r["org_name"],
            "grade": r["grade"],
            "score": r["score"],
            "list": r["list"] or "",
            **{k: r["figures"].get(k) for k in PUBLIC_FIGURES},
        }
        for r in rows
    ]
    meta = {
        "month": m.isoformat(),
        "published": bool(rows),
        "ruleset_version": rows[0]["ruleset_version"] if rows else None,
        "published_at": rows[0]["published_at"] if rows else None,
    }
    return _table(out, format, f"public-{m:%Y-%m}", meta)
