"""Scale: the operator's memory with many active grants, and how soon it is back after a restart.

SPEC: with 10,000 active grants, operator memory <= 300 MB, and a restart back to steady state
in <= 30 s. alice's requests fill one namespace until every one is granted; the operator's
resident memory (VmRSS of its process) is read once it is idle. Then it is stopped with SIGTERM
and started again. Steady state is back when a new request, in a namespace of its own, is
authorized as quickly as before the restart (within the larger of twice the median and the
maximum of the probes before it), and every grant is still Active and bound, none deleted.

    PYTHONPATH=operator python -m bench.scale [--grants 10000] [--smoke]
"""

from __future__ import annotations

import statistics
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
    BULK_NAMESPACE,
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


class Grants:
    """What the watches see: bindings in the bulk namespace, and the probes' own bindings."""

    def __init__(self, prober: Prober) -> None:
        self.prober = prober
        self.sightings = Sightings()

    def binding_seen(self, kind: str, body: dict[str, Any], at: float) -> None:
        metadata = body["metadata"]
        namespace, name = metadata["namespace"], metadata["name"]
        if namespace != BULK_NAMESPACE:
            if kind == "ADDED":
                self.prober.nudge(namespace)
            return
        if kind == "ADDED":
            self.sightings.mark("bound", name, at)
        elif kind == "DELETED":
            self.sightings.mark("deleted", name, at)

    def request_seen(self, kind: str, body: dict[str, Any], at: float) -> None:
        if body["metadata"]["namespace"] != BULK_NAMESPACE:
            return
        if (body.get("status") or {}).get("phase") == "Active":
            self.sightings.mark("active", body["metadata"]["name"], at)


class Probes:
    """New requests, each in a namespace of its own, timed from creation to authorized."""

    def __init__(self, run: Run, prober: Prober, namespaces: list[str]) -> None:
        self.run = run
        self.prober = prober
        self.free = list(namespaces)
        self.sent: dict[str, float] = {}

    def send(self) -> str:
        namespace = self.free.pop(0)
        self.sent[namespace] = time.time()
        self.run.requester.ok("POST", requests_path(namespace),
                              common.access_request(self.run.id, "BENCH-4 probe"))
        self.prober.expect(namespace, time.time() + self.prober.slow)
        return namespace

    def latency(self, namespace: str) -> float | None:
        answered = self.prober.answered.get(namespace)
        return None if answered is None else answered - self.sent[namespace]


def fill(run: Run, grants: Grants, count: int, concurrency: int, timeout: float,
         ) -> dict[str, Any]:
    common.say(f"filling {BULK_NAMESPACE} with {count} grants")
    failures: list[str] = []

    def create(_: int) -> None:
        try:
            run.requester.ok("POST", requests_path(BULK_NAMESPACE),
                             common.access_request(run.id, "BENCH-4 scale", duration="4h"))
        except Exception as error:  # noqa: BLE001 - counted and reported
            failures.append(str(error))

    started = time.time()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(create, range(count)))
    created = time.time()
    common.say(f"{count - len(failures)} requests created in {created - started:.1f}s;"
               " waiting for every grant")
    deadline = started + timeout
    wanted = count - len(failures)
    while time.time() < deadline and (grants.sightings.count("bound") < wanted
                                      or grants.sightings.count("active") < wanted):
        time.sleep(0.5)
    bound, active = grants.sightings.of("bound"), grants.sightings.of("active")
    return {
        "started": started,
        "requested": count,
        "create_failures": len(failures),
        "first_failures": failures[:3],
        "create_seconds": round(created - started, 2),
        "bound": len(bound),
        "active": len(active),
        "all_active_after_s": round(max(active.values()) - started, 2) if active else None,
        "grants_per_s": round(len(active) / (max(active.values()) - started), 2)
        if active else None,
    }


def cluster_state(run: Run) -> dict[str, Any]:
    """Every grant of the run in the bulk namespace: its phase, and whether its binding is there."""
    listed = run.admin.ok("GET", requests_path(BULK_NAMESPACE),
                          labelSelector=f"{RUN_LABEL}={run.id}")
    bindings = run.admin.ok("GET", bindings_path(BULK_NAMESPACE), labelSelector=MANAGED)
    names = {item["metadata"]["name"] for item in bindings["items"]}
    phases = Counter(str((item.get("status") or {}).get("phase")) for item in listed["items"])
    unbound = sum(1 for item in listed["items"]
                  if ((item.get("status") or {}).get("binding") or "") not in names)
    return {"phases": dict(phases), "bindings": len(names), "active_without_binding": unbound}


def main(argv: list[str] | None = None) -> int:
    parser = common.parser(__doc__)
    parser.add_argument("--grants", type=int, help="active grants (default: 10000; smoke: 200)")
    parser.add_argument("--concurrency", type=int, default=16,
                        help="concurrent create calls while filling (default: 16)")
    parser.add_argument("--timeout", type=float, default=900,
                        help="seconds the filling may take (default: 900)")
    parser.add_argument("--probes", type=int, default=10,
                        help="requests timed before the restart, for the usual latency")
    parser.add_argument("--restart-timeout", type=float, default=120,
                        help="seconds to wait for steady state after the restart")
    parser.add_argument("--probe-interval", type=float, default=0.5,
                        help="seconds between probes after the restart")
    args = parser.parse_args(argv)
    count = common.sized(args.grants, 10000, 200, args.smoke)
    parameters = {"grants": count, "concurrency": args.concurrency, "timeout_s": args.timeout,
                  "probes": args.probes, "restart_timeout_s": args.restart_timeout,
                  "probe_interval_s": args.probe_interval}
    most_probes = args.probes + int(args.restart_timeout / args.probe_interval) + 2

    with Run("scale", args, parameters, full_size=count >= 10000) as run:
        run.ensure_namespaces([BULK_NAMESPACE])
        probe_namespaces = run.namespaces(most_probes)
        run.start_operator()
        idle = run.operator.memory()
        prober = Prober(run.admin, want=True)
        grants = Grants(prober)
        probes = Probes(run, prober, probe_namespaces)
        horizon = time.time() + args.timeout + args.restart_timeout + 600
        try:
            with Watch(run.admin, f"{RBAC}/rolebindings", grants.binding_seen,
                       label_selector=MANAGED, until=horizon), \
                 Watch(run.admin, f"{REQUESTS}/accessrequests", grants.request_seen,
                       label_selector=f"{RUN_LABEL}={run.id}", until=horizon):
                cpu_before = run.operator.cpu_seconds()
                meter = run.cpu_meter()
                filled = fill(run, grants, count, args.concurrency, args.timeout)
                fill_cpu = meter.close()
                at_all_active = run.operator.memory()
                settled = run.settle(timeout=900)
                cpu_fill = run.operator.cpu_seconds() - cpu_before
                steady = run.operator.memory()
                filled["settled_after_s"] = (round(settled - filled["started"], 2) if settled
                                             else None)
                common.say(f"steady with {filled['active']} active grants:"
                           f" RSS {steady['rss_bytes'] / 2**20:.0f} MiB")

                before = []
                for _ in range(args.probes):
                    namespace = probes.send()
                    prober.wait([namespace], time.time() + 30)
                    before.append(probes.latency(namespace))
                    time.sleep(0.2)
                usual = [x for x in before if x is not None]
                threshold = (max(2 * statistics.median(usual), max(usual)) if usual else 1.0)

                window = common.CallWindow(run.admin)
                stopping = run.operator.stop()
                restarted = run.operator.start()
                run.profile("restart")
                meter = run.cpu_meter()
                restart = after_restart(run, probes, restarted, threshold, args)
                restart_cpu = meter.close()
                quiet_at = run.operator.wait_quiet(timeout=120)
                profile = run.profile_done()
                calls = window.close(filled["active"], "active grant at restart")
                state = cluster_state(run)
                memory_after = run.operator.memory()
        finally:
            prober.close()

        deleted = grants.sightings.count("deleted")
        restart_s = restart["steady_after_s"]
        consistent = (state["phases"].get("Active", 0) >= filled["active"] and deleted == 0
                      and state["active_without_binding"] == 0)
        if not consistent:
            run.notes.append(f"after the restart: phases {state['phases']}, {deleted} bindings"
                             f" deleted, {state['active_without_binding']} without binding")
        run.notes.append(f"the API calls at restart include the grants of"
                         f" {len(restart['probes'])} probes (about 4 calls each)")
        if filled["active"] < count:
            run.notes.append(f"only {filled['active']} of {count} grants were Active within"
                             f" {args.timeout}s: memory was read at that size")
        restart_measured = (f"> {args.restart_timeout:.0f} s (not reached)" if restart_s is None
                            else f"{restart_s:.1f} s")
        checks = [
            (f"operator memory at {filled['active']} grants", "<= 300 MB",
             f"{steady['rss_bytes'] / 1e6:.0f} MB",
             steady["rss_bytes"] <= TARGETS["scale_memory_bytes"]),
            ("restart back to steady state", "<= 30 s", restart_measured,
             restart_s is not None and restart_s <= TARGETS["scale_restart_s"] and consistent),
        ]
        figures = {
            "figures": {
                "fill": filled,
                "memory": {"idle_before_fill": idle, "all_active": at_all_active,
                           "steady": steady,
                           "after_restart": memory_after,
                           "bytes_per_grant": round((steady["rss_bytes"] - idle["rss_bytes"])
                                                    / max(1, filled["active"]))},
                "probes_before_restart": summary(usual),
                "usual_latency_threshold_s": round(threshold, 4),
                "restart": {**restart, "stop_seconds": round(stopping, 2),
                            "quiet_after_s": round(quiet_at - restarted, 2) if quiet_at else None,
                            "bindings_deleted": deleted, "state_after": state,
                            "consistent": consistent},
            },
            "api_calls": calls,
            "operator": {"cpu_seconds_fill": round(cpu_fill, 2),
                         "cpu_ms_per_grant": round(1000 * cpu_fill / max(1, filled["active"]), 2)},
            "cpu_cores_busy": {"fill": fill_cpu, "restart": restart_cpu},
            "profile": profile,
            "checks": [dict(zip(("figure", "target", "measured", "met"), c, strict=True))
                       for c in checks],
        }
        mib = 2**20
        rows = [
            ["grants requested / Active / bound",
             f"{count} / {filled['active']} / {filled['bound']}"],
            ["filling: creates took, all Active after, operator settled after",
             f"{filled['create_seconds']} s, {filled['all_active_after_s']} s"
             f" ({filled['grants_per_s']} grants/s), {filled['settled_after_s']} s"],
            ["RSS idle / all Active / settled / peak", f"{idle['rss_bytes'] / mib:.0f} /"
             f" {at_all_active['rss_bytes'] / mib:.0f} / {steady['rss_bytes'] / mib:.0f} /"
             f" {steady['peak_rss_bytes'] / mib:.0f} MiB"],
            ["RSS per grant", f"{figures['figures']['memory']['bytes_per_grant']} bytes"],
            ["probe latency before restart (median / max)",
             f"{common.ms(summary(usual)['median'])} / {common.ms(summary(usual)['max'])}"],
            ["SIGTERM to exit", f"{stopping:.2f} s"],
            ["restart to first probe at usual latency", restart_measured],
            ["restart to operator idle",
             _s(figures["figures"]["restart"]["quiet_after_s"])],
            ["probes after restart (sent at +s: latency s)", _probes(restart["probes"])],
            ["after restart", f"{state['phases']}, {state['bindings']} bindings,"
             f" {deleted} deleted"],
            ["RSS after restart", f"{memory_after['rss_bytes'] / mib:.0f} MiB"],
        ]
        tables = [
            ("scale", common.table([[a, str(b)] for a, b in rows], ["figure", "value"])),
            ("targets", common.target_rows(checks)),
            ("CPU cores busy while filling", common.cpu_line(fill_cpu)),
            ("CPU cores busy from the restart to steady state", common.cpu_line(restart_cpu)),
            ("API calls at restart, per active grant (counted by the API server)",
             common.calls_table(calls)),
        ]
        if profile:
            tables.append(("where the operator's CPU went after the restart (py-spy, self %)",
                           common.table([[n, str(p)] for n, p in profile["self_percent"]],
                                        ["function", "%"])))
        run.finish(figures, tables)
    return 0


def _probes(probes: list[dict[str, Any]], shown: int = 8) -> str:
    text = ", ".join(f"+{p['sent_after_s']:.1f}: {_s(p['latency_s'])}" for p in probes[:shown])
    return text + (f", ... ({len(probes)} in all)" if len(probes) > shown else "")


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def after_restart(run: Run, probes: Probes, restarted: float, threshold: float,
                  args: Any) -> dict[str, Any]:
    """Probe until one is authorized within `threshold`: the operator serves as usual again."""
    sent: list[str] = []
    deadline = restarted + args.restart_timeout
    steady_at = None
    while time.time() < deadline and probes.free:
        sent.append(probes.send())
        pause_until = time.time() + args.probe_interval
        while time.time() < pause_until:
            good = [probes.prober.answered[n] for n in sent
                    if (probes.latency(n) or threshold + 1) <= threshold]
            if good:
                steady_at = min(good)
                break
            time.sleep(0.01)
        if steady_at is not None:
            break
    probes.prober.wait(sent, time.time() + 30)
    return {
        "steady_after_s": round(steady_at - restarted, 3) if steady_at else None,
        "probes": [{"sent_after_s": round(probes.sent[n] - restarted, 3),
                    "latency_s": probes.latency(n)} for n in sent],
    }


if __name__ == "__main__":
    sys.exit(main())
