"""`kubectl daypass`: ask for access, review it, and audit it, without writing YAML.

This module only reads the command line. Each command runs in daypass.cli.plugin, imported once
the arguments are known, so that `--help` and usage errors never load kubernetes, pydantic or
kopf: a plugin that takes a second to print its help is a plugin nobody reads the help of.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

ROLE_KINDS = {"clusterrole": "ClusterRole", "role": "Role"}

EPILOG = """\
examples:
  kubectl daypass eligible
  kubectl daypass request edit -n team-a --for 30m --reason "INC-4211 payments down" --wait
  kubectl daypass list --mine
  kubectl daypass list --to-review
  kubectl daypass approve alice-edit-x7k2p -n team-a --reason "checked with on-call"
  kubectl daypass extend alice-edit-x7k2p -n team-a --for 30m
  kubectl daypass show alice-edit-x7k2p -n team-a
  kubectl daypass audit --since 7d -A -o csv

exit status: 0 on success; 1 when the command failed, was refused, or ended without access
(a request denied, a review rejected, a wait that timed out); 2 on a usage error.
"""


def role_kind(text: str) -> str:
    """`--kind`, written as kubectl writes resource kinds: any case."""
    kind = ROLE_KINDS.get(text.lower())
    if kind is None:
        raise argparse.ArgumentTypeError(
            f"unknown role kind {text!r}: write ClusterRole or Role"
        )
    return kind


def duration(text: str) -> str:
    """A Go-style duration, checked here so a typo is a usage error before any API call."""
    from daypass.durations import DurationError, parse_duration

    try:
        parse_duration(text)
    except DurationError as error:
        raise argparse.ArgumentTypeError(str(error)) from error
    return text.strip()


def _connection(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    """kubectl's connection flags. Accepted before and after the command, as kubectl does."""
    # Below the command, an absent flag must not overwrite the value given above it.
    default = None if top else argparse.SUPPRESS
    group = parser.add_argument_group("connection")
    group.add_argument("--kubeconfig", metavar="PATH", default=default,
                       help="kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)")
    group.add_argument("--context", default=default,
                       help="kubeconfig context to use (default: the current context)")
    group.add_argument("-n", "--namespace", metavar="NS", default=default,
                       help="namespace (default: the context's namespace, else default)")


def _all_namespaces(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-A", "--all-namespaces", action="store_true",
                        help="every namespace, not only the current one")


def _output(parser: argparse.ArgumentParser, choices: Sequence[str], default: str) -> None:
    parser.add_argument("-o", "--output", choices=choices, default=default,
                        help=f"output format: {', '.join(choices)} (default: {default})")


def _wait(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--wait", action="store_true",
                        help="wait until the request is Active or has ended, and say which")
    parser.add_argument("--timeout", type=duration, default="5m",
                        help="how long --wait waits (default: 5m)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubectl daypass",
        description="Daypass: ask for a role in a namespace, for a stated time and reason;\n"
        "approve, deny or revoke requests; see who had what access, when.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _connection(parser, top=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=summary, description=summary)
        _connection(sub)
        return sub

    request = command("request", "ask for a role in a namespace")
    request.add_argument("role", metavar="ROLE",
                         help="the role: edit, clusterrole/edit or role/debugger")
    request.add_argument("--kind", type=role_kind,
                         help="ClusterRole or Role (default: the kind your policies name for"
                         " ROLE, else ClusterRole)")
    request.add_argument("--for", dest="duration", type=duration, metavar="DURATION",
                         help="how long, once granted: 90s, 30m, 1h30m (default: the policy's"
                         " defaultDuration)")
    request.add_argument("--reason", help="why, for example a ticket id and a few words")
    request.add_argument("--start-at", metavar="TIME",
                         help="a scheduled start: a time (2026-12-04T09:00:00Z, local time"
                         " without a zone) or a duration from now (2h)")
    request.add_argument("--name", help="the request's name (default: generated)")
    _wait(request)

    listing = command("list", "list access requests")
    _all_namespaces(listing)
    listing.add_argument("--mine", action="store_true",
                         help="only your own requests (in every namespace unless -n is given)")
    listing.add_argument("--to-review", action="store_true",
                         help="only pending requests you may approve, never your own (in every"
                         " namespace unless -n is given)")
    _output(listing, ["table", "json", "yaml"], "table")

    for decision, summary in (
        ("approve", "approve a pending request (you must be an approver of its policy)"),
        ("deny", "deny a pending request (you must be an approver of its policy)"),
        ("revoke", "end a request's access now (its requester or an approver)"),
    ):
        review = command(decision, summary)
        review.add_argument("name", metavar="NAME", help="the AccessRequest")
        review.add_argument("--reason", help="why, recorded with the review")
        review.add_argument("--timeout", type=duration, default="10s",
                            help="how long to wait for the operator's answer (default: 10s)")

    extend = command("extend", "ask for more time: a follow-up request of the same role")
    extend.add_argument("name", metavar="NAME", help="the AccessRequest to extend")
    extend.add_argument("--for", dest="duration", type=duration, metavar="DURATION",
                        required=True, help="how much longer: 30m, 1h")
    extend.add_argument("--reason", help="why (default: the reason of the request extended)")
    _wait(extend)

    show = command("show", "a request's timeline and summary")
    show.add_argument("name", metavar="NAME", help="the AccessRequest")
    _output(show, ["text", "json", "yaml"], "text")

    eligible = command("eligible", "what you may ask for, where, for how long, approved by whom")
    _output(eligible, ["table", "json", "yaml"], "table")

    audit = command("audit", "who had what access, when, approved by whom, and its use")
    audit.add_argument("--since", default="7d", metavar="AGE",
                       help="the report's start: an age such as 7d, 36h, 1d12h, or a time"
                       " (2026-12-01T00:00:00Z) (default: 7d)")
    _all_namespaces(audit)
    _output(audit, ["table", "json", "csv"], "table")

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from daypass.cli.plugin import run

    return run(args)


if __name__ == "__main__":
    sys.exit(main())
