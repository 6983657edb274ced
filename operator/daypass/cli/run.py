"""`daypass run`: start the operator against the current kubeconfig context or in-cluster config.

Parses the command line, sets up logging and the audit log, and hands over to kopf. It never
prints a token: credentials stay inside the client configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from datetime import timedelta
from typing import IO

import kopf
from pythonjsonlogger.json import JsonFormatter

from daypass import handlers  # noqa: F401 - registers the handlers with kopf
from daypass.audit import AuditLog
from daypass.durations import DurationError, parse_duration
from daypass.endpoints import Endpoints
from daypass.kube import Kube, load_configuration
from daypass.leader import LeaderElection
from daypass.usage import UsageCounter


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="daypass",
        description="Daypass: just-in-time, time-boxed Kubernetes access.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the operator")
    run.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config,"
                     " then in-cluster)")
    run.add_argument("--context", help="kubeconfig context to use (default: the current one)")
    run.add_argument("--log-format", choices=["text", "json"], default="text",
                     help="one line per decision, human-readable or JSON (default: text)")
    run.add_argument("--log-level", default="INFO",
                     choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    run.add_argument("--audit-log", default="-", metavar="PATH",
                     help="where the JSON audit lines go, one per transition (default: - for"
                     " standard output)")
    run.add_argument("--health-port", type=int, default=0, metavar="PORT",
                     help="serve /healthz (liveness) and /readyz (readiness) on PORT"
                     " (default: off)")
    run.add_argument("--bind-address", default="0.0.0.0", metavar="ADDRESS",
                     help="address the health, metrics and audit webhook servers listen on"
                     " (default: 0.0.0.0)")
    run.add_argument("--metrics-port", type=int, default=0, metavar="PORT",
                     help="serve Prometheus metrics at /metrics on PORT (default: off)")
    run.add_argument("--retention", type=_duration, default="2160h", metavar="DURATION",
                     help="delete ended requests this long after they ended, with a final"
                     " audit line (default: 2160h, 90 days)")
    run.add_argument("--leader-election", action="store_true",
                     help="with several replicas, act only while holding the Lease"
                     " `daypass` in --lease-namespace")
    run.add_argument("--lease-namespace", default=os.environ.get("POD_NAMESPACE",
                                                                 "daypass-system"),
                     help="namespace of the leader-election Lease (default: $POD_NAMESPACE,"
                     " else daypass-system)")
    run.add_argument("--audit-webhook-port", type=int, default=0, metavar="PORT",
                     help="receive the API server's audit events at https://...:PORT/audit,"
                     " to count what each grant's holder did (default: off; usage is then"
                     " reported as not collected)")
    run.add_argument("--audit-webhook-cert", metavar="FILE",
                     help="TLS certificate for the audit webhook")
    run.add_argument("--audit-webhook-key", metavar="FILE", help="its private key")
    return parser.parse_args(argv)


def _duration(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except DurationError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def configure_logging(log_format: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter(
            "{asctime}{levelname}{name}{message}", style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        ))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("daypass").setLevel(level)
    # kopf explains itself at length; its warnings and errors are what an operator needs.
    logging.getLogger("kopf").setLevel(logging.WARNING if level != "DEBUG" else logging.DEBUG)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.log_format, args.log_level)
    if bool(args.audit_webhook_cert) != bool(args.audit_webhook_key):
        print("daypass: --audit-webhook-cert and --audit-webhook-key go together",
              file=sys.stderr)
        return 2

    configuration = load_configuration(args.kubeconfig, args.context)
    kube = Kube(configuration)
    stream: IO[str] = sys.stdout if args.audit_log == "-" else open(  # noqa: SIM115
        args.audit_log, "a", encoding="utf-8"
    )
    try:
        asyncio.run(_operate(args, kube, stream))
    except KeyboardInterrupt:
        pass
    finally:
        kube.close()
    return 0


async def _operate(args: argparse.Namespace, kube: Kube, stream: IO[str]) -> None:
    endpoints = Endpoints()
    await endpoints.serve(health_port=args.health_port, metrics_port=args.metrics_port,
                          audit_port=args.audit_webhook_port, audit_cert=args.audit_webhook_cert,
                          audit_key=args.audit_webhook_key, host=args.bind_address)
    election = None
    if args.leader_election:
        election = LeaderElection(kube.client, args.lease_namespace)
        endpoints.standing_by = True
        await asyncio.to_thread(election.acquire)
        endpoints.standing_by = False
        # Losing the Lease must stop every action at once, before another replica starts.
        election.keep(on_lost=lambda: os._exit(3))

    memo = kopf.Memo(
        kube=kube,
        audit=AuditLog(stream),
        identity=args.context or "the current context",
        endpoints=endpoints,
        usage=UsageCounter() if args.audit_webhook_port else None,
        retention=args.retention,
    )
    try:
        await kopf.operator(clusterwide=True, standalone=True, memo=memo)
    finally:
        if election is not None:
            await asyncio.to_thread(election.release)
        await endpoints.close()


if __name__ == "__main__":
    sys.exit(main())
