"""``anju chaos``: profiles, the seeded fault schedule, the verdict, the table and the reports.

Faults (``KINDS``), one at a time with calm between them, in an order and with timings drawn
from ``--seed`` (the same seed gives the same schedule):

- ``broker_restart``: the uplink broker stopped and started again.
- ``db_restart``: PostgreSQL stopped and started again.
- ``backend_kill``: a backend worker SIGKILLed (the leader, with ``--workers N``), started again.
- ``backend_kill_db_down``: PostgreSQL stopped, the (leading) backend worker SIGKILLed while it
  holds records it could not commit, both started again.
- ``backend_kill_after_commit``: the (leading) backend worker exits at once, as if SIGKILLed,
  right after its next commit of new telemetry and before acknowledging it (the backend's
  test-only hook, ``ANJU_BACKEND_EXIT_AFTER_COMMIT_FILE``), and is started again: the gateways
  send the committed records again, and the dedupe must drop them. Armed again (at most
  ``EXIT_TRIES`` times) until the exit leaves readings the verdict counts committed and not
  acknowledged on a simulated gateway, so a resend of a committed reading happens for certain.
- ``gateway_kill``: a real gateway process SIGKILLed and started again.
- ``gateway_powercut``: SIGKILL, the outbox's last WAL write torn in half and its shared memory
  gone (as tests/test_gateway_resilience.py), started again.
- ``uplink_cut``: every gateway's uplink cut (real ones through a TCP proxy, simulated ones held
  back, each also taking the profile's ``storm_backlog`` readings at once) for minutes in the
  long profile, then all back at once: a replay storm, during which fire alarms are raised on
  simulated gateways every 0.3 s (``replay_storm`` in the table).
- ``clock_jump``: a real gateway process's wall clock jumps two hours ahead, then a day behind,
  then back (gateway/clock.py's test-only skew file), a fire alarm raised on its panel in each.
- ``poison``: NUL, lone surrogates, deep nesting and huge integers from a device (on a LAN) and
  from a gateway (on the uplink).
"""

from __future__ import annotations

import html
import json
import math
import random
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from anju import acl
from anju.chaos import verdict as v
from anju.chaos.city import (
    POISON_DEVICE,
    City,
    Departments,
    Plan,
    attach,
    audiences_of,
    build,
    leftovers,
    poison_gateway,
    rng_for,
)
from anju.demo import _anju
from anju.errors import AnjuError
from anju.now import now_ms

KINDS = (
    "broker_restart",
    "db_restart",
    "backend_kill",
    "backend_kill_db_down",
    "backend_kill_after_commit",
    "gateway_kill",
    "gateway_powercut",
    "uplink_cut",
    "clock_jump",
    "poison",
)
# Several workers form one group (docs/scaling.md): one leads, the others stand by.
MAX_WORKERS = 4
STORM_ALARMS = 10  # fire alarms raised on simulated gateways while a replay storm runs
# At most FLAP_BUDGET fires per panel in any FLAP_WINDOW_MS (ALERTS.md holds an alarm open as
# flapping after more than 5 raise/clear cycles in 10 minutes); the scheduled alarms leave
# CLOCK_JUMP_ALARMS of it for a clock jump's own fires on its gateway's panel.
FLAP_BUDGET = 4
FLAP_WINDOW_MS = 11 * 60_000
CLOCK_JUMP_ALARMS = 2
EXIT_TRIES = 3  # backend_kill_after_commit: exits until one leaves committed readings unacked
EXIT_WAIT_S = 30.0  # ... each within this of being armed (readings flow every 0.25 s)


@dataclass(frozen=True, slots=True)
class Profile:
    minutes: float
    communities: int
    real_gateways: int
    cut_s: float  # how long the uplink stays cut
    outage_s: float  # how long a broker or database stays down
    alarm_every_s: float
    storm_backlog: int = 300  # readings each simulated gateway takes at once during a cut
    # The short profile packs its faults: calm_s of calm before the first (default: 10 % of
    # the run, at most 15 s), gap_s between two (default: the run's length spread over them,
    # at least 3 s), and the run ends tail_s after the last fault's end, at the latest at
    # ``minutes`` (default: at ``minutes``). The short run's alarms in calm (which must be on
    # time) come in its first 12 s: by the end of its faults, its panels' flap budget
    # (FLAP_BUDGET) may be spent.
    calm_s: float | None = None
    gap_s: float | None = None
    tail_s: float | None = None


PROFILES = {
    "short": Profile(2.0, 8, 2, 8, 4, 4.0, calm_s=12.0, gap_s=2.0, tail_s=8.0),
    # A big replay storm, quickly: 28 simulated gateways with 6,000 readings each.
    "storm": Profile(1.0, 30, 2, 20, 4, 4.0, 6_000),
    "long": Profile(15.0, 30, 4, 120, 10, 5.0, 2_000),
}


@dataclass(frozen=True, slots=True)
class Step:
    at_s: float
    kind: str
    target: str
    hold_s: float


def schedule(kinds: tuple[str, ...], minutes: float, seed: int, prof: Profile) -> list[Step]:
    """The fault schedule: every kind at least once (in a seeded order), spread over the run
    with calm between them, the last ending a margin before the end."""
    rng = rng_for(seed, "schedule")
    total = minutes * 60
    usable = total * 0.8
    start = min(15.0, total * 0.1) if prof.calm_s is None else prof.calm_s
    order = list(kinds)
    rng.shuffle(order)
    holds = {
        "broker_restart": prof.outage_s,
        "db_restart": prof.outage_s,
        "backend_kill_db_down": prof.outage_s,
        "uplink_cut": prof.cut_s,
        "clock_jump": 5.0,  # each of its two jumps
    }
    need = sum(holds.get(k, 3.0) for k in order)
    rounds = max(1, int(usable // max(need * 2, 1)))
    steps = []
    kinds_all = order * rounds
    gap = (usable - start - need * rounds) / max(len(kinds_all), 1)
    t = start
    for k in kinds_all:
        hold = holds.get(k, 3.0) * rng.uniform(0.8, 1.2)
        steps.append(Step(round(t, 1), k, str(rng.randrange(1 << 16)), round(hold, 1)))
        t += hold + (max(gap, 3.0) if prof.gap_s is None else prof.gap_s) * rng.uniform(0.7, 1.3)
    return [s for s in steps if s.at_s + s.hold_s < total * 0.9]


class Chaos:
    def __init__(self, city: City, prof: Profile, seed: int, minutes: float) -> None:
        self.c = city
        self.prof = prof
        self.seed = seed
        self.minutes = minutes
        self.stop = threading.Event()
        self.feeding = threading.Event()
        self.feeding.set()
        self.log: list[str] = []
        self.threads: list[threading.Thread] = []
        self.busy: set[str] = set()  # panels with an alarm under way
        # When each panel last fired: no panel fires more than FLAP_BUDGET times in
        # FLAP_WINDOW_MS, or the product rightly holds its alarm open as flapping (ALERTS.md:
        # more than 5 raise/clear cycles in 10 minutes) and the next alarms are not raised.
        self.fired: dict[str, list[int]] = {}
        self.held: set[str] = set()  # backend workers a fault keeps down
        self._lock = threading.Lock()

    def say(self, text: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {text}"
        self.log.append(line)
        print(f"anju chaos: {line}", file=sys.stderr, flush=True)

    # --- traffic ---------------------------------------------------------------------------
    def _probe_loop(self, gw: str) -> None:
        p = self.c.probes[gw]
        devs = [d for d in p.devices if d in self.c.readers]
        while not self.stop.is_set():
            if self.feeding.is_set():
                for d in devs:
                    p.reading(d)
            self.stop.wait(self.c.plan.reading_interval_s)

    def _sim_loop(self) -> None:
        last_pump = 0.0
        while not self.stop.is_set():
            if self.feeding.is_set():
                for s in self.c.sims.values():
                    for d in s.devices:
                        if d in self.c.readers:
                            s.reading(d)
            if time.monotonic() - last_pump >= 0.5:
                for s in self.c.sims.values():
                    s.pump()
                last_pump = time.monotonic()
            self.stop.wait(self.c.plan.reading_interval_s)

    def _depth_loop(self) -> None:
        while not self.stop.is_set():
            t = now_ms()
            for gw, n in self.c.outbox_depths().items():
                self.c.depth_log.append((t, gw, n))
            self.stop.wait(2.0)

    def may_fire(self, dev: str, reserve: int = 0) -> bool:
        """Not busy, and within its budget less ``reserve`` (call with ``_lock`` held)."""
        if dev in self.busy:
            return False
        since = now_ms() - FLAP_WINDOW_MS
        return sum(1 for t in self.fired.get(dev, ()) if t > since) < FLAP_BUDGET - reserve

    def alarm(self, dev: str, n: int, reserve: int = CLOCK_JUMP_ALARMS) -> bool:
        """A fire on panel ``dev``, its reset 2 s later; False if the panel is busy or has
        fired its budget (``may_fire``; a clock jump's fires use the part kept for them)."""
        with self._lock:
            if not self.may_fire(dev, reserve):
                return False
            self.busy.add(dev)
            self.fired.setdefault(dev, []).append(now_ms())
        try:
            gw = self.c.panels[dev]
            sender = self.c.probes.get(gw) or self.c.sims[gw]
            ts = now_ms()
            data = {"system_addr": 1, "component_addr": n}
            if not sender.event(dev, "fire", ts, data):
                return True
            info = self.c.city.devices[dev]
            time.sleep(2.0)
            cleared = sender.event(dev, "reset", now_ms(), {})
            self.c.alarms.append(v.Alarm(dev, ts, audiences_of(info), cleared))
            time.sleep(1.0)  # the reset is in before the panel's next fire
            return True
        finally:
            with self._lock:
                self.busy.discard(dev)

    def alarm_soon(self, dev: str, n: int, reserve: int = CLOCK_JUMP_ALARMS) -> None:
        threading.Thread(
            target=self.alarm, args=(dev, n, reserve), daemon=True, name="alarm"
        ).start()

    def _alarm_loop(self) -> None:
        rng = rng_for(self.seed, "alarms")
        panels = sorted(self.c.panels)
        rng.shuffle(panels)
        i = 0
        while not self.stop.wait(self.prof.alarm_every_s * rng.uniform(0.7, 1.3)):
            if not self.feeding.is_set():
                continue
            for _ in range(len(panels)):  # the next panel that may fire
                dev = panels[i % len(panels)]
                i += 1
                if self.alarm(dev, i):
                    break

    def _supervise_loop(self) -> None:
        """A backend worker that exits (a leader that lost its lock connection leaves at once,
        docs/scaling.md) is started again, as systemd's Restart=always."""
        while not self.stop.wait(0.5):
            for name in self.c.backend_names():
                with self._lock:
                    if name in self.held:
                        continue
                p = self.c.children.procs.get(name)
                if p is not None and p.poll() is not None:
                    self.say(f"{name} exited ({p.returncode}); starting it again")
                    self.c.start_backend(name)

    def start_traffic(self) -> None:
        targets: list[tuple[Callable[..., None], tuple[str, ...]]] = [
            (self._sim_loop, ()),
            (self._depth_loop, ()),
            (self._alarm_loop, ()),
            (self._supervise_loop, ()),
        ]
        targets += [(self._probe_loop, (gw,)) for gw in self.c.probes]
        for fn, args in targets:
            t = threading.Thread(target=fn, args=args, daemon=True, name=fn.__name__)
            t.start()
            self.threads.append(t)

    # --- faults ----------------------------------------------------------------------------
    def inject(self, step: Step) -> None:
        c = self.c
        rng = rng_for(self.seed, step.target)
        real = sorted(c.lans)
        gw = rng.choice(real)
        t0 = now_ms()
        target = gw
        k = step.kind
        if k == "broker_restart":
            target = "uplink broker"
            c.uplink.stop()
            time.sleep(step.hold_s)
            c.uplink.start()
        elif k == "db_restart":
            target = "postgresql"
            c.pg.stop()
            time.sleep(step.hold_s)
            c.pg.start()
        elif k in ("backend_kill", "backend_kill_db_down"):
            worker = c.leader() or rng.choice(c.backend_names())
            target = worker
            with self._lock:
                self.held.add(worker)
            if k == "backend_kill_db_down":
                target = f"{worker} (postgresql down)"
                c.pg.stop()
                time.sleep(step.hold_s / 2)  # it gathers what it cannot commit
            c.kill(worker)
            time.sleep(step.hold_s / 2 if k == "backend_kill_db_down" else step.hold_s)
            if k == "backend_kill_db_down":
                c.pg.start()
            c.start_backend(worker)
            with self._lock:
                self.held.discard(worker)
        elif k == "backend_kill_after_commit":
            target = self._exit_after_commit(step)
        elif k in ("gateway_kill", "gateway_powercut"):
            c.kill(f"gateway-{gw}")
            if k == "gateway_powercut":
                power_cut(c.outboxes[gw])
            time.sleep(step.hold_s)
            c.start_gateway(gw)
        elif k == "uplink_cut":
            readers = sum(d in c.readers for s in c.sims.values() for d in s.devices)
            backlog = readers * self.prof.storm_backlog
            target = f"all {len(c.proxies) + len(c.sims)} gateways (+{backlog:,} readings)"
            for p in c.proxies.values():
                p.cut()
            for s in c.sims.values():
                s.offline.set()
            for s in c.sims.values():  # a backlog as of a longer cut
                for d in s.devices:
                    if d in c.readers:
                        for _ in range(self.prof.storm_backlog):
                            s.reading(d)
            time.sleep(step.hold_s)
            for p in c.proxies.values():
                p.restore()
            for s in c.sims.values():
                s.offline.clear()
            for s in c.sims.values():  # all at once
                s.pump()
            end = now_ms()
            c.faults.append(v.Fault(k, target, t0, end))
            self.say(f"fault {k} on {target}: {(end - t0) / 1000:.1f} s")
            self._storm(rng)
            return
        elif k == "clock_jump":
            # The gateway process's own clock (gateway/clock.py's skew file, looked at once a
            # second): two hours ahead, then a day behind, then back; a fire in each.
            panel = next((d for d, g in sorted(c.panels.items()) if g == gw), None)
            for i, jump in enumerate((2 * 3600 * 1000, -24 * 3600 * 1000)):
                c.jump_clock(gw, jump)
                time.sleep(1.5)
                if panel is not None:
                    self.alarm_soon(panel, 1000 + i, reserve=0)
                time.sleep(max(step.hold_s - 1.5, 3.5))
            c.jump_clock(gw, 0)
            time.sleep(1.5)
        elif k == "poison":
            probe = c.probes[gw]
            dev = next(iter(probe.devices))
            for raw in POISON_DEVICE:
                probe.raw(dev, raw)
            if c.sims:
                sim = c.sims[rng.choice(sorted(c.sims))]
                target = f"{gw} (device) and {sim.id} (gateway)"
                for raw in poison_gateway(sim.id):
                    sim.raw(raw)
            time.sleep(step.hold_s)
        end = now_ms()
        c.faults.append(v.Fault(k, target, t0, end))
        self.say(f"fault {k} on {target}: {(end - t0) / 1000:.1f} s")

    def _exit_after_commit(self, step: Step) -> str:
        """``backend_kill_after_commit``: the worker that commits next (the leader) exits
        after the commit, before its acknowledgement; started again after ``step.hold_s``.
        Returns the fault's target."""
        c = self.c
        names = c.backend_names()
        procs = c.children.procs
        with self._lock:
            self.held.update(names)  # this fault starts again what exits
        outcome = f"no commit in {EXIT_WAIT_S:g} s: nothing happened"
        for attempt in range(1, EXIT_TRIES + 1):
            c.arm_exit_after_commit()
            deadline = time.monotonic() + EXIT_WAIT_S
            while time.monotonic() < deadline and all(procs[n].poll() is None for n in names):
                time.sleep(0.05)
            c.arm_exit_after_commit(armed=False)
            exited = [n for n in names if procs[n].poll() is not None]
            if not exited:
                break
            worker = exited[0]
            # Readings of simulated gateways committed and never acknowledged: they come again.
            pending = set().union(*(s.unacknowledged() for s in c.sims.values()))
            again = len(pending & set(c.stored()))
            outcome = (
                f"{worker}: exit {procs[worker].returncode} after a commit, before its ack;"
                f" {again} committed readings unacknowledged (exit {attempt} of at most"
                f" {EXIT_TRIES})"
            )
            if again or attempt == EXIT_TRIES:
                break
            self.say(f"{outcome}; armed again")
            c.start_backend(worker)
        time.sleep(step.hold_s)
        for n in names:
            if procs[n].poll() is not None:
                c.start_backend(n)
        with self._lock:
            self.held.difference_update(names)
        return outcome

    def _storm(self, rng: random.Random) -> None:
        """Fire alarms on simulated gateways (connected all along: only the backend's
        priority for events counts) while the replay storm runs."""
        time.sleep(0.5)  # the backlogs on their way
        t0 = now_ms()
        panels = sorted(d for d, g in self.c.panels.items() if g in self.c.sims)
        rng.shuffle(panels)
        raised = 0
        for i, dev in enumerate(panels[: STORM_ALARMS * 2]):
            if raised >= STORM_ALARMS:
                break
            with self._lock:
                if not self.may_fire(dev, CLOCK_JUMP_ALARMS):
                    continue
            self.alarm_soon(dev, 2000 + i)
            raised += 1
            time.sleep(0.3)
        end = now_ms() + 1_000
        time.sleep(1.0)
        self.c.faults.append(v.Fault("replay_storm", f"{raised} alarms", t0, end))
        self.say(f"replay storm: {raised} alarms on simulated gateways")


def power_cut(outbox: Path) -> None:
    """A power cut during a write: the WAL ends with half of its last frame written again, and
    the shared memory is gone (tests/test_gateway_resilience.py)."""
    wal = Path(f"{outbox}-wal")
    if wal.exists():
        data = wal.read_bytes()
        if len(data) > 32:
            page = int.from_bytes(data[8:12], "big")
            frame = 24 + page
            n = (len(data) - 32) // frame
            if n >= 1:
                last = data[32 + (n - 1) * frame : 32 + n * frame]
                with open(wal, "ab") as f:
                    f.write(last[: frame // 2])
    Path(f"{outbox}-shm").unlink(missing_ok=True)


def run_chaos(
    profile: str,
    minutes: float | None,
    seed: int,
    workers: int,
    data: Path,
    out: Path | None = None,
    *,
    insecure: bool = False,
    breaks: tuple[str, ...] = (),
    faults: tuple[str, ...] = (),
) -> dict[str, Any]:
    """One run: the city, the schedule, the verdict. Returns the JSON summary (also written
    with the HTML report into ``out``, default ``data``).

    ``insecure``: anonymous brokers in clear text; ``breaks``: guarantees the backend breaks
    on purpose (``ANJU_BREAK``, test only); ``faults``: only these kinds (default all)."""
    prof = PROFILES[profile]
    minutes = minutes if minutes is not None else prof.minutes
    out = out or data
    notes = []
    unknown = sorted(set(faults) - set(KINDS))
    if unknown:
        raise AnjuError(f"--faults: unknown {', '.join(unknown)}; expected {', '.join(KINDS)}")
    if workers > MAX_WORKERS:
        notes.append(f"--workers {workers}: capped to {MAX_WORKERS}")
        workers = MAX_WORKERS
    if breaks:
        notes.append(f"GUARANTEES BROKEN ON PURPOSE (ANJU_BREAK={','.join(breaks)}): must FAIL")
    steps = schedule(tuple(k for k in KINDS if not faults or k in faults), minutes, seed, prof)
    plan = Plan(
        prof.communities, prof.real_gateways, workers, seed, data.resolve(),
        secure=not insecure, breaks=breaks,
        exit_after_commit=any(s.kind == "backend_kill_after_commit" for s in steps),
    )  # fmt: skip
    city = build(plan)
    chaos = Chaos(city, prof, seed, minutes)
    for n in notes:
        chaos.say(n)
    depts: Departments | None = None
    summary: dict[str, Any] = {}
    t_start = time.monotonic()
    try:
        attach(city)
        audiences = set().union(*(audiences_of(city.city.devices[d]) for d in city.panels))
        logins = {a: city.login("backend", acl.subscriber_user(*a)) for a in audiences}
        logins[Departments.VIEWER] = city.login("backend", acl.ALERTS_VIEWER_USER)
        depts = Departments(city.uplink.port, audiences, logins)
        depts.wait_ready(15)
        sim_argv = _anju(
            "simulate", "--registry", str(city.registry), "--seed", str(seed),
            "--false-alarms-per-year", "0", "--camera-events-per-hour", "0",
        )  # fmt: skip
        for gw in city.lans:  # as the city's installer (who may publish as any device)
            sim_argv += ["--lan", f"{gw}={city.lan_url(gw, acl.installer_user(gw))}"]
        city.started.append(city.children.start("simulators", sim_argv).pid)
        chaos.say(
            f"city up ({'insecure' if insecure else 'provisioned: passwords, ACLs, TLS'}): "
            f"{len(city.city.communities)} communities, {len(city.lans)} real gateways, "
            f"{len(city.sims)} simulated, {workers} backend worker(s); {len(steps)} faults "
            f"over {minutes:g} min, seed {seed}"
        )
        chaos.start_traffic()
        for step in steps:
            wait = t_start + step.at_s - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            chaos.inject(step)
        end = t_start + minutes * 60
        if prof.tail_s is not None and steps:
            end = min(end, time.monotonic() + prof.tail_s)
        rest = end - time.monotonic()
        if rest > 0:
            time.sleep(rest)
        chaos.feeding.clear()
        city.children.stop(["simulators"], timeout=5)
        chaos.say("devices stopped; waiting for the outboxes to drain")
        _drain(city, 180)
        chaos.stop.set()
        for t in chaos.threads:
            t.join(15)
        acked = city.acked()
        stored = city.stored()
        depths = city.outbox_depths()
        received = list(depts.got)
        seen = list(depts.seen)
    finally:
        chaos.stop.set()
        for t in chaos.threads:
            t.join(15)  # the supervisor starts no worker after this
        if depts is not None:
            depts.close()
        for p in list(city.probes.values()):
            p.close()
        for s in list(city.sims.values()):
            s.close()
        city.children.stop(["simulators"], timeout=5)
        city.children.stop(city.backend_names(), timeout=10)
        city.children.stop([n for n in city.children.procs if n.startswith("gateway-")], 5)
        for px in city.proxies.values():
            px.close()
        for srv in [*city.lans.values(), city.uplink]:
            srv.stop()
        city.pg.stop()
        city.children.close()
    left = leftovers(city)
    st = v.readings_stored_once(acked, stored)
    results = v.alarms_once(city.alarms, received, city.faults)
    lat = v.latency_split(v.latency_samples(results), city.faults)
    ran = {f.kind for f in city.faults}
    extra = []
    if "uplink_cut" in ran:
        extra.append(v.storm_alarms(lat))
    if "clock_jump" in ran:
        mine = {gw: {d.id for d in city.city.gateway_devices(gw)} for gw in city.lans}
        extra.append(v.clock_jumps_harmless(seen, city.faults, mine))
    checks = v.decide(st, results, depths, left, extra)
    summary = {
        "profile": profile,
        "minutes": minutes,
        "seed": seed,
        "workers": workers,
        "secure": not insecure,
        "breaks": list(breaks),
        "communities": len(city.city.communities),
        "real_gateways": len(city.lans),
        "simulated_gateways": len(city.sims),
        "readings_acknowledged": st.expected,
        "readings_lost": len(st.lost),
        "readings_duplicated": len(st.duplicates),
        "alarms": len(results),
        "faults": [asdict(f) for f in city.faults],
        "latency": lat,
        "checks": [asdict(c) for c in checks],
        "problems": [p for r in results for p in r.problems],
        "slowest": sorted(
            (
                {
                    "device": r.alarm.device_id,
                    "ts_ms": r.alarm.ts_ms,
                    "audience": "/".join(a),
                    "latency_ms": lat,
                    "under": r.under,
                }
                for r in results
                for a, lat in r.latency_ms.items()
            ),
            key=lambda x: -int(str(x["latency_ms"])),
        )[:12],
        "ok": all(c.ok for c in checks),
        "notes": notes,
        # What the viewer received about each alarm with a problem (to tell the harness from
        # the backend): every alert change of its device from 60 s before to 120 s after.
        "evidence": {
            f"{r.alarm.device_id}@{r.alarm.ts_ms}": [
                {
                    "recv_ms": m.recv_ms,
                    **{k: m.payload.get(k) for k in ("id", "type", "state", "occurred_at")},
                }
                for m in seen
                if m.payload.get("device_id") == r.alarm.device_id
                and -60_000 <= m.recv_ms - r.alarm.ts_ms <= 120_000
            ]
            for r in results
            if r.problems
        },
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "chaos-summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    (out / "chaos-report.html").write_text(
        report_html(summary, v.latency_samples(results), city.faults, city.depth_log),
        encoding="utf-8",
    )
    return summary


def _drain(city: City, timeout: float, settle_s: float = 20.0) -> None:
    """Until every outbox is empty and every acknowledged reading stored; once the outboxes
    are empty, ``settle_s`` at most for the last commits (a reading that is not stored by then
    never will be: the verdict says it is lost)."""
    deadline = time.monotonic() + timeout
    empty_since: float | None = None
    while time.monotonic() < deadline:
        for s in city.sims.values():
            s.pump(resend_after=3.0)
        if not any(city.outbox_depths().values()):
            empty_since = empty_since or time.monotonic()
            acked = set(city.acked())
            try:
                if acked <= set(city.stored()):
                    break
            except Exception:
                pass
            if time.monotonic() - empty_since >= settle_s:
                break
        else:
            empty_since = None
        time.sleep(1.0)
    time.sleep(3.0)  # late duplicates and alert changes would land by now


def table(summary: dict[str, Any]) -> str:
    lines = [
        f"anju chaos: profile {summary['profile']}, {summary['minutes']:g} min, seed "
        f"{summary['seed']}, {summary['communities']} communities ({summary['real_gateways']} "
        f"real gateways, {summary['simulated_gateways']} simulated), "
        f"{summary['workers']} backend worker(s)",
        "",
        f"{'check':<66} {'':4} detail",
    ]
    for c in summary["checks"]:
        lines.append(f"{c['name']:<66} {'ok' if c['ok'] else 'FAIL':4} {c['detail']}")
    lines += ["", f"{'alarm latency (device -> department)':<38} {'n':>5} {'p50 ms':>9} "
              f"{'p99 ms':>9} {'max ms':>9}"]  # fmt: skip
    for k, row in summary["latency"].items():
        lines.append(
            f"{k:<38} {row['n']:>5} {_ms(row['p50_ms']):>9} {_ms(row['p99_ms']):>9} "
            f"{_ms(row['max_ms']):>9}"
        )
    lines += ["", "faults:"]
    t0 = summary["faults"][0]["start_ms"] if summary["faults"] else 0
    for f in summary["faults"]:
        lines.append(
            f"  +{(f['start_ms'] - t0) / 1000:7.1f} s  {f['kind']:<25} "
            f"{(f['end_ms'] - f['start_ms']) / 1000:6.1f} s  {f['target']}"
        )
    lines.append("")
    lines.append("VERDICT: " + ("PASS" if summary["ok"] else "FAIL"))
    return "\n".join(lines)


def _ms(x: float) -> str:
    return "-" if isinstance(x, float) and math.isnan(x) else f"{x:,.0f}"


# --- the HTML report: inline SVG, no external assets -------------------------------------
_W, _H, _PAD = 900, 260, 50


def _svg_axes(t0: int, t1: int, ymax: float, ylabel: str, faults: list[v.Fault]) -> list[str]:
    span = max(t1 - t0, 1)

    def x(t: int) -> float:
        return _PAD + (t - t0) / span * (_W - 2 * _PAD)

    parts = [
        f'<rect x="{_PAD}" y="10" width="{_W - 2 * _PAD}" height="{_H - 40}" fill="#fafafa" '
        'stroke="#999"/>'
    ]
    colours = dict(
        zip(
            KINDS,
            ("#fdd", "#dfd", "#ddf", "#ffd", "#fbb", "#fdf", "#dff", "#eee", "#fed", "#def"),
            strict=False,
        )
    )
    for f in faults:
        x0, x1 = x(f.start_ms), max(x(f.end_ms), x(f.start_ms) + 2)
        parts.append(
            f'<rect x="{x0:.1f}" y="10" width="{x1 - x0:.1f}" height="{_H - 40}" '
            f'fill="{colours.get(f.kind, "#eee")}" opacity="0.8"><title>{html.escape(f.kind)} '
            f"{html.escape(f.target)}</title></rect>"
        )
        parts.append(
            f'<text x="{x0:.1f}" y="22" font-size="9" transform="rotate(0)">'
            f"{html.escape(f.kind)}</text>"
        )
    parts.append(f'<text x="4" y="{_H / 2}" font-size="10">{html.escape(ylabel)}</text>')
    parts.append(f'<text x="{_PAD}" y="{_H - 14}" font-size="10">0 s</text>')
    parts.append(
        f'<text x="{_W - _PAD - 40}" y="{_H - 14}" font-size="10">{span / 1000:.0f} s</text>'
    )
    parts.append(f'<text x="{_PAD - 4}" y="18" font-size="10" text-anchor="end">{ymax:g}</text>')
    return parts


def report_html(
    summary: dict[str, Any],
    samples: list[tuple[int, int]],
    faults: list[v.Fault],
    depth_log: list[tuple[int, str, int]],
) -> str:
    times = [t for t, _ in samples] + [t for t, _g, _n in depth_log]
    t0, t1 = (min(times), max(times)) if times else (0, 1)
    span = max(t1 - t0, 1)

    def x(t: int) -> float:
        return _PAD + (t - t0) / span * (_W - 2 * _PAD)

    def y(val: float, top: float) -> float:
        return 10 + (_H - 40) * (1 - min(val, top) / max(top, 1))

    ymax = max([lat for _, lat in samples] or [1])
    lat_svg = _svg_axes(t0, t1, ymax, "ms (log)", faults)
    for t, lat in samples:  # a log scale: 10 ms and 100 s on one plot
        cy = y(math.log10(1 + lat), math.log10(1 + ymax))
        lat_svg.append(f'<circle cx="{x(t):.1f}" cy="{cy:.1f}" r="2" fill="#c00"/>')
    series: dict[str, list[tuple[int, int]]] = {}
    for t, gw, n in depth_log:
        series.setdefault(gw, []).append((t, n))
    dmax = max([n for _t, _g, n in depth_log] or [1])
    depth_svg = _svg_axes(t0, t1, dmax, "records", faults)
    for i, (gw, pts) in enumerate(sorted(series.items())):
        colour = f"hsl({(i * 47) % 360},60%,40%)"
        path = " ".join(f"{x(t):.1f},{y(n, dmax):.1f}" for t, n in pts)
        depth_svg.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="1" points="{path}">'
            f"<title>{html.escape(gw)}</title></polyline>"
        )
    svg = '<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}">{body}</svg>'
    return (
        "<!doctype html><meta charset=utf-8><title>anju chaos report</title>"
        "<style>body{font-family:sans-serif;margin:2em}pre{background:#f4f4f4;padding:1em}"
        "</style><h1>anju chaos: "
        + ("PASS" if summary["ok"] else "FAIL")
        + "</h1><pre>"
        + html.escape(table(summary))
        + "</pre><h2>Alarm latency, device publish to department receipt (faults shaded)</h2>"
        + svg.format(w=_W, h=_H, body="".join(lat_svg))
        + "<h2>Outbox backlog per gateway</h2>"
        + svg.format(w=_W, h=_H, body="".join(depth_svg))
        + "<h2>Summary</h2><pre>"
        + html.escape(json.dumps(summary, indent=1))
        + "</pre>"
    )
