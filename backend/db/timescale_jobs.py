"""TimescaleDB storage maintenance: late data into the aggregates, and a watch on the jobs.

- ``refresh_aggregates``: ``CALL refresh_continuous_aggregate`` on both aggregates over all of
  history up to the hour that closed ``grace`` ago. TimescaleDB keeps an invalidation log of the
  time ranges changed below what it has materialised, and a refresh materialises only those
  ranges within its window: with no window start, late data of any age reaches the hourly and
  daily figures (the policies of 0002_b look back 3 and 5 days only), and a pass with nothing
  late costs a look at the log.
- ``watch_jobs``: the compression, retention and refresh jobs, as ``timescaledb_information.jobs``
  and ``job_stats`` show them. A job whose last run failed, or that has not succeeded for twice
  its interval (plus ``slack``), is counted in ``anju_storage_jobs{state}``, logged, and run
  here with ``CALL run_job(id)`` (at most once per its interval), so that compression, retention
  and refreshes go on when the scheduler cannot run them (seen on PostgreSQL 15.20 with
  TimescaleDB 2.28.3, where every background job fails while the same job succeeds from a
  session).

``job_state`` and ``should_run`` are pure (tested without a database); ``JobWatch`` keeps what
one process learnt between passes (when it first saw a job, what it ran and when) and the
metrics.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import psycopg
from prometheus_client import CollectorRegistry, Counter, Gauge

log = logging.getLogger("anju.db.maintenance")

JobKind = Literal["compression", "retention", "refresh"]
JobState = Literal["ok", "failing", "overdue", "paused"]
KINDS: dict[str, JobKind] = {
    "policy_compression": "compression",
    "policy_columnstore": "compression",
    "policy_retention": "retention",
    "policy_refresh_continuous_aggregate": "refresh",
}
STATES: tuple[JobState, ...] = ("ok", "failing", "overdue", "paused")

_JOBS = """
SELECT j.job_id, j.proc_name, coalesce(c.view_name, j.hypertable_name, ''), j.scheduled,
       j.schedule_interval, s.last_run_status, s.last_successful_finish,
       coalesce(s.job_status = 'Running', false), coalesce(s.total_failures, 0)
FROM timescaledb_information.jobs j
LEFT JOIN timescaledb_information.job_stats s ON s.job_id = j.job_id
LEFT JOIN timescaledb_information.continuous_aggregates c
       ON c.materialization_hypertable_name = j.hypertable_name
WHERE j.proc_name = ANY(%s)
ORDER BY j.job_id
"""


@dataclass(frozen=True, slots=True)
class Job:
    job_id: int
    kind: JobKind
    relation: str  # the hypertable, or the continuous aggregate a refresh job fills
    scheduled: bool
    interval: timedelta
    last_status: str | None  # 'Success', 'Failed', or None before its first run
    last_success: datetime | None
    running: bool
    failures: int


def job_state(
    job: Job, *, now: datetime, first_seen: datetime, slack: timedelta = timedelta(minutes=10)
) -> JobState:
    """How the scheduler is doing with this job (pure)."""
    if not job.scheduled:
        return "paused"  # an administrator's choice: reported, not run
    if job.last_status == "Failed":
        return "failing"
    since = job.last_success or first_seen
    if now - since > 2 * job.interval + slack:
        return "overdue"
    return "ok"


def should_run(job: Job, state: JobState, *, now: datetime, last_anju_run: datetime | None) -> bool:
    """Whether anju runs the job itself now: failing or overdue, not running at the moment,
    and not already run by anju within its interval (pure)."""
    if state not in ("failing", "overdue") or job.running:
        return False
    return last_anju_run is None or now - last_anju_run >= job.interval


class JobWatch:
    """What the watch learnt between passes, and its Prometheus metrics."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        slack: timedelta = timedelta(minutes=10),
    ) -> None:
        self.clock = clock
        self.slack = slack
        self.first_seen: dict[int, datetime] = {}
        self.anju_ran: dict[int, datetime] = {}
        self.anju_ok: dict[int, datetime] = {}
        m = _metrics(registry or CollectorRegistry())
        self.jobs, self.runs, self.behind, self.failures = m


_JobMetrics = tuple[Gauge, Counter, Gauge, Gauge]
# One set per registry: a restarted maintenance task reuses the metrics it registered.
_BY_REGISTRY: weakref.WeakKeyDictionary[CollectorRegistry, _JobMetrics] = (
    weakref.WeakKeyDictionary()
)


def _metrics(r: CollectorRegistry) -> _JobMetrics:
    if (found := _BY_REGISTRY.get(r)) is not None:
        return found
    made = (
        Gauge(
            "anju_storage_jobs",
            "TimescaleDB compression, retention and refresh jobs as the scheduler left them, by"
            " kind and state (failing: last run failed; overdue: no success for twice its"
            " interval; paused: not scheduled)",
            ["kind", "state"],
            registry=r,
        ),
        Counter(
            "anju_storage_job_runs",
            "TimescaleDB jobs anju ran itself (CALL run_job) because the scheduler did not,"
            " by kind and result",
            ["kind", "result"],
            registry=r,
        ),
        Gauge(
            "anju_storage_job_behind_seconds",
            "Longest time since a TimescaleDB job of this kind last succeeded, run by the"
            " scheduler or by anju",
            ["kind"],
            registry=r,
        ),
        Gauge(
            "anju_storage_job_failures",
            "Failed runs TimescaleDB counts for its jobs (job_stats.total_failures), by kind",
            ["kind"],
            registry=r,
        ),
    )
    _BY_REGISTRY[r] = made
    return made


async def read_jobs(conn: psycopg.AsyncConnection) -> list[Job]:
    cur = await conn.execute(_JOBS, (list(KINDS),))
    return [
        Job(
            job_id=int(r[0]),
            kind=KINDS[r[1]],
            relation=r[2],
            scheduled=bool(r[3]),
            interval=r[4],
            last_status=r[5],
            last_success=r[6],
            running=bool(r[7]),
            failures=int(r[8]),
        )
        for r in await cur.fetchall()
    ]


async def watch_jobs(conn: psycopg.AsyncConnection, watch: JobWatch) -> tuple[int, int]:
    """One look at the jobs (autocommit connection): metrics, logs, and the runs anju makes.
    Returns (jobs failing or overdue, jobs run here)."""
    jobs = await read_jobs(conn)
    now = watch.clock()
    counts = {(k, s): 0 for k in set(KINDS.values()) for s in STATES}
    behind = dict.fromkeys(set(KINDS.values()), 0.0)
    failures = dict.fromkeys(set(KINDS.values()), 0)
    unhealthy = ran = 0
    for job in jobs:
        first = watch.first_seen.setdefault(job.job_id, now)
        state = job_state(job, now=now, first_seen=first, slack=watch.slack)
        counts[job.kind, state] += 1
        failures[job.kind] += job.failures
        if state in ("failing", "overdue"):
            unhealthy += 1
            if should_run(job, state, now=now, last_anju_run=watch.anju_ran.get(job.job_id)):
                log.warning(
                    "TimescaleDB job %d (%s of %s) is %s (last run %s, %d failures): running it",
                    job.job_id,
                    job.kind,
                    job.relation,
                    state,
                    job.last_status or "never",
                    job.failures,
                )
                watch.anju_ran[job.job_id] = now
                ran += 1
                if await _run_job(conn, job):
                    watch.anju_ok[job.job_id] = now
                    watch.runs.labels(job.kind, "ok").inc()
                else:
                    watch.runs.labels(job.kind, "failed").inc()
        if state != "paused":
            done = [t for t in (job.last_success, watch.anju_ok.get(job.job_id)) if t]
            since = max(done) if done else first
            behind[job.kind] = max(behind[job.kind], (now - since).total_seconds())
    for (kind, state), n in counts.items():
        watch.jobs.labels(kind, state).set(n)
    for kind, secs in behind.items():
        watch.behind.labels(kind).set(secs)
    for kind, n in failures.items():
        watch.failures.labels(kind).set(n)
    return unhealthy, ran


async def _run_job(conn: psycopg.AsyncConnection, job: Job) -> bool:
    try:
        await conn.execute("CALL run_job(%s::integer)", (job.job_id,))
    except psycopg.OperationalError:
        raise  # the connection is gone: the pass fails and is retried
    except psycopg.Error as exc:
        log.error(
            "TimescaleDB job %d (%s of %s) failed when run by anju: %s",
            job.job_id,
            job.kind,
            job.relation,
            str(exc).strip(),
        )
        return False
    return True


async def refresh_aggregates(conn: psycopg.AsyncConnection, grace: timedelta) -> None:
    """Materialise every invalidated range of both aggregates up to the hour that closed
    ``grace`` ago (and the days before it). Autocommit connection: the procedure refuses a
    transaction block."""
    await conn.execute(
        "CALL refresh_continuous_aggregate('readings_hourly', NULL,"
        " date_bin('1 hour', now() - %s::interval, '2000-01-01 00:00:00+00'))",
        (grace,),
    )
    await conn.execute(
        "CALL refresh_continuous_aggregate('readings_daily', NULL,"
        " date_bin('1 day', now() - %s::interval, '2000-01-01 00:00:00+00'))",
        (grace,),
    )
