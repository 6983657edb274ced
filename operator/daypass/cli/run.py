"""`daypass run`: start the operator against the current kubeconfig context or in-cluster config.

Parses the command line, sets up logging and the audit log, and hands over to kopf. It never
prints a token: credentials stay inside the client configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import IO

import kopf
from pythonjsonlogger.json import JsonFormatter

from daypass import handlers  # noqa: F401 - registers the handlers with kopf
from daypass.audit import AuditLog
from daypass.kube import Kube, load_configuration


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
                     help="serve liveness at http://0.0.0.0:PORT/healthz (default: off)")
    return parser.parse_args(argv)


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

    configuration = load_configuration(args.kubeconfig, args.context)
    kube = Kube(configuration)
    stream: IO[str] = sys.stdout if args.audit_log == "-" else open(  # noqa: SIM115
        args.audit_log, "a", encoding="utf-8"
    )
    memo = kopf.Memo(
        kube=kube,
        audit=AuditLog(stream),
        identity=args.context or "the current context",
    )
    liveness = f"http://0.0.0.0:{args.health_port}/healthz" if args.health_port else None
    try:
        asyncio.run(kopf.operator(
            clusterwide=True,
            standalone=True,
            memo=memo,
            liveness_endpoint=liveness,
        ))
    except KeyboardInterrupt:
        pass
    finally:
        kube.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
