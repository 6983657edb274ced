"""Start, reuse and stop a real local Kubernetes control plane (etcd, kube-apiserver,
kube-controller-manager) on loopback, with the SPEC users authenticated by static tokens.

It never listens on anything but 127.0.0.1, and never signals a process it did not start
from the same state directory.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import fcntl
import functools
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from daypass.controlplane import auditwebhook, build

OPERATOR_USER = "system:serviceaccount:daypass-system:daypass"

USERS: dict[str, tuple[str, ...]] = {
    "admin": ("system:masters",),
    OPERATOR_USER: ("system:serviceaccounts", "system:serviceaccounts:daypass-system"),
    "alice": ("developers",),
    "carol": ("developers",),
    "bob": ("sre-leads",),
    "erin": ("sre-leads",),
    "dave": (),
}
CONTEXTS: dict[str, str] = {user: user for user in USERS} | {OPERATOR_USER: "daypass"}

# The controller manager gets an identity of its own so that what the controllers do (garbage
# collection, aggregation) is never attributed to admin; system:masters spares it the
# per-controller service-account credentials a production cluster would use.
CONTROLLER_MANAGER_USER = "system:kube-controller-manager"

DEFAULT_APISERVER_PORT = 16443
DEFAULT_ETCD_PORT = 12379
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/12"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc"
CLUSTER_NAME = "daypass-local"

ETCD = "etcd"
APISERVER = "kube-apiserver"
CONTROLLER_MANAGER = "kube-controller-manager"
COMPONENTS = (ETCD, APISERVER, CONTROLLER_MANAGER)


class ControlPlaneError(RuntimeError):
    """The local control plane could not be started or stopped; the message says why."""


@dataclass(frozen=True)
class Ports:
    apiserver: int
    etcd_client: int

    @property
    def etcd_peer(self) -> int:
        return self.etcd_client + 1

    def of(self, component: str) -> tuple[int, ...]:
        if component == ETCD:
            return (self.etcd_client, self.etcd_peer)
        if component == APISERVER:
            return (self.apiserver,)
        return ()

    @classmethod
    def from_env(cls) -> Ports:
        """$DAYPASS_APISERVER_PORT and $DAYPASS_ETCD_PORT (etcd's peer port is the next one)."""
        return cls(
            apiserver=int(os.environ.get("DAYPASS_APISERVER_PORT", DEFAULT_APISERVER_PORT)),
            etcd_client=int(os.environ.get("DAYPASS_ETCD_PORT", DEFAULT_ETCD_PORT)),
        )


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    pid: int | None
    ports: tuple[int, ...]

    @property
    def running(self) -> bool:
        return self.pid is not None


@dataclass(frozen=True)
class LocalCluster:
    """A running local control plane, and how to reach it as each SPEC user."""

    state_dir: Path
    kubeconfig: Path
    server: str
    ca_file: Path
    tokens: dict[str, str]
    bin_dir: Path
    ports: Ports = field(default_factory=Ports.from_env)

    def operator_args(self) -> list[str]:
        """The `daypass run` flags that serve this control plane's audit webhook."""
        return auditwebhook.operator_args(self.state_dir, self.ports.apiserver)

    def context(self, user: str) -> str:
        """The kubeconfig context of a user; the operator's is `daypass`."""
        return CONTEXTS.get(user, user)

    def kubectl(
        self, *args: str, user: str = "admin", input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the built kubectl as `user` (a user name or a context name); never raises."""
        command = [
            str(self.bin_dir / "kubectl"),
            "--kubeconfig",
            str(self.kubeconfig),
            "--context",
            self.context(user),
            *args,
        ]
        return subprocess.run(command, input=input, capture_output=True, text=True, check=False)


def default_state_dir() -> Path:
    """$DAYPASS_CLUSTER_DIR, else `cluster` beside the binaries cache."""
    if os.environ.get("DAYPASS_CLUSTER_DIR"):
        return Path(os.environ["DAYPASS_CLUSTER_DIR"])
    return build.cache_root() / "cluster"


def start(
    apply: Sequence[Path] = (),
    extra_apiserver_args: Sequence[str] = (),
    state_dir: Path | None = None,
) -> LocalCluster:
    """Start the control plane, or reuse it when it already runs as asked, and apply `apply`.

    Processes that died are started again on the same etcd data and tokens. The API server
    runs with exactly `extra_apiserver_args`: a call with different ones restarts it.
    """
    state = (state_dir or default_state_dir()).absolute()
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    bins = build.bin_dir() if build.binaries_present() else build.build()
    ports = Ports.from_env()

    with _locked(state):
        _ensure_pki(state)
        tokens, tokens_changed = _ensure_tokens(state)
        cluster = LocalCluster(
            state_dir=state,
            kubeconfig=state / "kubeconfig",
            server=f"https://127.0.0.1:{ports.apiserver}",
            ca_file=state / "ca.crt",
            tokens={user: tokens[user] for user in USERS},
            bin_dir=bins,
            ports=ports,
        )
        _write_kubeconfigs(cluster, tokens[CONTROLLER_MANAGER_USER])
        _write_private(state / "ports.json", json.dumps(_ports_record(ports)).encode())

        api = _Api(cluster)
        healthy: dict[str, Callable[[], bool]] = {
            ETCD: lambda: _http_ok(f"http://127.0.0.1:{ports.etcd_client}/health"),
            APISERVER: lambda: api.status("/readyz") == 200,
            CONTROLLER_MANAGER: lambda: True,
        }
        audit = auditwebhook.apiserver_args(state, ports.apiserver)
        commands = _commands(cluster, [*audit, *extra_apiserver_args])
        needed = _prepare(state, commands, ports, [APISERVER] if tokens_changed else [])
        for index, component in enumerate(COMPONENTS):
            if component in needed:
                _spawn(state, component, commands[component])
            watched = COMPONENTS[: index + 1]
            _wait_for(f"{component} to be healthy", healthy[component], state, watched, 180)

        _wait_for(
            "the default namespace",
            lambda: api.status(_DEFAULT_NS) == 200,
            state,
            COMPONENTS,
            timeout=60,
        )
        _wait_for(
            "the controller manager to aggregate the built-in `edit` ClusterRole",
            api.edit_role_aggregated,
            state,
            COMPONENTS,
            timeout=120,
        )

    if apply:
        _apply(cluster, apply)
    return cluster


def stop(state_dir: Path | None = None, wipe: bool = False) -> None:
    """Stop every process of this control plane and wait until its ports are free.

    With `wipe`, the state directory (certificates, tokens, etcd data, logs) goes too.
    """
    state = (state_dir or default_state_dir()).absolute()
    if not state.exists():
        return

    with _locked(state):
        ports = _recorded_ports(state)
        for component in reversed(COMPONENTS):
            stopped = _our_pids(state, component)
            for pid in stopped:
                _terminate(pid, component)
            (state / f"{component}.pid").unlink(missing_ok=True)

            for port in ports.of(component) if ports and stopped else ():
                if not _wait_until(functools.partial(_port_free, port), timeout=15):
                    raise ControlPlaneError(
                        f"127.0.0.1:{port} ({component}) is still in use after stopping the "
                        f"control plane; see `ss -ltnp 'sport = :{port}'`"
                    )

        if wipe:
            shutil.rmtree(state)


def status(state_dir: Path | None = None) -> list[ComponentStatus]:
    """Which component runs, with its pid and the loopback ports it owns."""
    state = (state_dir or default_state_dir()).absolute()
    ports = _recorded_ports(state) if state.exists() else None
    result = []
    for component in COMPONENTS:
        pids = _our_pids(state, component) if state.exists() else []
        result.append(
            ComponentStatus(
                name=component,
                pid=pids[0] if pids else None,
                ports=ports.of(component) if ports else (),
            )
        )
    return result


# --- processes ---------------------------------------------------------------------------

# Children started by this Python process, so that one that died is reaped instead of lingering
# as a zombie that still answers signals and looks alive.
_children: dict[int, subprocess.Popen[bytes]] = {}
_ended: dict[int, subprocess.Popen[bytes]] = {}


def _commands(cluster: LocalCluster, extra_apiserver_args: list[str]) -> dict[str, list[str]]:
    state, ports, bins = cluster.state_dir, cluster.ports, cluster.bin_dir
    etcd_client = f"http://127.0.0.1:{ports.etcd_client}"
    etcd_peer = f"http://127.0.0.1:{ports.etcd_peer}"
    return {
        ETCD: [
            str(bins / ETCD),
            "--name=daypass",
            f"--data-dir={state / 'etcd'}",
            f"--listen-client-urls={etcd_client}",
            f"--advertise-client-urls={etcd_client}",
            f"--listen-peer-urls={etcd_peer}",
            f"--initial-advertise-peer-urls={etcd_peer}",
            f"--initial-cluster=daypass={etcd_peer}",
        ],
        APISERVER: [
            str(bins / APISERVER),
            f"--etcd-servers={etcd_client}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports.apiserver}",
            # A loopback address is not valid in the `kubernetes` Service's endpoints, and
            # nothing in this cluster runs pods that would dial it, so nobody maintains them.
            "--advertise-address=127.0.0.1",
            "--endpoint-reconciler-type=none",
            f"--cert-dir={state / 'apiserver'}",
            f"--tls-cert-file={state / 'apiserver.crt'}",
            f"--tls-private-key-file={state / 'apiserver.key'}",
            f"--token-auth-file={state / 'tokens.csv'}",
            "--anonymous-auth=false",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={state / 'sa.pub'}",
            f"--service-account-signing-key-file={state / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            # Otherwise SIGTERM waits up to --request-timeout (60s) for open watches, such as
            # the controller manager's or the operator's, which never end on their own.
            "--shutdown-send-retry-after=true",
            *extra_apiserver_args,
        ],
        CONTROLLER_MANAGER: [
            str(bins / CONTROLLER_MANAGER),
            f"--kubeconfig={state / 'controller-manager.kubeconfig'}",
            "--leader-elect=false",
            # No serving port: its health shows in what it does, and it keeps 10257 free.
            "--secure-port=0",
            f"--service-account-private-key-file={state / 'sa.key'}",
            f"--root-ca-file={state / 'ca.crt'}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            # Its default is under /usr/libexec, which it creates when missing.
            f"--flex-volume-plugin-dir={state / 'flexvolume'}",
        ],
    }


def _prepare(
    state: Path, commands: dict[str, list[str]], ports: Ports, restart: Sequence[str]
) -> list[str]:
    """The components to start: stops those running with other flags, or named in `restart`.

    Every port they need is checked before anything starts, so that a port taken by someone
    else leaves nothing half started behind.
    """
    needed: list[str] = []
    stopped_any = False
    for component, argv in commands.items():
        running = _our_pids(state, component)
        if running and component not in restart and all(_cmdline(p) == argv for p in running):
            continue
        for pid in running:
            _say(f"restarting {component}: its flags or tokens changed")
            _terminate(pid, component)
            stopped_any = True
        needed.append(component)

    for component in needed:
        for port in ports.of(component):
            # A process just stopped, or one that has just died, may take a moment to let go
            # of its port.
            if not _wait_until(functools.partial(_port_free, port), 15 if stopped_any else 5):
                raise ControlPlaneError(
                    f"127.0.0.1:{port}, needed by {component}, is in use by a process this "
                    f"control plane did not start (see `ss -ltnp 'sport = :{port}'`); stop it, "
                    "or choose other ports with DAYPASS_APISERVER_PORT and DAYPASS_ETCD_PORT"
                )
    return needed


def _spawn(state: Path, component: str, argv: list[str]) -> None:
    _say(f"starting {component} (log: {state / f'{component}.log'})")
    with open(state / f"{component}.log", "ab") as log:
        child = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=state,
            start_new_session=True,
        )
    _children[child.pid] = child
    (state / f"{component}.pid").write_text(f"{child.pid}\n")


def _our_pids(state: Path, component: str) -> list[int]:
    """Live processes of `component` started from `state`: the pid file's, and any it lost.

    Linux only: a process is recognised by its command line in /proc, which guards against a
    reused pid. Elsewhere nothing is found, and a start fails on the ports still in use.
    """
    candidates: list[int] = []
    with contextlib.suppress(OSError, ValueError):
        candidates.append(int((state / f"{component}.pid").read_text().strip()))
    with contextlib.suppress(OSError):
        candidates += [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]

    found: list[int] = []
    for pid in dict.fromkeys(candidates):
        argv = _cmdline(pid)
        if (
            argv
            and Path(argv[0]).name == component
            and any(f"{state}{os.sep}" in arg for arg in argv[1:])
            and _alive(pid)
        ):
            found.append(pid)
    return found


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.decode(errors="replace").split("\0")[:-1] or None


def _exit_status(state: Path, component: str) -> str:
    """How a component this process started ended, when it is known."""
    with contextlib.suppress(OSError, ValueError):
        pid = int((state / f"{component}.pid").read_text().strip())
        child = _children.get(pid) or _ended.get(pid)
        if child is not None and child.returncode is not None:
            code = child.returncode
            return f" (killed by signal {-code})" if code < 0 else f" (exit status {code})"
    return ""


def _alive(pid: int) -> bool:
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        _ended[pid] = _children.pop(pid)
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state letter follows the parenthesised command name, which may itself hold spaces.
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _terminate(pid: int, component: str) -> None:
    """SIGTERM the process's session, then SIGKILL it if it is still there a few seconds on."""
    for sig, grace in ((signal.SIGTERM, 8.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        if _wait_until(lambda: not _alive(pid), timeout=grace):
            return
    raise ControlPlaneError(f"{component} (pid {pid}) did not exit after SIGKILL")


def _port_free(port: int) -> bool:
    # SO_REUSEADDR, as the Go servers use it, so that connections lingering in TIME_WAIT do not
    # count: only a listener makes the bind fail.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@contextlib.contextmanager
def _locked(state: Path) -> Iterator[None]:
    """One start or stop at a time per state directory, across processes (test workers)."""
    with open(state / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _ports_record(ports: Ports) -> dict[str, int]:
    return {"apiserver": ports.apiserver, "etcd_client": ports.etcd_client}


def _recorded_ports(state: Path) -> Ports | None:
    try:
        record = json.loads((state / "ports.json").read_text())
        return Ports(apiserver=int(record["apiserver"]), etcd_client=int(record["etcd_client"]))
    except (OSError, ValueError, KeyError):
        return None


# --- waiting -----------------------------------------------------------------------------


def _say(message: str) -> None:
    print(f"[control plane] {message}", file=sys.stderr, flush=True)


def _wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _wait_for(
    what: str,
    condition: Callable[[], bool],
    state: Path,
    watched: Sequence[str],
    timeout: float,
) -> None:
    """Wait, saying on stderr what for; fail early, with its log, if a watched component died."""
    started = time.monotonic()
    next_note = started
    while not condition():
        elapsed = time.monotonic() - started
        for component in watched:
            if not _our_pids(state, component):
                # Look twice: /proc can answer emptily for a process in the middle of starting.
                time.sleep(0.5)
                if _our_pids(state, component):
                    continue
                raise ControlPlaneError(
                    f"{component} exited{_exit_status(state, component)} while waiting for"
                    f" {what}; the end of its log ({state / f'{component}.log'}):\n"
                    f"{_tail(state / f'{component}.log')}"
                )
        if elapsed > timeout:
            raise ControlPlaneError(
                f"gave up waiting for {what} after {int(elapsed)}s; the logs are in {state}"
            )
        if time.monotonic() >= next_note:
            _say(f"waiting for {what} ({int(elapsed)}s)")
            next_note += 5
        time.sleep(0.2)
    if next_note > started:
        _say(f"{what}: done after {time.monotonic() - started:.1f}s")


def _tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --- talking to the API server -------------------------------------------------------------

_DEFAULT_NS = "/api/v1/namespaces/default"
_EDIT_ROLE = "/apis/rbac.authorization.k8s.io/v1/clusterroles/edit"


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, ValueError):
        return False


class _Api:
    """Just enough of the API, as admin, to tell when the control plane is ready."""

    def __init__(self, cluster: LocalCluster) -> None:
        self._server = cluster.server
        self._token = cluster.tokens["admin"]
        self._tls = ssl.create_default_context(cafile=str(cluster.ca_file))

    def _get(self, path: str) -> tuple[int, bytes]:
        request = urllib.request.Request(
            self._server + path, headers={"Authorization": f"Bearer {self._token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=3, context=self._tls) as response:
                return int(response.status), bytes(response.read())
        except urllib.error.HTTPError as error:
            return error.code, b""
        except (OSError, ValueError):
            return 0, b""

    def status(self, path: str) -> int:
        return self._get(path)[0]

    def edit_role_aggregated(self) -> bool:
        code, body = self._get(_EDIT_ROLE)
        if code != 200:
            return False
        rules: list[dict[str, Any]] = json.loads(body).get("rules") or []
        return any(
            "pods" in rule.get("resources", ()) and "list" in rule.get("verbs", ())
            for rule in rules
        )


def _apply(cluster: LocalCluster, paths: Sequence[Path]) -> None:
    for path in paths:
        args = ["apply", "--server-side", "--force-conflicts", "-f", str(path)]
        if Path(path).is_dir():
            args.append("--recursive")
        _say(f"applying {path}")
        done = cluster.kubectl(*args)
        if done.returncode != 0:
            raise ControlPlaneError(f"kubectl apply -f {path} failed:\n{done.stderr.strip()}")

    # `kubectl wait --all` fails when there is nothing to wait for.
    if cluster.kubectl("get", "crd", "-o", "name").stdout.strip():
        _say("waiting for every CustomResourceDefinition to be established")
        done = cluster.kubectl(
            "wait", "--for", "condition=established", "--all", "crd", "--timeout=120s"
        )
        if done.returncode != 0:
            raise ControlPlaneError(f"CRDs not established:\n{done.stderr.strip()}")
        # Established is not yet served: the API server's handlers and discovery follow a
        # moment later, and a create in between fails with "the server could not find".
        for crd in cluster.kubectl("get", "crd", "-o", "name").stdout.split():
            resource = crd.removeprefix("customresourcedefinition.apiextensions.k8s.io/")
            _wait_until(
                lambda resource=resource: cluster.kubectl(  # type: ignore[misc]
                    "get", resource, "-A", "-o", "name", "--request-timeout=5s"
                ).returncode == 0,
                timeout=60,
            )
        # Admission policies learn a new kind later still: until then a create of it fails
        # with 503 "Resource kind ... not found". A dry run says when it would pass admission.
        if "accessrequests.daypass.dev" in cluster.kubectl("get", "crd", "-o", "name").stdout:
            _wait_until(lambda: "ServiceUnavailable" not in cluster.kubectl(
                "create", "--dry-run=server", "-o", "name", "-f", "-", input=_PROBE_REQUEST,
            ).stderr, timeout=60)


_PROBE_REQUEST = json.dumps({
    "apiVersion": "daypass.dev/v1alpha1", "kind": "AccessRequest",
    "metadata": {"name": "daypass-served-probe", "namespace": "default"},
    "spec": {"role": {"kind": "ClusterRole", "name": "view"}, "reason": "probe"},
})


# --- files: certificates, keys, tokens, kubeconfigs ----------------------------------------


def _write_private(path: Path, data: bytes) -> None:
    """Write owner-only, and atomically, so that a reader never sees half a file."""
    partial = path.with_name(path.name + ".partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
    os.replace(partial, path)


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _ensure_pki(state: Path) -> None:
    """A CA, the API server's serving certificate, the service-account key: made once."""
    now = datetime.datetime.now(datetime.UTC)
    # An hour of slack in case the clock of whoever reads the certificate is a little behind.
    not_before, not_after = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=3650)

    if not (state / "ca.key").exists() or not (state / "ca.crt").exists():
        ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "daypass local CA")])
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        _write_private(state / "ca.key", _pem_key(ca_key))
        _write_private(state / "ca.crt", ca_cert.public_bytes(serialization.Encoding.PEM))
        (state / "apiserver.crt").unlink(missing_ok=True)

    if not (state / "apiserver.crt").exists() or not (state / "apiserver.key").exists():
        ca_cert = x509.load_pem_x509_certificate((state / "ca.crt").read_bytes())
        loaded = serialization.load_pem_private_key((state / "ca.key").read_bytes(), None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise ControlPlaneError(f"{state / 'ca.key'} is not the EC key this module writes")
        key = ec.generate_private_key(ec.SECP256R1())
        first_service_ip = ipaddress.IPv4Network(SERVICE_CLUSTER_IP_RANGE)[1]
        names: list[x509.GeneralName] = [
            x509.DNSName("localhost"),
            x509.DNSName("kubernetes"),
            x509.DNSName("kubernetes.default"),
            x509.DNSName("kubernetes.default.svc"),
            x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")),
            x509.IPAddress(first_service_ip),
        ]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(loaded.public_key()),
                critical=False,
            )
            .sign(loaded, hashes.SHA256())
        )
        _write_private(state / "apiserver.key", _pem_key(key))
        _write_private(state / "apiserver.crt", cert.public_bytes(serialization.Encoding.PEM))

    if not (state / "sa.key").exists() or not (state / "sa.pub").exists():
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        _write_private(state / "sa.key", _pem_key(sa_key))
        _write_private(state / "sa.pub", public)


def _ensure_tokens(state: Path) -> tuple[dict[str, str], bool]:
    """Every user's token, made at first start and kept; True when the token file changed."""
    store = state / "tokens.json"
    try:
        tokens: dict[str, str] = json.loads(store.read_text())
    except (OSError, ValueError):
        tokens = {}
    wanted = {**USERS, CONTROLLER_MANAGER_USER: ("system:masters",)}
    if not all(user in tokens for user in wanted):
        tokens = {user: tokens.get(user) or secrets.token_urlsafe(32) for user in wanted}
        _write_private(store, json.dumps(tokens, indent=2).encode())

    # The API server reads the file as CSV: token,user,uid,"group,group".
    lines = []
    for user, groups in wanted.items():
        line = f"{tokens[user]},{user},{user}"
        lines.append(f'{line},"{",".join(groups)}"' if groups else line)
    csv = ("\n".join(lines) + "\n").encode()
    path = state / "tokens.csv"
    changed = not path.exists() or path.read_bytes() != csv
    if changed:
        _write_private(path, csv)
    return tokens, changed


def _write_kubeconfigs(cluster: LocalCluster, controller_manager_token: str) -> None:
    ca_data = base64.b64encode(cluster.ca_file.read_bytes()).decode()
    clusters = [
        {
            "name": CLUSTER_NAME,
            "cluster": {"server": cluster.server, "certificate-authority-data": ca_data},
        }
    ]

    def config(users: dict[str, str], current: str) -> bytes:
        document = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": clusters,
            "users": [{"name": name, "user": {"token": token}} for name, token in users.items()],
            "contexts": [
                {"name": name, "context": {"cluster": CLUSTER_NAME, "user": name}} for name in users
            ],
            "current-context": current,
            "preferences": {},
        }
        return yaml.safe_dump(document, sort_keys=False).encode()

    by_context = {cluster.context(user): token for user, token in cluster.tokens.items()}
    _write_private(cluster.kubeconfig, config(by_context, "admin"))
    controller_manager = {"controller-manager": controller_manager_token}
    _write_private(
        cluster.state_dir / "controller-manager.kubeconfig",
        config(controller_manager, "controller-manager"),
    )
