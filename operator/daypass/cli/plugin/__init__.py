"""The commands of `kubectl daypass`, one module per concern, loaded only when a command runs.

`run` hands a parsed command line to its command and turns a CommandError into one message on
stderr and exit status 1. Parsing lives in daypass.cli.kubectl, which imports none of this.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable


def _command(name: str) -> Callable[[argparse.Namespace], int]:
    if name in ("request", "extend"):
        from daypass.cli.plugin import asking

        return asking.request if name == "request" else asking.extend
    if name in ("approve", "deny", "revoke"):
        from daypass.cli.plugin import reviewing

        return reviewing.review
    if name == "audit":
        from daypass.cli.plugin import report

        return report.audit
    from daypass.cli.plugin import viewing

    commands: dict[str, Callable[[argparse.Namespace], int]] = {
        "list": viewing.list_requests, "show": viewing.show, "eligible": viewing.eligible,
    }
    return commands[name]


def run(args: argparse.Namespace) -> int:
    from daypass.cli.plugin.session import CommandError

    try:
        return _command(args.command)(args)
    except CommandError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
