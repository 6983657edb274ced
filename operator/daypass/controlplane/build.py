"""Build the local control plane's binaries from the Kubernetes Go modules, once per release,
and helm from its own Go module for the install tests.

The binaries live in a cache outside the repository, keyed by release, so a fresh machine
builds them once and every later start reuses them. This module never starts anything.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

KUBERNETES_VERSION = "v1.36.3"
BINARIES = {
    "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
    "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
    "kubectl": "k8s.io/kubernetes/cmd/kubectl",
    "etcd": "go.etcd.io/etcd/server/v3",
}
HELM_VERSION = "v4.3.2"


def cache_root() -> Path:
    """Where built binaries are kept: $DAYPASS_CACHE, else the user's cache folder."""
    if os.environ.get("DAYPASS_CACHE"):
        return Path(os.environ["DAYPASS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "daypass"


def bin_dir(version: str = KUBERNETES_VERSION) -> Path:
    return cache_root() / f"kubernetes-{version}" / "bin"


def binaries_present(version: str = KUBERNETES_VERSION) -> bool:
    return all((bin_dir(version) / name).is_file() for name in BINARIES)


def _say(message: str) -> None:
    print(f"[control plane] {message}", file=sys.stderr, flush=True)


def _go(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(["go", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"go {' '.join(args)} failed:\n{done.stderr[-4000:]}")
    return done.stdout


def _wrapper_go_mod(version: str, staging: list[str], go_line: str) -> str:
    # k8s.io/kubernetes names its staging modules as v0.0.0 with replace lines into its own
    # tree; a module that depends on it must point each one at its published version.
    staging_version = "v0." + version.split(".", 1)[1]
    lines = [
        "module daypass.dev/controlplane-build",
        "",
        go_line,
        "",
        f"require k8s.io/kubernetes {version}",
        "",
        "replace (",
        *[f"\t{module} => {module} {staging_version}" for module in staging],
        ")",
        "",
    ]
    return "\n".join(lines)


def build(version: str = KUBERNETES_VERSION) -> Path:
    """Build etcd, kube-apiserver, kube-controller-manager and kubectl into the cache."""
    target = bin_dir(version)
    if binaries_present(version):
        return target
    if shutil.which("go") is None:
        raise RuntimeError("Go 1.26 or newer is needed to build the local control plane")

    work = target.parent / "src"
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod -buildvcs=false"}
    started = time.monotonic()

    _say(f"building Kubernetes {version} binaries into {target} (first time only)")
    _say("step 1/4: reading the k8s.io/kubernetes module")
    info = json.loads(_go(["mod", "download", "-json", f"k8s.io/kubernetes@{version}"], work, env))
    upstream_mod = Path(info["GoMod"]).read_text()
    staging = sorted(
        line.split()[0]
        for line in upstream_mod.splitlines()
        if "=> ./staging/" in line and line.split()[0].startswith("k8s.io/")
    )
    go_line = next(line for line in upstream_mod.splitlines() if line.startswith("go "))

    _say(f"step 2/4: writing a wrapper module with {len(staging)} staging replacements")
    (work / "go.mod").write_text(_wrapper_go_mod(version, staging, go_line))
    imports = "\n".join(f'\t_ "{pkg}"' for pkg in BINARIES.values() if pkg.startswith("k8s.io/"))
    (work / "tools.go").write_text(
        f"//go:build tools\n\npackage tools\n\nimport (\n{imports}\n)\n"
    )
    _go(["mod", "tidy", "-e"], work, env)
    # etcd is a main package, so it cannot be imported above: pin the version Kubernetes uses.
    etcd = re.search(r"go\.etcd\.io/etcd/server/v3 (v[0-9.]+)", upstream_mod)
    _go(["get", f"go.etcd.io/etcd/server/v3@{etcd.group(1) if etcd else 'v3.6.8'}"], work, env)

    _say("step 3/4: downloading modules")
    _go(["mod", "download"], work, env)

    staging_dir = target.parent / "bin.partial"
    staging_dir.mkdir(parents=True, exist_ok=True)
    minor = version.lstrip("v").split(".")[1]
    ldflags = " ".join(
        [
            f"-X k8s.io/component-base/version.gitVersion={version}",
            "-X k8s.io/component-base/version.gitMajor=1",
            f"-X k8s.io/component-base/version.gitMinor={minor}",
            "-X k8s.io/component-base/version.gitTreeState=clean",
            "-s -w",
        ]
    )
    for index, (name, package) in enumerate(BINARIES.items(), start=1):
        elapsed = int(time.monotonic() - started)
        _say(
            f"step 4/4: compiling {name} ({index}/{len(BINARIES)}, {elapsed}s so far;"
            " the first two take several minutes each on two cores)"
        )
        _go(["build", "-trimpath", "-ldflags", ldflags, "-o", str(staging_dir / name), package],
            work, env)

    if target.exists():
        shutil.rmtree(target)
    staging_dir.rename(target)
    _say(f"built in {int(time.monotonic() - started)}s: {', '.join(BINARIES)}")
    return target


def helm_path(version: str = HELM_VERSION) -> Path:
    return cache_root() / f"helm-{version}" / "bin" / "helm"


def build_helm(version: str = HELM_VERSION) -> Path:
    """Build helm from its Go module into the cache, once per version, and return its path."""
    target = helm_path(version)
    if target.is_file():
        return target
    if shutil.which("go") is None:
        raise RuntimeError("Go 1.26 or newer is needed to build helm")

    major = version.lstrip("v").split(".")[0]
    module = f"helm.sh/helm/v{major}"
    partial = target.parent.parent / "bin.partial"
    partial.mkdir(parents=True, exist_ok=True)
    # `helm version` reports what the linker is told; unset, it says the module's placeholder.
    ldflags = f"-s -w -X {module}/internal/version.version={version}"
    env = {**os.environ, "CGO_ENABLED": "0", "GOBIN": str(partial),
           "GOFLAGS": "-mod=mod -buildvcs=false"}
    started = time.monotonic()

    _say(f"building helm {version} into {target.parent} (first time only)")
    _go(["install", "-trimpath", "-ldflags", ldflags, f"{module}/cmd/helm@{version}"],
        Path.cwd(), env)

    if target.parent.exists():
        shutil.rmtree(target.parent)
    partial.rename(target.parent)
    _say(f"built helm {version} in {int(time.monotonic() - started)}s")
    return target


if __name__ == "__main__":
    print(build())
