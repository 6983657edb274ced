"""The local control plane's audit webhook: the API server sends its audit events to Daypass.

Writes an audit policy and a webhook kubeconfig into the state folder and returns the API
server flags that use them. The operator serves the webhook with the API server's own
loopback certificate, which the local CA signed for 127.0.0.1.
"""

from __future__ import annotations

import os
from pathlib import Path

# Offset from the API server's port, so that private clusters on other ports never share one.
PORT_OFFSET = 2500
OPERATOR_USER = "system:serviceaccount:daypass-system:daypass"

POLICY = f"""\
# Which requests the API server reports to Daypass: everyone's, at Metadata level, except
# the control plane's own and the operator's, which are never anyone's use of a grant.
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
  - level: None
    users: ["{OPERATOR_USER}", system:kube-controller-manager, system:apiserver,
            system:kube-scheduler]
  - level: None
    nonResourceURLs: ["/healthz*", "/readyz*", "/livez*", /version, /metrics, "/openapi*",
                      "/api", "/apis", "/api/*", "/apis/*"]
  - level: Metadata
"""


def port(apiserver_port: int) -> int:
    return int(os.environ.get("DAYPASS_AUDIT_WEBHOOK_PORT", apiserver_port + PORT_OFFSET))


def apiserver_args(state: Path, apiserver_port: int) -> list[str]:
    """Write the policy and webhook kubeconfig; the flags that make the API server use them."""
    policy = state / "audit-policy.yaml"
    policy.write_text(POLICY)
    webhook = state / "audit-webhook.kubeconfig"
    webhook.write_text(f"""\
apiVersion: v1
kind: Config
clusters:
  - name: daypass
    cluster:
      server: https://127.0.0.1:{port(apiserver_port)}/audit
      certificate-authority: {state / "ca.crt"}
users:
  - name: kube-apiserver
contexts:
  - name: daypass
    context: {{cluster: daypass, user: kube-apiserver}}
current-context: daypass
""")
    return [
        f"--audit-policy-file={policy}",
        f"--audit-webhook-config-file={webhook}",
        "--audit-webhook-mode=batch",
        # Small batches, sent at least every second: usage shows up while the grant runs.
        "--audit-webhook-batch-max-wait=1s",
        "--audit-webhook-initial-backoff=1s",
    ]


def operator_args(state: Path, apiserver_port: int) -> list[str]:
    """The `daypass run` flags that serve this webhook."""
    return [
        "--bind-address", "127.0.0.1",
        "--audit-webhook-port", str(port(apiserver_port)),
        "--audit-webhook-cert", str(state / "apiserver.crt"),
        "--audit-webhook-key", str(state / "apiserver.key"),
    ]
