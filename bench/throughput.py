"""Throughput: grants per second sustained as the offered rate rises, against creating the same
RoleBindings directly.

SPEC: grants/s sustained >= 0.5 of the direct rate. At each offered rate (10, 20, 40, 80/s by
default, each for a bounded time) admin creates RoleBindings directly, then alice asks for as many
auto-approved grants; a grant counts when the watch sees its binding. Last comes a burst: as
many creates as `--concurrency` concurrent calls can make, first of RoleBindings (the direct
rate, the API server's floor), then of AccessRequests (the most the operator sustains).

    PYTHONPATH=operator python -m bench.throughput [--rates 10,20,40,80] [--step-duration 15]
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402
from bench.common import (  # noqa: E402
    BULK_NAMESPACE,
    FLOOR_LABEL,
    MANAGED,
    RBAC,
    TARGETS,
    Run,
    Sightings,
    Watch,
    bindings_path,
    requests_path,
    summary,
)

REQUEST_ANNOTATION = "daypass.dev/request"


class Grants:
    """Bindings as the watch sees them appear, keyed by the request (or direct binding) name."""

    def __init__(self) -> None:
        self.sightings = Sightings()

    def seen(self, kind: str, body: dict[str, Any], at: float) -> None:
        if kind != "ADDED":
            return
        metadata = body["metadata"]
        name = (metadata.get("annotations") or {}).get(REQUEST_ANNOTATION) or metadata["name"]
        self.sightings.mark("bound", name, at)


def step(run: Run, grants: Grants, count: int, rate: float | None, concurrency: int,
         timeout: float, *, direct: bool, tag: str) -> dict[str, Any]:
    """Offer `count` grants at `rate` (None: as fast as `concurrency` calls go); see them land."""
    common.say(f"{'direct' if direct else 'daypass'}: {count} at"
               f" {f'{rate}/s' if rate else f'full speed, {concurrency} concurrent calls'}")
    sent: dict[str, float] = {}
    returned: dict[str, float] = {}
    failures: list[str] = []

    def create(index: int) -> None:
        began = time.time()
        try:
            if direct:
                name = f"bench-{tag}-{index:05d}"
                run.admin.ok("POST", bindings_path(BULK_NAMESPACE),
                             common.direct_binding(run.id, name))
            else:
                body = run.requester.ok("POST", requests_path(BULK_NAMESPACE),
                                        common.access_request(run.id, "BENCH-3 throughput"))
                name = body["metadata"]["name"]
        except Exception as error:  # noqa: BLE001 - counted and reported
            failures.append(str(error))
            return
        sent[name], returned[name] = began, time.time()

    deadline = time.time() + (count / rate if rate else 0) + timeout
    with ThreadPoolExecutor(concurrency) as pool:
        if rate:
            for index in common.paced(count, rate, deadline):
                pool.submit(create, index)
        else:
            list(pool.map(create, range(count)))
    names = list(sent)
    bound = grants.sightings.of("bound")
    while len([n for n in names if n in bound]) < len(names) and time.time() < deadline:
        time.sleep(0.05)
        bound = grants.sightings.of("bound")

    landed = [bound[n] for n in names if n in bound]
    first = min(sent.values(), default=0.0)
    last_sent = max(sent.values(), default=0.0)
    elapsed = (max(landed) - first) if landed else None
    return {
        "offered_rate_per_s": rate,
        "offered": count,
        "sent": len(sent),
        "create_failures": len(failures),
        "first_failures": failures[:3],
        "sent_rate_per_s": round((len(sent) - 1) / (last_sent - first), 2)
        if len(sent) > 1 and last_sent > first else None,
        "granted": len(landed),
        "grants_per_s": round(len(landed) / elapsed, 2) if elapsed else None,
        "to_binding_seen": summary([bound[n] - sent[n] for n in names if n in bound]),
        "create_call": summary([returned[n] - sent[n] for n in names]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = common.parser(__doc__)
    parser.add_argument("--rates", help="offered rates, per second (default: 10,20,40,80;"
                        " smoke: 5,10)")
    parser.add_argument("--step-duration", type=float,
                        help="seconds each rate is offered (default: 15; smoke: 2)")
    parser.add_argument("--burst", type=int, help="creates at full speed, last (default: 1000;"
                        " smoke: 30)")
    parser.add_argument("--concurrency", type=int, default=32,
                        help="concurrent create calls, for RoleBindings and AccessRequests alike"
                        " (default: 32, as many as the operator's API calls)")
    parser.add_argument("--timeout", type=float, default=120,
                        help="seconds a step may take to drain after its load")
    args = parser.parse_args(argv)
    rates = [float(r) for r in common.sized(args.rates, "10,20,40,80", "5,10",
                                            args.smoke).split(",")]
    step_duration = common.sized(args.step_duration, 15, 2, args.smoke)
    burst = common.sized(args.burst, 1000, 30, args.smoke)
    parameters = {"rates_per_s": rates, "step_duration_s": step_duration, "burst": burst,
                  "concurrency": args.concurrency, "timeout_s": args.timeout}

    full = max(rates) >= 80 and burst >= 1000
    with Run("throughput", args, parameters, full_size=full) as run:
        run.ensure_namespaces([BULK_NAMESPACE])
        run.start_operator()
        operator_grants, direct_grants = Grants(), Grants()
        horizon = time.time() + len(rates) * 2 * (step_duration + args.timeout) + 4 * args.timeout
        steps: list[dict[str, Any]] = []
        with Watch(run.admin, f"{RBAC}/rolebindings", operator_grants.seen,
                   label_selector=MANAGED, until=horizon), \
             Watch(run.admin, f"{RBAC}/rolebindings", direct_grants.seen,
                   label_selector=f"{FLOOR_LABEL}={run.id}", until=horizon):
            window = common.CallWindow(run.admin)
            cpu_before = run.operator.cpu_seconds()
            run.profile("throughput")
            meter = run.cpu_meter()
            for index, rate in enumerate([*rates, None]):
                count = burst if rate is None else max(1, round(rate * step_duration))
                direct = step(run, direct_grants, count, rate, args.concurrency, args.timeout,
                              direct=True, tag=f"s{index}")
                daypass = step(run, operator_grants, count, rate, args.concurrency,
                               args.timeout, direct=False, tag=f"s{index}")
                run.settle()
                steps.append({"direct": direct, "daypass": daypass, "ratio": _ratio(
                    daypass["grants_per_s"], direct["grants_per_s"])})
            used = meter.close()
            profile = run.profile_done()
            cpu = run.operator.cpu_seconds() - cpu_before
            granted = sum(s["daypass"]["granted"] for s in steps)
            calls = window.close(granted, "grant")

        top = steps[-1]
        checks = [("throughput vs direct (full speed)", ">= 0.5x",
                   common.times(top["ratio"]),
                   None if top["ratio"] is None else top["ratio"] >= TARGETS["throughput_ratio"])]
        for entry in steps:
            if entry["daypass"]["granted"] < entry["daypass"]["sent"]:
                run.notes.append(f"at {entry['daypass']['offered_rate_per_s'] or 'full speed'}:"
                                 f" only {entry['daypass']['granted']} of"
                                 f" {entry['daypass']['sent']} granted within {args.timeout}s")
        figures = {
            "figures": {"steps": steps, "max_grants_per_s": top["daypass"]["grants_per_s"],
                        "direct_max_per_s": top["direct"]["grants_per_s"],
                        "ratio_to_floor": top["ratio"],
                        "active_grants_at_end": granted},
            "api_calls": calls,
            "operator": {"cpu_seconds": round(cpu, 2),
                         "cpu_ms_per_grant": round(1000 * cpu / max(1, granted), 2),
                         **run.operator.memory()},
            "cpu_cores_busy": used,
            "profile": profile,
            "checks": [dict(zip(("figure", "target", "measured", "met"), c, strict=True))
                       for c in checks],
        }
        rows = []
        for entry in steps:
            d, o = entry["direct"], entry["daypass"]
            rows.append([
                f"{o['offered_rate_per_s']:g}/s" if o["offered_rate_per_s"] else "full speed",
                str(o["sent"]), _rate(d["grants_per_s"]), _rate(o["grants_per_s"]),
                common.times(entry["ratio"]), common.ms(d["to_binding_seen"]["p99"]),
                common.ms(o["to_binding_seen"]["median"]), common.ms(o["to_binding_seen"]["p99"]),
            ])
        tables = [
            ("grants per second", common.table(rows, [
                "offered", "n", "direct/s", "daypass/s", "ratio", "direct p99",
                "daypass p50", "daypass p99"])),
            ("targets", common.target_rows(checks)),
            ("API calls per grant (counted by the API server)", common.calls_table(calls)),
            ("operator", f"CPU {cpu:.1f}s for {granted} grants"
             f" ({figures['operator']['cpu_ms_per_grant']} ms per grant)"),
            ("CPU cores busy over all steps", common.cpu_line(used)),
        ]
        if profile:
            tables.append(("where the operator's CPU went (py-spy, self %)",
                           common.table([[n, str(p)] for n, p in profile["self_percent"]],
                                        ["function", "%"])))
        run.finish(figures, tables)
    return 0


def _ratio(value: float | None, base: float | None) -> float | None:
    return round(value / base, 2) if value and base else None


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


if __name__ == "__main__":
    sys.exit(main())
