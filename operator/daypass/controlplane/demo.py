"""The demo: a local control plane, Daypass installed, and alice gaining and losing access.

Every step prints the command a person would type, then its output, so the demo doubles as a
walk-through. It leaves the control plane running for exploring, and stops the operator.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from daypass.controlplane import cluster as local

ROOT = Path(__file__).resolve().parents[3]
INSTALL = [
    ROOT / "crds",
    ROOT / "deploy" / "namespace.yaml",
    ROOT / "deploy" / "rbac.yaml",
    ROOT / "deploy" / "user-rbac.yaml",
    ROOT / "deploy" / "admission",
]
POLICY = """\
apiVersion: daypass.dev/v1alpha1
kind: AccessPolicy
metadata:
  name: developers-edit
spec:
  subjects: {groups: [developers]}
  roles: [{kind: ClusterRole, name: edit}]
  namespaces: {names: [team-a]}
  maxDuration: 4h
  defaultDuration: 1h
  reason: {required: true, pattern: '^[A-Z]+-[0-9]+'}
"""
REQUEST = """\
apiVersion: daypass.dev/v1alpha1
kind: AccessRequest
metadata:
  name: alice-edit
  namespace: team-a
spec:
  role: {kind: ClusterRole, name: edit}
  duration: 30s
  reason: "INC-4211 payments API returns 500"
"""
BOLD, DIM, RESET = ("\033[1m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "", "")


def say(text: str) -> None:
    print(f"\n{BOLD}# {text}{RESET}", flush=True)


def run(running: local.LocalCluster, *args: str, user: str = "admin", stdin: str | None = None,
        show: str | None = None) -> subprocess.CompletedProcess[str]:
    context = "" if user == "admin" else f" --context {running.context(user)}"
    print(f"{DIM}$ kubectl{context} {show or ' '.join(args)}{RESET}", flush=True)
    result = running.kubectl(*args, user=user, input=stdin)
    output = (result.stdout + result.stderr).rstrip()
    if output:
        print(textwrap.indent(output, "  "), flush=True)
    return result


def wait_for_phase(running: local.LocalCluster, phase: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = running.kubectl("get", "accessrequest", "alice-edit", "-n", "team-a", "-o",
                                 "jsonpath={.status.phase}")
        if result.stdout.strip() == phase:
            return
        time.sleep(0.2)
    raise SystemExit(f"the request did not become {phase} within {timeout:.0f}s")


def main() -> int:
    say("Starting the local control plane (the first run builds Kubernetes; later runs reuse it)")
    running = local.start(apply=INSTALL)
    run(running, "apply", "-f", "-", stdin="apiVersion: v1\nkind: Namespace\nmetadata:\n"
        "  name: team-a\n", show="create namespace team-a")
    run(running, "delete", "accessrequest", "alice-edit", "-n", "team-a", "--ignore-not-found")

    say("The platform team writes a policy: developers may have edit in team-a, up to 4h")
    run(running, "apply", "-f", "-", stdin=POLICY, show="apply -f developers-edit.yaml")

    say("Starting the operator as its own service account user (daypass run --context daypass)")
    log_path = running.state_dir / "demo-operator.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "operator")}
    with open(log_path, "w") as log:
        operator = subprocess.Popen(
            [sys.executable, "-m", "daypass.cli.run", "run", "--kubeconfig",
             str(running.kubeconfig), "--context", running.context("daypass"),
             "--audit-log", str(running.state_dir / "demo-audit.jsonl"),
             *running.operator_args()],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )
    try:
        return _story(running, operator, log_path)
    finally:
        operator.terminate()
        operator.wait(timeout=15)


def _story(running: local.LocalCluster, operator: subprocess.Popen[bytes], log_path: Path,
           ) -> int:
    say("alice cannot list pods in team-a yet")
    run(running, "auth", "can-i", "list", "pods", "-n", "team-a", user="alice")

    say("alice asks for edit in team-a for 30 seconds, with a reason")
    run(running, "apply", "-f", "-", user="alice", stdin=REQUEST, show="apply -f alice-edit.yaml")
    wait_for_phase(running, "Active", timeout=30)
    run(running, "get", "accessrequest", "alice-edit", "-n", "team-a", "-o", "wide")
    run(running, "get", "accessrequest", "alice-edit", "-n", "team-a", "-o",
        "jsonpath={.spec.requester}", show="get areq alice-edit -n team-a -o"
        " jsonpath={.spec.requester}   # written by the API server, not by alice")
    print()

    say("alice now can, in team-a only")
    run(running, "auth", "can-i", "list", "pods", "-n", "team-a", user="alice")
    run(running, "auth", "can-i", "list", "pods", "-n", "team-b", user="alice")
    run(running, "get", "rolebindings", "-n", "team-a", "-l",
        "app.kubernetes.io/managed-by=daypass")

    say("Waiting for the 30 seconds to pass...")
    wait_for_phase(running, "Expired", timeout=45)
    run(running, "auth", "can-i", "list", "pods", "-n", "team-a", user="alice")

    say("What auditors see: events, and the request's own history")
    run(running, "get", "events", "-n", "team-a", "--field-selector",
        "involvedObject.kind=AccessRequest", "--sort-by", ".eventTime")
    run(running, "get", "accessrequest", "alice-edit", "-n", "team-a", "-o",
        "jsonpath={range .status.history[*]}{.at}  {.phase}  {.actor}: {.message}{\"\\n\"}{end}",
        show="get areq alice-edit -n team-a -o jsonpath='{range .status.history[*]}...'")

    say("Done. The control plane is still running; to explore it:")
    print(f"  export KUBECONFIG={running.kubeconfig}")
    print(f"  export PATH={running.bin_dir}:$PATH")
    print("  kubectl --context alice auth can-i list pods -n team-a")
    print(f"  operator log: {log_path}")
    print("  stop it with: make down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
