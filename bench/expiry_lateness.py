"""Expiry lateness: how long after `expiresAt` a grant's binding is gone and its requester denied,
when many grants end in the same second.

SPEC: for 1,000 grants ending in the same second, p99 <= 1 s and max <= 2 s after `expiresAt`.
The clock of a grant starts when it is granted, so the expiries are lined up by choosing each
request's duration as it is sent: the common second, less the send time, less the grant latency
seen so far. Each request is in a namespace of its own, so "denied" is about one grant. The
lateness of each grant is measured against its own `status.expiresAt`, and how many expiresAt
really fall in one second is reported. The floor is admin deleting as many RoleBindings directly,
all at once, with as many concurrent calls as the operator makes (32), timed from the start.

    PYTHONPATH=operator python -m bench.expiry_lateness [--grants 1000] [--rate 20] [--smoke]
"""

from __future__ import annotations

import statistics
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402
from bench.common import (  # noqa: E402
    FLOOR_LABEL,
    MANAGED,
    RBAC,
    REQUESTS,
    RUN_LABEL,
    TARGETS,
    Prober,
    Run,
    Sightings,
    Watch,
    bindings_path,
    requests_path,
    summary,
)

# Access cannot end before its binding is gone, so a namespace is asked tightly once the watch
# has seen the binding deleted; until then only this often, in case the watch were late.
SAFETY = 1.0


def floor(run: Run, namespaces: list[str], concurrency: int, timeout: float) -> dict[str, Any]:
    """Delete the RoleBindings as fast as `concurrency` calls allow; time each from the start."""
    common.say(f"floor: {len(namespaces)} direct RoleBindings, deleted all at once")
    sightings = Sightings()
    prober = Prober(run.admin, want=False, slow=SAFETY)

    def seen(kind: str, body: dict[str, Any], at: float) -> None:
        namespace = body["metadata"]["namespace"]
        if kind == "ADDED":
            sightings.mark("bound", namespace, at)
        elif kind == "DELETED" and sightings.mark("gone", namespace, at):
            prober.nudge(namespace)

    done: dict[str, float] = {}

    def delete(namespace: str) -> None:
        run.admin.ok("DELETE", bindings_path(namespace, "bench-floor"))
        done[namespace] = time.time()

    def create(namespace: str) -> None:
        run.admin.ok("POST", bindings_path(namespace), common.direct_binding(run.id))

    try:
        with Watch(run.admin, f"{RBAC}/rolebindings", seen,
                   label_selector=f"{FLOOR_LABEL}={run.id}", until=time.time() + 10 * timeout):
            with ThreadPoolExecutor(concurrency) as pool:
                list(pool.map(create, namespaces))
            sightings.wait_count("bound", len(namespaces), time.time() + timeout)
            time.sleep(1)
            start = time.time()
            for namespace in namespaces:
                prober.expect(namespace, start + prober.slow)
            with ThreadPoolExecutor(concurrency) as pool:
                list(pool.map(delete, namespaces))
            prober.wait(namespaces, time.time() + timeout)
    finally:
        prober.close()
    gone = sightings.of("gone")
    return {
        "deleted": len(done),
        "delete_call_done": summary([t - start for t in done.values()]),
        "binding_gone": summary([t - start for t in gone.values()]),
        "requester_denied": summary([t - start for t in prober.answered.values()]),
        "gone_to_denied": summary([prober.answered[n] - gone[n] for n in gone
                                   if n in prober.answered]),
        "all_deleted_after_s": round(max(done.values()) - start, 3) if done else None,
    }


class Expiries:
    """Grants lined up to end in one second, and what is seen of them as they end."""

    def __init__(self, run: Run, namespaces: list[str]) -> None:
        self.run = run
        self.namespaces = namespaces
        self.sightings = Sightings()
        self.prober = Prober(run.admin, want=False, slow=SAFETY)
        self.sent: dict[str, float] = {}
        self.latencies: deque[float] = deque(maxlen=50)
        self.failures: list[str] = []

    def binding_seen(self, kind: str, body: dict[str, Any], at: float) -> None:
        namespace = body["metadata"]["namespace"]
        if kind == "ADDED" and self.sightings.mark("bound", namespace, at):
            if namespace in self.sent:
                self.latencies.append(at - self.sent[namespace])
        elif kind == "DELETED" and self.sightings.mark("gone", namespace, at):
            self.prober.nudge(namespace)

    def request_seen(self, kind: str, body: dict[str, Any], at: float) -> None:
        namespace = body["metadata"]["namespace"]
        status = body.get("status") or {}
        if status.get("expiresAt") and self.sightings.mark("expires_known", namespace, at):
            self.sightings.note("expires", namespace, common.parse_time(status["expiresAt"]))
        expired = status.get("phase") == "Expired"
        if expired and self.sightings.mark("expired", namespace, at) and status.get("endedAt"):
            self.sightings.note("ended", namespace, common.parse_time(status["endedAt"]))

    def send(self, rate: float, end_at: float, deadline: float) -> None:
        """Ask for one grant per namespace at `rate`, each to end at `end_at`."""

        def ask(index: int) -> None:
            namespace = self.namespaces[index]
            estimate = statistics.median(self.latencies) if self.latencies else 0.05
            now = time.time()
            duration_ms = max(1000, int((end_at - now - estimate) * 1000))
            self.sent[namespace] = now
            try:
                self.run.requester.ok(
                    "POST", requests_path(namespace),
                    common.access_request(self.run.id, "BENCH-2 expiry lateness",
                                          duration=f"{duration_ms}ms"))
            except Exception as error:  # noqa: BLE001 - counted and reported
                self.failures.append(str(error))

        with ThreadPoolExecutor(16) as pool:
            for index in common.paced(len(self.namespaces), rate, deadline):
                pool.submit(ask, index)


def main(argv: list[str] | None = None) -> int:
    parser = common.parser(__doc__)
    parser.add_argument("--grants", type=int, help="grants ending together (default: 1000;"
                        " smoke: 30)")
    parser.add_argument("--rate", type=float, help="requests sent per second while lining the"
                        " grants up (default: 20; smoke: 15)")
    parser.add_argument("--margin", type=float, help="seconds between the last request sent and"
                        " the common expiry (default: 10; smoke: 4)")
    parser.add_argument("--timeout", type=float, default=60,
                        help="give up on grants still not ended this long after expiresAt")
    parser.add_argument("--concurrency", type=int, default=32,
                        help="concurrent deletes of the floor, as many as the operator's")
    args = parser.parse_args(argv)
    grants = common.sized(args.grants, 1000, 30, args.smoke)
    rate = common.sized(args.rate, 20, 15, args.smoke)
    margin = common.sized(args.margin, 10, 4, args.smoke)
    parameters = {"grants": grants, "rate_per_s": rate, "margin_s": margin,
                  "timeout_s": args.timeout, "floor_concurrency": args.concurrency}

    with Run("expiry_lateness", args, parameters, full_size=grants >= 1000) as run:
        namespaces = run.namespaces(2 * grants)
        run.start_operator()
        meter = run.cpu_meter()
        base = floor(run, namespaces[:grants], args.concurrency, args.timeout)

        floor_cpu = meter.close()
        expiries = Expiries(run, namespaces[grants:])
        end_at = time.time() + grants / rate + margin
        horizon = end_at + args.timeout + 30
        common.say(f"{grants} grants lined up to end at {common.iso(end_at)}")
        try:
            with Watch(run.admin, f"{RBAC}/rolebindings", expiries.binding_seen,
                       label_selector=MANAGED, until=horizon), \
                 Watch(run.admin, f"{REQUESTS}/accessrequests", expiries.request_seen,
                       label_selector=f"{RUN_LABEL}={run.id}", until=horizon):
                expiries.send(rate, end_at, end_at - 2)
                sent = len(expiries.sent) - len(expiries.failures)
                expiries.sightings.wait_count("expires_known", sent, end_at - 1.5)
                run.operator.wait_quiet(timeout=max(0.5, end_at - 1 - time.time()))
                window = common.CallWindow(run.admin)
                cpu_before = run.operator.cpu_seconds()
                run.profile("expiry")
                meter = run.cpu_meter()
                expires: dict[str, float] = expiries.sightings.noted("expires")
                for namespace, moment in expires.items():
                    expiries.prober.expect(namespace, moment + expiries.prober.slow)
                expiries.prober.wait(list(expires), max(expires.values(), default=end_at)
                                     + args.timeout)
                expiry_cpu = meter.close()
                run.settle()
                profile = run.profile_done()
                cpu = run.operator.cpu_seconds() - cpu_before
        finally:
            expiries.prober.close()
        ended = expiries.sightings.count("expired")
        calls = window.close(ended, "expiry")

        gone = expiries.sightings.of("gone")
        ended_at: dict[str, float] = expiries.sightings.noted("ended")
        denied = expiries.prober.answered
        lateness = {
            "requester_denied": summary([denied[n] - expires[n] for n in expires if n in denied]),
            "binding_gone": summary([gone[n] - expires[n] for n in expires if n in gone]),
            "gone_to_denied": summary([denied[n] - gone[n] for n in gone if n in denied]),
            "status_ended_at": summary([ended_at[n] - expires[n] for n in expires
                                        if n in ended_at]),
        }
        moments = list(expires.values())
        spread = {
            "grants_with_expiry": len(moments),
            "first": common.iso(min(moments)) if moments else None,
            "last": common.iso(max(moments)) if moments else None,
            "spread_s": round(max(moments) - min(moments), 3) if moments else None,
            "in_densest_second": common.densest_window(moments),
        }
        if spread["in_densest_second"] < len(moments):
            run.notes.append(f"only {spread['in_densest_second']} of {len(moments)} expiresAt fell"
                             f" in one second (spread {spread['spread_s']}s): grant latency"
                             " varied while they were lined up")
        not_ended = len(moments) - len(denied)
        if not_ended:
            run.notes.append(f"{not_ended} requesters were still authorized {args.timeout}s"
                             " after expiresAt")
        latency = summary(list(expiries.latencies))
        denied_stats = lateness["requester_denied"]
        ratio = common.ratio(denied_stats, base["requester_denied"])
        checks = [
            ("expiry lateness p99", "<= 1 s", common.ms(denied_stats["p99"]),
             common.met(denied_stats["p99"], TARGETS["expiry_lateness_p99_s"])),
            ("expiry lateness max", "<= 2 s", common.ms(denied_stats["max"]),
             common.met(denied_stats["max"], TARGETS["expiry_lateness_max_s"])),
        ]
        figures = {
            "figures": {"lateness": lateness, "floor": base, "ratio_to_floor": ratio,
                        "expires_at": spread, "create_failures": len(expiries.failures),
                        "grant_latency_while_lining_up_last_50": latency},
            "api_calls": calls,
            "operator": {"cpu_seconds": round(cpu, 2),
                         "cpu_ms_per_expiry": round(1000 * cpu / max(1, ended), 2),
                         **run.operator.memory()},
            "cpu_cores_busy": {"floor_phase": floor_cpu, "expiry_phase": expiry_cpu},
            "profile": profile,
            "checks": [dict(zip(("figure", "target", "measured", "met"), c, strict=True))
                       for c in checks],
        }
        rows = common.figure_rows({
            "floor: start -> delete call done": base["delete_call_done"],
            "floor: start -> binding gone (watch)": base["binding_gone"],
            "floor: start -> requester denied": base["requester_denied"],
            "daypass: expiresAt -> binding gone": lateness["binding_gone"],
            "daypass: expiresAt -> requester denied": denied_stats,
            "daypass: expiresAt -> status endedAt": lateness["status_ended_at"],
            "floor: binding gone -> denied": base["gone_to_denied"],
            "daypass: binding gone -> denied": lateness["gone_to_denied"],
        }, "ms")
        rows.append(["ratio daypass/floor (denied)", "",
                     *(common.times(ratio[s]) for s in common.STATS)])
        tables = [
            ("expiresAt of the grants", ", ".join(f"{k} {v}" for k, v in spread.items())),
            ("lateness (ms)", common.table(rows, ["figure", "n", "min", "median", "p99",
                                                  "max"])),
            ("targets", common.target_rows(checks)),
            ("API calls per expiry (counted by the API server)", common.calls_table(calls)),
            ("operator", f"CPU {cpu:.1f}s for {ended} expiries"),
            ("CPU cores busy while the floor ran", common.cpu_line(floor_cpu)),
            ("CPU cores busy while the grants expired", common.cpu_line(expiry_cpu)),
        ]
        if profile:
            tables.append(("where the operator's CPU went (py-spy, self %)",
                           common.table([[n, str(p)] for n, p in profile["self_percent"]],
                                        ["function", "%"])))
        run.finish(figures, tables)
    return 0


if __name__ == "__main__":
    sys.exit(main())
