"""Grant latency: from creating an auto-approved AccessRequest to its requester being authorized.

SPEC: p50 <= 100 ms and p99 <= 300 ms at 20 requests/s. alice asks for `edit` at a steady rate,
each request in a namespace of its own, so that each authorization answer is about one grant.
The time runs from sending the create to the first SubjectAccessReview (admin asking for alice
and her groups, `list pods` in that namespace) that answers yes. The floor is the same
RoleBinding created directly by admin at the same rate, checked the same way, in the same run.

    PYTHONPATH=operator python -m bench.grant_latency [--rate 20] [--duration 60] [--smoke]
"""

from __future__ import annotations

import sys
import time
from collections import Counter
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


def measure(run: Run, namespaces: list[str], rate: float, timeout: float, *, direct: bool,
            fast: float, slow: float) -> dict[str, Any]:
    """Create one grant per namespace at `rate`; time each until the requester is authorized."""
    what = "direct RoleBindings" if direct else "AccessRequests"
    common.say(f"{len(namespaces)} {what} at {rate}/s")
    sightings = Sightings()
    prober = Prober(run.admin, want=True, fast=fast, slow=slow)
    sent: dict[str, float] = {}
    created: dict[str, float] = {}
    failures: list[str] = []

    def seen(kind: str, body: dict[str, Any], at: float) -> None:
        namespace = body["metadata"]["namespace"]
        if kind == "ADDED" and sightings.mark("bound", namespace, at):
            prober.nudge(namespace)

    def ask(index: int) -> None:
        namespace = namespaces[index]
        sent[namespace] = time.time()
        try:
            if direct:
                run.admin.ok("POST", bindings_path(namespace), common.direct_binding(run.id))
            else:
                run.requester.ok("POST", requests_path(namespace),
                                 common.access_request(run.id, "BENCH-1 grant latency"))
        except Exception as error:  # noqa: BLE001 - counted and reported, the load goes on
            failures.append(str(error))
            return
        created[namespace] = time.time()
        prober.expect(namespace, created[namespace] + slow)

    label = f"{FLOOR_LABEL}={run.id}" if direct else MANAGED
    deadline = time.time() + len(namespaces) / rate + timeout + 30
    try:
        with Watch(run.admin, f"{RBAC}/rolebindings", seen, label_selector=label,
                   until=deadline):
            with ThreadPoolExecutor(16) as pool:
                for index in common.paced(len(namespaces), rate, deadline):
                    pool.submit(ask, index)
            prober.wait(list(created), time.time() + timeout)
    finally:
        prober.close()

    bound = sightings.of("bound")
    authorized = [prober.answered[n] - sent[n] for n in created if n in prober.answered]
    moments = sorted(sent.values())
    return {
        "offered": len(namespaces),
        "created": len(created),
        "authorized": len(authorized),
        "not_authorized_within_timeout": len(created) - len(authorized),
        "create_failures": len(failures),
        "first_failures": failures[:3],
        "offered_rate_per_s": round((len(moments) - 1) / (moments[-1] - moments[0]), 2)
        if len(moments) > 1 else None,
        "probes": prober.asked,
        "answered_after_binding_seen": prober.by_fast,
        "to_authorized": summary(authorized),
        "to_binding_seen": summary([bound[n] - sent[n] for n in created if n in bound]),
        "create_call": summary([created[n] - sent[n] for n in created]),
    }


def phases(run: Run) -> dict[str, int]:
    listed = run.admin.ok("GET", f"{common.REQUESTS}/accessrequests",
                          labelSelector=f"{RUN_LABEL}={run.id}")
    return dict(Counter(str((item.get("status") or {}).get("phase")) for item in listed["items"]))


def main(argv: list[str] | None = None) -> int:
    parser = common.parser(__doc__)
    parser.add_argument("--rate", type=float, help="requests per second (default: 20; smoke: 10)")
    parser.add_argument("--duration", type=float,
                        help="seconds of steady load (default: 60; smoke: 3)")
    parser.add_argument("--timeout", type=float, default=30,
                        help="give up on a grant not authorized this long after the load ends")
    parser.add_argument("--poll-interval", type=float, default=0.005,
                        help="seconds between authorization checks once the binding is seen")
    parser.add_argument("--slow-poll-interval", type=float, default=0.25,
                        help="seconds between authorization checks before the binding is seen")
    args = parser.parse_args(argv)
    rate = common.sized(args.rate, TARGETS["grant_latency_rate_per_s"], 10, args.smoke)
    duration = common.sized(args.duration, 60, 3, args.smoke)
    count = max(1, round(rate * duration))
    parameters = {"rate_per_s": rate, "duration_s": duration, "requests": count,
                  "poll_interval_s": args.poll_interval,
                  "slow_poll_interval_s": args.slow_poll_interval, "timeout_s": args.timeout}

    full = rate == TARGETS["grant_latency_rate_per_s"] and duration >= 60
    with Run("grant_latency", args, parameters, full_size=full) as run:
        namespaces = run.namespaces(2 * count)
        run.start_operator()
        meter = run.cpu_meter()
        floor = measure(run, namespaces[:count], rate, args.timeout, direct=True,
                        fast=args.poll_interval, slow=args.slow_poll_interval)

        floor_cpu = meter.close()
        run.operator.wait_quiet()
        window = common.CallWindow(run.admin)
        meter = run.cpu_meter()
        cpu_before = run.operator.cpu_seconds()
        run.profile("grant")
        grant = measure(run, namespaces[count:], rate, args.timeout, direct=False,
                        fast=args.poll_interval, slow=args.slow_poll_interval)
        grant_cpu = meter.close()
        run.settle()
        profile = run.profile_done()
        cpu = run.operator.cpu_seconds() - cpu_before
        calls = window.close(grant["created"], "grant")
        memory = run.operator.memory()
        outcome = phases(run)

        latency, base = grant["to_authorized"], floor["to_authorized"]
        ratio = common.ratio(latency, base)
        if grant["not_authorized_within_timeout"]:
            run.notes.append(f"{grant['not_authorized_within_timeout']} grants were not"
                             f" authorized within {args.timeout}s of the load's end")
        checks = [
            ("grant latency p50", "<= 100 ms", common.ms(latency["median"]),
             common.met(latency["median"], TARGETS["grant_latency_p50_s"])),
            ("grant latency p99", "<= 300 ms", common.ms(latency["p99"]),
             common.met(latency["p99"], TARGETS["grant_latency_p99_s"])),
        ]
        figures = {
            "figures": {"grant": grant, "floor": floor, "ratio_to_floor": ratio},
            "api_calls": calls,
            "operator": {"cpu_seconds": round(cpu, 2),
                         "cpu_ms_per_grant": round(1000 * cpu / max(1, grant["created"]), 2),
                         **memory, "phases": outcome},
            "cpu_cores_busy": {"floor_phase": floor_cpu, "grant_phase": grant_cpu},
            "profile": profile,
            "checks": [dict(zip(("figure", "target", "measured", "met"), c, strict=True))
                       for c in checks],
        }
        rows = common.figure_rows({
            "floor: created -> authorized": base,
            "daypass: created -> authorized": latency,
            "daypass: created -> binding seen": grant["to_binding_seen"],
            "floor: create call": floor["create_call"],
            "daypass: create call": grant["create_call"],
        }, "ms")
        rows.append(["ratio daypass/floor", "", *(common.times(ratio[s]) for s in common.STATS)])
        tables = [
            ("latency (ms)", common.table(rows, ["figure", "n", "min", "median", "p99", "max"])),
            ("targets", common.target_rows(checks)),
            ("API calls per grant (counted by the API server)", common.calls_table(calls)),
            ("operator", f"CPU {cpu:.1f}s ({figures['operator']['cpu_ms_per_grant']} ms per"
             f" grant), RSS {memory.get('rss_bytes', 0) / 2**20:.0f} MiB; phases {outcome}"),
            ("CPU cores busy while the floor ran", common.cpu_line(floor_cpu)),
            ("CPU cores busy while the grants ran", common.cpu_line(grant_cpu)),
        ]
        if profile:
            tables.append(("where the operator's CPU went (py-spy, self %)",
                           common.table([[n, str(p)] for n, p in profile["self_percent"]],
                                        ["function", "%"])))
        run.finish(figures, tables)
    return 0


if __name__ == "__main__":
    sys.exit(main())
