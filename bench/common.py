"""What the benchmarks share: the cluster and the operator under test, a lean API client that
counts what it sends, watches and authorization probes that timestamp what they see, the API
server's own request counters, statistics, and the JSON and table every script writes.

Nothing here may start an unbounded loop: every wait has a deadline and every load a count.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import heapq
import importlib.metadata
import json
import math
import os
import platform
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import kubernetes
import urllib3
from kubernetes.client import Configuration
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"

GROUP, VERSION = "daypass.dev", "v1alpha1"
REQUESTS = f"/apis/{GROUP}/{VERSION}"
RBAC = "/apis/rbac.authorization.k8s.io/v1"
MANAGED = "app.kubernetes.io/managed-by=daypass"

# Labels that mark what a benchmark made, so that a later run can clear what an aborted one left.
POOL_LABEL = "bench.daypass.dev/pool"
RUN_LABEL = "bench.daypass.dev/run"
FLOOR_LABEL = "bench.daypass.dev/floor"
NAMESPACE_PREFIX = "daypass-bench-"
BULK_NAMESPACE = "daypass-bench-bulk"

REQUESTER = "alice"
REQUESTER_GROUPS = ["developers", "system:authenticated"]

# SPEC.md, "Figures the product is held to".
TARGETS = {
    "grant_latency_p50_s": 0.100,
    "grant_latency_p99_s": 0.300,
    "grant_latency_rate_per_s": 20,
    "expiry_lateness_p99_s": 1.0,
    "expiry_lateness_max_s": 2.0,
    "throughput_ratio": 0.5,
    "scale_memory_bytes": 300 * 1024 * 1024,
    "scale_restart_s": 30.0,
}


class BenchError(RuntimeError):
    """The benchmark could not run as asked; the message says what went wrong."""


def say(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- the API client ------------------------------------------------------------------------

CallKey = tuple[str, str, str, str]  # group, resource, subresource, verb: the API server's labels

_sent: Counter[CallKey] = Counter()
_sent_lock = threading.Lock()


def _call_key(method: str, path: str, params: dict[str, Any]) -> CallKey | None:
    """The labels the API server's apiserver_request_total gives this request."""
    parts = path.strip("/").split("/")
    if parts[0] == "api" and len(parts) >= 3:
        group, rest = "", parts[2:]
    elif parts[0] == "apis" and len(parts) >= 4:
        group, rest = parts[1], parts[3:]
    else:
        return None
    if rest[0] == "namespaces" and len(rest) >= 3:
        rest = rest[2:]
    resource = rest[0]
    named = len(rest) > 1
    subresource = rest[2] if len(rest) > 2 else ""
    verb = method
    if method == "GET" and not named:
        verb = "WATCH" if params.get("watch") in ("true", "1", True) else "LIST"
    elif method == "DELETE" and not named:
        verb = "DELETECOLLECTION"
    return (group, resource, subresource, verb)


def sent_calls() -> Counter[CallKey]:
    """Every request this process has sent so far, labelled as the API server counts them."""
    with _sent_lock:
        return Counter(_sent)


class Api:
    """JSON over HTTPS to the API server as one kubeconfig context.

    A thin client instead of the `kubernetes` package's models: a benchmark that spends its CPU
    serializing would measure itself on a two-core machine, not the operator.
    """

    def __init__(self, kubeconfig: Path, context: str | None,
                 impersonate: tuple[str, Sequence[str]] | None = None,
                 connections: int = 64) -> None:
        configuration = Configuration()
        kubernetes.config.load_kube_config(config_file=str(kubeconfig), context=context,
                                           client_configuration=configuration)
        self.server = configuration.host.rstrip("/")
        self.headers = urllib3.HTTPHeaderDict({"Accept": "application/json",
                                               "Content-Type": "application/json"})
        keys = configuration.api_key or {}
        token = keys.get("authorization") or keys.get("BearerToken")
        if token:
            self.headers["Authorization"] = (token if token.startswith("Bearer ")
                                             else f"Bearer {token}")
        if impersonate is not None:
            self.headers["Impersonate-User"] = impersonate[0]
            for group in impersonate[1]:
                self.headers.add("Impersonate-Group", group)
        self.http = urllib3.PoolManager(
            maxsize=connections,
            cert_reqs="CERT_REQUIRED" if configuration.verify_ssl else "CERT_NONE",
            ca_certs=configuration.ssl_ca_cert,
            cert_file=configuration.cert_file,
            key_file=configuration.key_file,
            retries=False,
            timeout=urllib3.Timeout(connect=10, read=60),
        )

    def _url(self, path: str, params: dict[str, Any]) -> str:
        query = {key: value for key, value in params.items() if value is not None}
        return self.server + path + (f"?{urlencode(query)}" if query else "")

    def call(self, method: str, path: str, body: Any = None, **params: Any,
             ) -> tuple[int, dict[str, Any]]:
        data = json.dumps(body).encode() if body is not None else None
        response = self.http.request(method, self._url(path, params), body=data,
                                     headers=self.headers)
        key = _call_key(method, path, params)
        if key is not None:
            with _sent_lock:
                _sent[key] += 1
        try:
            payload = json.loads(response.data) if response.data else {}
        except ValueError:
            payload = {"raw": response.data[:200].decode(errors="replace")}
        return response.status, payload

    def ok(self, method: str, path: str, body: Any = None, expect: Iterable[int] = (200, 201),
           **params: Any) -> dict[str, Any]:
        status, payload = self.call(method, path, body, **params)
        # 429 is the API server asking to wait: just after a start, while a CRD's storage is
        # set up. Setting up waits a little; a 429 under measured load would show as a failure.
        for _ in range(50):
            if status != 429 or 429 in tuple(expect):
                break
            time.sleep(0.2)
            status, payload = self.call(method, path, body, **params)
        if status not in tuple(expect):
            raise BenchError(f"{method} {path}: HTTP {status}: {payload.get('message', payload)}")
        return payload

    def text(self, path: str) -> str:
        response = self.http.request("GET", self.server + path, headers=self.headers)
        if response.status != 200:
            raise BenchError(f"GET {path}: HTTP {response.status}")
        return str(response.data.decode())

    def stream(self, path: str, **params: Any) -> urllib3.BaseHTTPResponse:
        key = _call_key("GET", path, params)
        if key is not None:
            with _sent_lock:
                _sent[key] += 1
        return self.http.request("GET", self._url(path, params), headers=self.headers,
                                 preload_content=False,
                                 timeout=urllib3.Timeout(connect=10, read=None))

    def allowed(self, user: str, groups: Sequence[str], namespace: str, verb: str = "list",
                resource: str = "pods") -> bool:
        """A SubjectAccessReview: may `user` do `verb` on `resource` in `namespace` now?"""
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {"user": user, "groups": list(groups),
                     "resourceAttributes": {"namespace": namespace, "verb": verb,
                                            "resource": resource}},
        }
        answer = self.ok("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", review)
        return bool((answer.get("status") or {}).get("allowed"))


def requests_path(namespace: str, name: str = "") -> str:
    return f"{REQUESTS}/namespaces/{namespace}/accessrequests" + (f"/{name}" if name else "")


def bindings_path(namespace: str, name: str = "") -> str:
    return f"{RBAC}/namespaces/{namespace}/rolebindings" + (f"/{name}" if name else "")


def access_request(run: str, reason: str, duration: str = "1h",
                   start_at: str | None = None) -> dict[str, Any]:
    """An AccessRequest for `edit`, as the requester writes it (admission adds who asked)."""
    spec: dict[str, Any] = {"role": {"kind": "ClusterRole", "name": "edit"},
                            "duration": duration, "reason": reason}
    if start_at:
        spec["startAt"] = start_at
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "AccessRequest",
            "metadata": {"generateName": f"{REQUESTER}-edit-", "labels": {RUN_LABEL: run}},
            "spec": spec}


def direct_binding(run: str, name: str = "bench-floor") -> dict[str, Any]:
    """The RoleBinding Daypass would make for the requester, made directly: the floor.

    It is not labelled as Daypass's, or the operator would delete it as a stray.
    """
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": name, "labels": {FLOOR_LABEL: run}},
            "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io",
                          "name": REQUESTER}],
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "edit"}}


# --- watches and probes ----------------------------------------------------------------------

class Watch:
    """Follows a collection from now on, handing each event and the time it arrived to `on_event`.

    `on_event(type, object, at)` runs on the watch's thread and must be quick.
    """

    def __init__(self, api: Api, path: str, on_event: Callable[[str, dict[str, Any], float], None],
                 label_selector: str | None = None, until: float | None = None) -> None:
        self.api = api
        self.path = path
        self.on_event = on_event
        self.label_selector = label_selector
        self.until = until or time.time() + 6 * 3600
        self.restarts = 0
        self.gaps = 0
        self._stopping = threading.Event()
        self._response: urllib3.BaseHTTPResponse | None = None
        self._thread = threading.Thread(target=self._run, name=f"watch {path}", daemon=True)
        self._version = ""

    def __enter__(self) -> Watch:
        self._version = self._list_version()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _list_version(self) -> str:
        listed = self.api.ok("GET", self.path, labelSelector=self.label_selector, limit=1)
        return str(listed["metadata"]["resourceVersion"])

    def stop(self) -> None:
        self._stopping.set()
        response = self._response
        if response is not None:
            with contextlib.suppress(Exception):
                response.shutdown()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stopping.is_set() and time.time() < self.until:
            timeout = int(max(1, min(290, self.until - time.time())))
            try:
                self._follow(timeout)
            except Exception as error:  # noqa: BLE001 - a broken stream is picked up again
                if self._stopping.is_set():
                    return
                say(f"watch {self.path} broke ({error}); resuming")
                self._stopping.wait(0.2)
            self.restarts += 1

    def _follow(self, timeout: int) -> None:
        response = self.api.stream(self.path, watch="true", resourceVersion=self._version,
                                   allowWatchBookmarks="true", timeoutSeconds=timeout,
                                   labelSelector=self.label_selector)
        self._response = response
        try:
            if response.status == 410:
                self._expired()
                return
            if response.status != 200:
                raise BenchError(f"watch {self.path}: HTTP {response.status}")
            buffer = b""
            for chunk in response.read_chunked():
                at = time.time()
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        self._handle(json.loads(line), at)
        finally:
            self._response = None
            response.release_conn()

    def _handle(self, event: dict[str, Any], at: float) -> None:
        kind, body = event.get("type", ""), event.get("object") or {}
        if kind == "ERROR":
            if body.get("code") == 410:
                self._expired()
            return
        version = (body.get("metadata") or {}).get("resourceVersion")
        if version:
            self._version = str(version)
        if kind != "BOOKMARK":
            self.on_event(kind, body, at)

    def _expired(self) -> None:
        # Events between the expired version and a new listing are lost; the result says so.
        self.gaps += 1
        self._version = self._list_version()


class Prober:
    """Asks the API server whether the requester may list pods in each namespace given to it, and
    records the first time the answer is the wanted one.

    An answer can only change once the binding does, so a namespace is asked every `fast`
    seconds after the binding watch nudges it, and only every `slow` seconds before: tight
    where it matters, without flooding a small machine's API server with reviews.
    """

    def __init__(self, api: Api, want: bool, fast: float = 0.005, slow: float = 0.25,
                 workers: int = 8) -> None:
        self.api = api
        self.want = want
        self.fast = fast
        self.slow = slow
        self.answered: dict[str, float] = {}
        self.by_fast = 0
        self.asked = 0
        self._nudged: set[str] = set()
        self._pending: set[str] = set()
        # Nudged namespaces have a queue of their own that goes first: a thousand slow checks
        # falling due at once must not hold up the one whose binding just changed.
        self._urgent: list[tuple[float, int, str]] = []
        self._relaxed: list[tuple[float, int, str]] = []
        self._order = 0
        self._cv = threading.Condition()
        self._closed = False
        self._threads = [threading.Thread(target=self._work, daemon=True, name=f"probe-{i}")
                         for i in range(workers)]
        for thread in self._threads:
            thread.start()

    def expect(self, namespace: str, first_at: float) -> None:
        with self._cv:
            if namespace in self.answered:
                return
            self._pending.add(namespace)
            self._push(time.time() if namespace in self._nudged else first_at, namespace)

    def nudge(self, namespace: str) -> None:
        with self._cv:
            self._nudged.add(namespace)
            if namespace in self._pending:
                self._push(time.time(), namespace)

    def _push(self, at: float, namespace: str) -> None:
        self._order += 1
        queue = self._urgent if namespace in self._nudged else self._relaxed
        heapq.heappush(queue, (at, self._order, namespace))
        self._cv.notify()

    def wait(self, namespaces: Iterable[str], deadline: float) -> bool:
        wanted = set(namespaces)
        with self._cv:
            while not wanted <= self.answered.keys():
                remaining = deadline - time.time()
                if remaining <= 0:
                    return False
                self._cv.wait(min(remaining, 0.5))
        return True

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        for thread in self._threads:
            thread.join(timeout=5)

    def _next(self) -> str | None:
        with self._cv:
            while not self._closed:
                now, wait = time.time(), 0.5
                for queue in (self._urgent, self._relaxed):
                    while queue and queue[0][0] <= now:
                        namespace = heapq.heappop(queue)[2]
                        if namespace in self._pending:
                            # A namespace is asked by one worker at a time.
                            self._pending.discard(namespace)
                            return namespace
                    if queue:
                        wait = min(wait, queue[0][0] - now)
                self._cv.wait(wait)
            return None

    def _work(self) -> None:
        while (namespace := self._next()) is not None:
            try:
                answer = self.api.allowed(REQUESTER, REQUESTER_GROUPS, namespace)
            except Exception as error:  # noqa: BLE001 - a failed probe is asked again
                say(f"probe of {namespace} failed: {error}")
                answer = not self.want
            at = time.time()
            with self._cv:
                self.asked += 1
                if answer == self.want:
                    self.answered[namespace] = at
                    self.by_fast += namespace in self._nudged
                    self._cv.notify_all()
                    continue
                self._pending.add(namespace)
                self._push(at + (self.fast if namespace in self._nudged else self.slow),
                           namespace)


@dataclass
class Sightings:
    """When each object was first seen in each state, keyed by namespace/name or namespace."""

    times: dict[str, dict[str, float]] = field(default_factory=dict)
    values: dict[str, dict[str, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def mark(self, what: str, key: str, at: float) -> bool:
        """Record the first time `key` was seen `what`; True when this is that first time."""
        with self.lock:
            seen = self.times.setdefault(what, {})
            if key in seen:
                return False
            seen[key] = at
            return True

    def note(self, what: str, key: str, value: Any) -> None:
        with self.lock:
            self.values.setdefault(what, {})[key] = value

    def noted(self, what: str) -> dict[str, Any]:
        with self.lock:
            return dict(self.values.get(what, {}))

    def of(self, what: str) -> dict[str, float]:
        with self.lock:
            return dict(self.times.get(what, {}))

    def count(self, what: str) -> int:
        with self.lock:
            return len(self.times.get(what, {}))

    def wait_count(self, what: str, count: int, deadline: float, every: float = 0.05) -> bool:
        while self.count(what) < count:
            if time.time() >= deadline:
                return False
            time.sleep(every)
        return True


def paced(count: int, rate: float, deadline: float) -> Iterator[int]:
    """0..count-1, the i-th at start + i/rate: a steady offered load that stops at `deadline`."""
    start = time.monotonic()
    for index in range(count):
        delay = start + index / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if time.time() >= deadline:
            say(f"stopped offering load after {index} of {count}: out of time")
            return
        yield index


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --- API calls, counted by the API server -----------------------------------------------------

def apiserver_calls(api: Api) -> Counter[CallKey]:
    """The API server's apiserver_request_total, summed over response codes."""
    lines = [line for line in api.text("/metrics").splitlines()
             if line.startswith("apiserver_request_total{")]
    text = "# TYPE apiserver_request_total counter\n" + "\n".join(lines) + "\n"
    counts: Counter[CallKey] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            key = (labels.get("group", ""), labels.get("resource", ""),
                   labels.get("subresource", ""), labels.get("verb", ""))
            if key[1]:
                counts[key] += int(sample.value)
    return counts


def call_name(key: CallKey) -> str:
    group, resource, subresource, verb = key
    short = group.split(".")[0] or "core"
    return f"{verb} {short}/{resource}" + (f"/{subresource}" if subresource else "")


class CallWindow:
    """What everyone but this process asked of the API server between open and close.

    The API server counts requests by resource and verb, not by user: the operator's calls are
    the difference less this benchmark's own, and the controller manager's few (garbage
    collection, namespace upkeep) are in it too. Watches are counted when they end, so they
    are reported apart and left out of the calls per transition.
    """

    IGNORED = {"subjectaccessreviews", "leases"}

    def __init__(self, api: Api) -> None:
        self.api = api
        self.opened = time.time()
        self.before = apiserver_calls(api)
        self.sent_before = sent_calls()

    def close(self, transitions: int, what: str) -> dict[str, Any]:
        after = apiserver_calls(self.api)
        ours = sent_calls() - self.sent_before
        others = Counter({key: after[key] - self.before.get(key, 0) - ours.get(key, 0)
                          for key in after})
        others = Counter({key: n for key, n in others.items()
                          if n > 0 and key[1] not in self.IGNORED})
        calls = {call_name(key): n for key, n in sorted(others.items())
                 if key[3] not in ("WATCH", "LIST")}
        reads = {call_name(key): n for key, n in sorted(others.items())
                 if key[3] in ("WATCH", "LIST")}
        per = {name: round(n / transitions, 3) for name, n in calls.items()} if transitions else {}
        return {
            "transition": what,
            "transitions": transitions,
            "window_s": round(time.time() - self.opened, 3),
            "per_transition": per,
            "total_per_transition": round(sum(calls.values()) / transitions, 3)
            if transitions else None,
            "calls": calls,
            "lists_and_watches": reads,
        }


# --- the operator under test ----------------------------------------------------------------

class Operator:
    """`daypass run` as a process of its own, its CPU and memory read from /proc."""

    def __init__(self, kubeconfig: Path, context: str | None, source: Path, workdir: Path,
                 ) -> None:
        self.kubeconfig = kubeconfig
        self.context = context
        self.source = source
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.started_at = 0.0

    @property
    def pid(self) -> int:
        if self.process is None:
            raise BenchError("the operator is not running")
        return self.process.pid

    def start(self) -> float:
        self.starts += 1
        command = [sys.executable, "-m", "daypass.cli.run", "run", "--kubeconfig",
                   str(self.kubeconfig), "--log-format", "json",
                   "--audit-log", str(self.workdir / "audit.jsonl")]
        if self.context:
            command += ["--context", self.context]
        env = {**os.environ, "PYTHONPATH": str(self.source / "operator")}
        log = open(self.workdir / f"operator-{self.starts}.log", "wb")  # noqa: SIM115
        with log:
            self.started_at = time.time()
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                            env=env, cwd=self.workdir)
        return self.started_at

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 30) -> float:
        """SIGTERM, then SIGKILL after `timeout`; the seconds it took to exit."""
        if self.process is None:
            return 0.0
        began = time.time()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                say(f"the operator did not stop within {timeout}s of SIGTERM; killing it")
                self.process.kill()
                self.process.wait()
        self.process = None
        return time.time() - began

    def memory(self) -> dict[str, int]:
        """VmRSS and VmHWM (the peak) of the operator, in bytes."""
        found = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                found["rss_bytes" if name == "VmRSS" else "peak_rss_bytes"] = (
                    int(value.split()[0]) * 1024)
        return found

    def cpu_seconds(self) -> float:
        return process_cpu(self.pid)

    def wait_quiet(self, quiet_for: float = 1.5, below: float = 0.05, timeout: float = 120,
                   ) -> float | None:
        """Wait until the operator has used under `below` of a CPU for `quiet_for` seconds;
        the time its quiet began, or None when it never went quiet."""
        deadline = time.time() + timeout
        samples: list[tuple[float, float]] = []
        while time.time() < deadline:
            if not self.alive():
                raise BenchError(f"the operator exited; see {self.workdir}")
            samples.append((time.time(), self.cpu_seconds()))
            recent = [s for s in samples if s[0] >= samples[-1][0] - quiet_for]
            if samples[-1][0] - samples[0][0] >= quiet_for and len(recent) >= 2:
                used = (recent[-1][1] - recent[0][1]) / max(1e-3, recent[-1][0] - recent[0][0])
                if used < below:
                    return recent[0][0]
            time.sleep(0.1)
        return None

    def logs_tail(self, chars: int = 3000) -> str:
        path = self.workdir / f"operator-{self.starts}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def process_cpu(pid: int) -> float:
    """CPU seconds (user and system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu() -> float:
    """CPU seconds every process on the machine has used so far (busy time in /proc/stat)."""
    values = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """Where the machine's CPU went during a phase: the operator, the control plane, this
    benchmark, and everything else (on a shared machine, other people's work)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.began = time.time()
        self.before = self._read()

    def _read(self) -> dict[str, float]:
        found = {"machine": machine_cpu(), "benchmark": sum(os.times()[:2])}
        for name, pid in self.pids.items():
            with contextlib.suppress(OSError):
                found[name] = process_cpu(pid)
        return found

    def close(self) -> dict[str, Any]:
        after = self._read()
        wall = max(1e-3, time.time() - self.began)
        used = {name: after[name] - self.before[name] for name in after if name in self.before}
        used["others"] = used["machine"] - sum(v for k, v in used.items() if k != "machine")
        return {"wall_s": round(wall, 2),
                "cpu_seconds": {k: round(v, 2) for k, v in used.items()},
                "cores_busy": {k: round(v / wall, 2) for k, v in used.items()}}


def cpu_line(meter: dict[str, Any]) -> str:
    busy = meter["cores_busy"]
    return ", ".join(f"{name} {busy[name]:.2f}" for name in busy if name != "machine") + (
        f"; the machine's {os.cpu_count()} cores: {busy['machine']:.2f} busy")


class Profiler:
    """py-spy sampling the operator while a phase runs: where its CPU time goes."""

    def __init__(self, pid: int, output: Path, rate: int = 100) -> None:
        self.output = output
        binary = shutil.which("py-spy")
        if binary is None:
            raise BenchError("--profile needs py-spy on PATH: pip install py-spy")
        self.process = subprocess.Popen(
            [binary, "record", "--pid", str(pid), "--format", "raw", "--rate", str(rate),
             "--nonblocking", "--output", str(output)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self, top: int = 15) -> dict[str, Any]:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return summarize_profile(self.output, top)


_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


def _frame(text: str) -> str:
    match = _FRAME.match(text.strip())
    if not match:
        return text.strip()
    file = match["file"]
    for marker in ("site-packages/", "lib/python3", "operator/"):
        if marker in file:
            file = file.split(marker, 1)[1]
    return f"{match['function']} ({file})"


def summarize_profile(path: Path, top: int = 15) -> dict[str, Any]:
    """Self and inclusive sample counts per function, from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    if not path.exists():
        return {"file": str(path), "samples": 0}
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for name in set(frames[1:]):
            inclusive[name] += count

    def share(counter: Counter[str]) -> list[list[Any]]:
        return [[name, round(100 * n / total, 1)] for name, n in counter.most_common(top)]

    return {"file": str(path), "samples": total, "self_percent": share(own) if total else [],
            "inclusive_percent": share(inclusive) if total else []}


# --- statistics and reporting ------------------------------------------------------------------

def summary(values: Sequence[float]) -> dict[str, float | int | None]:
    """min, median, p99 (nearest rank), max and mean of some seconds."""
    ordered = sorted(values)
    if not ordered:
        return {"n": 0, "min": None, "median": None, "p99": None, "max": None, "mean": None}
    rank = max(1, math.ceil(0.99 * len(ordered)))
    return {"n": len(ordered), "min": ordered[0], "median": statistics.median(ordered),
            "p99": ordered[rank - 1], "max": ordered[-1], "mean": statistics.fmean(ordered)}


STATS = ("min", "median", "p99", "max")


def ratio(measured: dict[str, Any], floor: dict[str, Any]) -> dict[str, float | None]:
    """Each statistic of the measured figure over the same statistic of the floor."""
    out: dict[str, float | None] = {}
    for stat in STATS:
        value, base = measured.get(stat), floor.get(stat)
        out[stat] = round(value / base, 2) if value is not None and base else None
    return out


def densest_window(moments: Sequence[float], width: float = 1.0) -> int:
    """How many of `moments` fall into the fullest window `width` seconds wide."""
    ordered = sorted(moments)
    best, low = 0, 0
    for high, moment in enumerate(ordered):
        while moment - ordered[low] > width:
            low += 1
        best = max(best, high - low + 1)
    return best


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                              check=False, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def source_digest(source: Path) -> str:
    """A hash of the operator's Python files: which code was measured, committed or not."""
    digest = hashlib.sha256()
    for path in sorted((source / "operator" / "daypass").rglob("*.py")):
        digest.update(str(path.relative_to(source)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def machine(admin: Api, source: Path) -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = 0
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) * 1024
    version = admin.ok("GET", "/version")
    try:
        kopf_version = importlib.metadata.version("kopf")
    except importlib.metadata.PackageNotFoundError:
        kopf_version = "unknown"
    return {
        "cpu_model": cpu or platform.processor(),
        "cpu_cores": os.cpu_count(),
        "memory_bytes": memory,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "kopf": kopf_version,
        "kubernetes": version.get("gitVersion"),
        "server": admin.server,
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "operator_source": str(source),
        "operator_digest": source_digest(source),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "namespaces_in_cluster": len(admin.ok("GET", "/api/v1/namespaces").get("items", [])),
    }


def _seconds(value: Any, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "ms":
        return f"{value * 1000:.1f}"
    if unit == "s":
        return f"{value:.3f}"
    return f"{value:.2f}"


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * width for width in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True))
              for row in rows]
    return "\n".join(lines)


def figure_rows(figures: dict[str, dict[str, Any]], unit: str) -> list[list[str]]:
    return [[name, str(stats.get("n", "")), *(_seconds(stats.get(s), unit) for s in STATS)]
            for name, stats in figures.items()]


# --- a benchmark run ------------------------------------------------------------------------

def parser(description: str | None) -> argparse.ArgumentParser:
    """The options every benchmark takes; each adds its own sizes."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true",
                        help="a few dozen requests, quickly: checks the script, measures little")
    parser.add_argument("--kubeconfig", help="a given cluster's kubeconfig (default: $KUBECONFIG"
                        " if set, else the local control plane, started when needed)")
    parser.add_argument("--context", help="the kubeconfig context with admin rights"
                        " (default: the current one)")
    parser.add_argument("--operator-context", help="the context the operator runs as"
                        " (default: `daypass` where it exists, else --context)")
    parser.add_argument("--source", type=Path, default=ROOT,
                        help="the tree whose operator/, crds/ and deploy/ are measured"
                        " (default: this repository)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS,
                        help="where the JSON result goes (default: bench/results)")
    parser.add_argument("--profile", action="store_true",
                        help="sample the operator with py-spy during the measured phase")
    parser.add_argument("--keep", action="store_true",
                        help="leave the requests and bindings made in place afterwards")
    return parser


def sized(value: Any, full: Any, smoke: Any, is_smoke: bool) -> Any:
    """An option's value: as given, else the SPEC's full size, else the smoke size."""
    if value is not None:
        return value
    return smoke if is_smoke else full


def install_paths(source: Path) -> list[Path]:
    return [source / "crds", source / "deploy" / "namespace.yaml", source / "deploy" / "rbac.yaml",
            source / "deploy" / "user-rbac.yaml", source / "deploy" / "admission"]


class Run:
    """One benchmark run: the cluster with Daypass installed, the operator, a policy allowing the
    requester `edit` in the benchmark's namespaces without approval, and the result written out.

    Use it as a context manager: whatever happens, the operator stops and, unless --keep, what
    the run made is deleted (the namespaces stay, for the next run).
    """

    def __init__(self, name: str, args: argparse.Namespace, parameters: dict[str, Any],
                 full_size: bool) -> None:
        self.name = name
        self.size = "smoke" if args.smoke else ("full size" if full_size else "reduced size")
        self.args = args
        self.parameters = parameters
        self.stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        self.id = f"{name.replace('_', '-')}-{self.stamp.lower()}-{secrets.token_hex(2)}"
        self.policy = f"bench-{self.id}"
        self.source = args.source.resolve()
        self.workdir = Path(tempfile.mkdtemp(prefix=f"daypass-bench-{name}-"))
        self.notes: list[str] = []
        self.operator: Operator
        self.admin: Api
        self.requester: Api
        self._profiler: Profiler | None = None
        self.control_plane: dict[str, int] = {}
        self.serving_after: list[float] = []

    def __enter__(self) -> Run:
        self._connect()
        self.machine = machine(self.admin, self.source)
        self.clear()
        self.operator = Operator(self.kubeconfig, self.operator_context, self.source,
                                 self.workdir)
        say(f"run {self.id}: operator from {self.source / 'operator'}, files in {self.workdir}")
        return self

    def __exit__(self, *_: object) -> None:
        if self._profiler is not None:
            self._profiler.stop()
        self.operator.stop()
        if not self.args.keep:
            self.clear()

    def _connect(self) -> None:
        external = self.args.kubeconfig or (os.environ.get("KUBECONFIG")
                                            and not os.environ.get("DAYPASS_LOCAL_CLUSTER"))
        if external:
            self.kubeconfig = Path(self.args.kubeconfig
                                   or os.environ["KUBECONFIG"].split(os.pathsep)[0])
            contexts = {c["name"] for c in kubernetes.config.list_kube_config_contexts(
                config_file=str(self.kubeconfig))[0]}
            self.admin = Api(self.kubeconfig, self.args.context)
            self.requester = (Api(self.kubeconfig, REQUESTER) if REQUESTER in contexts else
                              Api(self.kubeconfig, self.args.context,
                                  impersonate=(REQUESTER, REQUESTER_GROUPS[:1])))
            self.operator_context = self.args.operator_context or (
                "daypass" if "daypass" in contexts else self.args.context)
            kubectl = shutil.which("kubectl")
            if kubectl is None:
                raise BenchError("installing Daypass on a given cluster needs kubectl on PATH")
            for path in install_paths(self.source):
                command = [kubectl, "--kubeconfig", str(self.kubeconfig), "apply",
                           "--server-side", "--force-conflicts", "-R", "-f", str(path)]
                if self.args.context:
                    command[3:3] = ["--context", self.args.context]
                done = subprocess.run(command, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    raise BenchError(f"kubectl apply -f {path}: {done.stderr.strip()}")
            return

        from daypass.controlplane import cluster

        local = cluster.start(apply=install_paths(self.source))
        self.control_plane = {c.name: c.pid for c in cluster.status(local.state_dir)
                              if c.pid is not None}
        self.kubeconfig = local.kubeconfig
        self.admin = Api(self.kubeconfig, local.context("admin"))
        self.requester = Api(self.kubeconfig, local.context(REQUESTER))
        self.operator_context = self.args.operator_context or local.context(
            cluster.OPERATOR_USER)

    # Namespaces and the policy

    def namespaces(self, count: int, offset: int = 0) -> list[str]:
        """`count` namespaces of the benchmark pool, made when missing, kept between runs."""
        names = [f"{NAMESPACE_PREFIX}{index:05d}" for index in range(offset, offset + count)]
        self.ensure_namespaces(names)
        return names

    def ensure_namespaces(self, names: Sequence[str]) -> None:
        listed = self.admin.ok("GET", "/api/v1/namespaces", labelSelector=POOL_LABEL)
        existing = {item["metadata"]["name"]: item for item in listed.get("items", [])}
        terminating = [n for n in names
                       if (existing.get(n, {}).get("status") or {}).get("phase") == "Terminating"]
        if terminating:
            raise BenchError(f"{len(terminating)} benchmark namespaces are still being deleted"
                             f" (e.g. {terminating[0]}); wait, then run again")
        missing = [name for name in names if name not in existing]
        if not missing:
            return
        say(f"creating {len(missing)} benchmark namespaces")

        def create(name: str) -> None:
            self.admin.ok("POST", "/api/v1/namespaces", {
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": name, "labels": {POOL_LABEL: "true"}}}, expect=(201, 409))

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(create, missing))

    def create_policy(self) -> None:
        self.admin.ok("POST", f"{REQUESTS}/accesspolicies", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "AccessPolicy",
            "metadata": {"name": self.policy, "labels": {RUN_LABEL: self.id}},
            "spec": {
                "subjects": {"users": [REQUESTER]},
                "roles": [{"kind": "ClusterRole", "name": "edit"}],
                "namespaces": {"selector": {"matchLabels": {POOL_LABEL: "true"}}},
                "maxDuration": "4h",
                "defaultDuration": "1h",
                "approval": {"required": False},
            },
        })

    def start_operator(self, timeout: float = 120) -> float:
        """Start the operator and wait until it serves: it reports the run's new policy Ready
        only once it has listed everything it watches."""
        self.create_policy()
        started = self.operator.start()
        deadline = time.time() + timeout
        while time.time() < deadline:
            if not self.operator.alive():
                raise BenchError(f"the operator exited:\n{self.operator.logs_tail()}")
            body = self.admin.ok("GET", f"{REQUESTS}/accesspolicies/{self.policy}")
            if any(c.get("type") == "Ready" and c.get("status") == "True"
                   for c in (body.get("status") or {}).get("conditions") or []):
                self.serving_after.append(round(time.time() - started, 2))
                say(f"operator serving after {self.serving_after[-1]}s")
                return started
            time.sleep(0.1)
        raise BenchError(f"the operator did not report policy {self.policy} Ready in {timeout}s")

    def cpu_meter(self) -> CpuMeter:
        """Start counting CPU: the operator's, the local control plane's, this process's."""
        return CpuMeter({"operator": self.operator.pid, **self.control_plane})

    def settle(self, timeout: float = 300) -> float | None:
        """Wait until the operator is idle and the API server has stopped receiving its writes
        (events it posts late, for one): the time it settled, or None when it never did."""
        deadline = time.time() + timeout
        last: dict[CallKey, int] | None = None
        while time.time() < deadline:
            self.operator.wait_quiet(timeout=max(1.0, deadline - time.time()))
            writes = {key: n for key, n in apiserver_calls(self.admin).items()
                      if key[1] in ("events", "rolebindings", "accessrequests")
                      and key[3] not in ("GET", "LIST", "WATCH")}
            if writes == last:
                return time.time()
            last = writes
            time.sleep(2)
        return None

    def profile(self, phase: str) -> None:
        if self.args.profile:
            output = self.args.results_dir / f"{self.name}-{self.stamp}-{phase}.pyspy.txt"
            output.parent.mkdir(parents=True, exist_ok=True)
            self._profiler = Profiler(self.operator.pid, output)

    def profile_done(self) -> dict[str, Any] | None:
        if self._profiler is None:
            return None
        found, self._profiler = self._profiler.stop(), None
        return found

    # Clearing up

    def clear(self) -> None:
        """Delete the requests, bindings and policies any benchmark run left behind."""
        started = time.time()
        requests = self.admin.ok("GET", f"{REQUESTS}/accessrequests", labelSelector=RUN_LABEL)
        floor = self.admin.ok("GET", f"{RBAC}/rolebindings", labelSelector=FLOOR_LABEL)
        managed = self.admin.ok("GET", f"{RBAC}/rolebindings", labelSelector=MANAGED)
        by_namespace: Counter[tuple[str, str]] = Counter()
        for item in requests.get("items", []):
            by_namespace[("requests", item["metadata"]["namespace"])] += 1
        for item in floor.get("items", []):
            by_namespace[("floor", item["metadata"]["namespace"])] += 1
        for item in managed.get("items", []):
            if item["metadata"]["namespace"].startswith(NAMESPACE_PREFIX):
                by_namespace[("managed", item["metadata"]["namespace"])] += 1

        def delete(what: tuple[str, str]) -> None:
            kind, namespace = what
            path = requests_path(namespace) if kind == "requests" else bindings_path(namespace)
            selector = {"requests": RUN_LABEL, "floor": FLOOR_LABEL}.get(kind, MANAGED)
            deadline = time.time() + 600
            # Deleting ten thousand objects in one call outlasts the API server's request
            # timeout (504); what it deleted stays deleted, so asking again finishes the job.
            while True:
                status, answer = self.admin.call("DELETE", path, labelSelector=selector)
                if status in (200, 404):
                    return
                if status not in (429, 500, 504) or time.time() > deadline:
                    raise BenchError(f"DELETE {path}: HTTP {status}: {answer.get('message')}")
                time.sleep(1)

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(delete, by_namespace))
        policies = self.admin.ok("GET", f"{REQUESTS}/accesspolicies", labelSelector=RUN_LABEL)
        for item in policies.get("items", []):
            self.admin.ok("DELETE", f"{REQUESTS}/accesspolicies/{item['metadata']['name']}",
                          expect=(200, 404))
        if by_namespace:
            say(f"cleared {sum(by_namespace.values())} objects of benchmark runs"
                f" in {time.time() - started:.1f}s")

    # The result

    def finish(self, figures: dict[str, Any], tables: Sequence[tuple[str, str]],
               ) -> Path:
        result = {
            "benchmark": self.name,
            "run": self.id,
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "smoke": bool(self.args.smoke),
            "size": self.size,
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "machine": self.machine,
            "parameters": self.parameters,
            "targets": {k: v for k, v in TARGETS.items()},
            **figures,
            "operator_serving_after_start_s": self.serving_after,
            "operator_files": str(self.workdir),
            "notes": self.notes,
        }
        self.args.results_dir.mkdir(parents=True, exist_ok=True)
        path = self.args.results_dir / f"{self.name}-{self.stamp}.json"
        path.write_text(json.dumps(result, indent=2, default=str) + "\n")

        m = self.machine
        print(f"\n{self.name} ({self.size}), run {self.id}")
        print(f"machine: {m['cpu_model']}, {m['cpu_cores']} cores,"
              f" {m['memory_bytes'] / 2**30:.1f} GiB; Kubernetes {m['kubernetes']};"
              f" Python {m['python']}; kopf {m['kopf']}; commit {m['git_commit'][:10]}"
              f"{' (dirty)' if m['git_dirty'] else ''}; operator {m['operator_digest']};"
              f" load {m['load_average']}")
        print("parameters: " + ", ".join(f"{k}={v}" for k, v in self.parameters.items()))
        for title, text in tables:
            print(f"\n{title}\n{text}")
        for note in self.notes:
            print(f"note: {note}")
        print(f"\nwritten to {path}")
        return path


def calls_table(calls: dict[str, Any]) -> str:
    rows = [[name, str(calls["calls"][name]), f"{per:.2f}"]
            for name, per in calls["per_transition"].items()]
    rows.append(["total", str(sum(calls["calls"].values())),
                 f"{calls['total_per_transition'] or 0:.2f}"])
    return table(rows, ["API call", "count", f"per {calls['transition']}"])


def target_rows(checks: Sequence[tuple[str, str, str, bool | None]]) -> str:
    rows = [[what, target, measured, "-" if met is None else ("yes" if met else "NO")]
            for what, target, measured, met in checks]
    return table(rows, ["figure", "SPEC target", "measured", "met"])


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms"


def times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def met(value: float | None, limit: float) -> bool | None:
    return None if value is None else value <= limit
