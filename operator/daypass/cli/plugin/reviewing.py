"""`approve`, `deny` and `revoke`: an AccessReview on a request, and the operator's answer.

Whose review counts is the operator's decision, never this command's: a review it rejects is
recorded on both objects, so it is created all the same and the rejection is reported.
"""

from __future__ import annotations

import argparse
import sys
import time

from daypass.cli.plugin.output import warn
from daypass.cli.plugin.session import Session
from daypass.durations import parse_duration
from daypass.models import API_VERSION, AccessReview, Decision, Outcome

POLL = 0.2
DECISIONS = {"approve": Decision.APPROVE, "deny": Decision.DENY, "revoke": Decision.REVOKE}


def review(args: argparse.Namespace) -> int:
    session = Session(args.kubeconfig, args.context, args.namespace)
    namespace, name = session.namespace, args.name
    decision = DECISIONS[args.command]
    # Fail on a mistyped name here: a review of no request would only be rejected later.
    session.get_request(namespace, name)

    spec = {"request": name, "decision": decision.value}
    if args.reason:
        spec["reason"] = args.reason
    body = {"apiVersion": API_VERSION, "kind": "AccessReview",
            "metadata": {"generateName": f"{name[:240]}-"}, "spec": spec}
    created = session.create_review(namespace, body)
    review_name = created["metadata"]["name"]

    deadline = time.monotonic() + parse_duration(args.timeout).total_seconds()
    while True:
        status = AccessReview.model_validate(session.get_review(namespace, review_name)).status
        if status.outcome == Outcome.ACCEPTED:
            print(f"Accepted: {status.message or f'{decision.value} of {name} recorded'}"
                  f" (accessreview {namespace}/{review_name})")
            return 0
        if status.outcome == Outcome.REJECTED:
            print(f"Rejected: {status.message or 'no reason given'}"
                  f" (accessreview {namespace}/{review_name})", file=sys.stderr)
            return 1
        if time.monotonic() >= deadline:
            break
        time.sleep(POLL)
    warn(f"accessreview {namespace}/{review_name} was created, but the operator has not answered"
         f" within {args.timeout}: is it running? Look again with"
         f" `kubectl get accessreview {review_name} -n {namespace}`")
    return 1
