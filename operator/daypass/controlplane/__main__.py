"""`python -m daypass.controlplane`: build, start, stop and inspect the local control plane.

A thin command line over `build` and `cluster`; it never decides anything they do not.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from daypass.controlplane import build, cluster


def _up(paths: list[Path]) -> int:
    local = cluster.start(apply=paths)
    kubeconfig = shlex.quote(str(local.kubeconfig))
    contexts = ", ".join(local.context(user) for user in local.tokens)
    print(f"control plane ready at {local.server}")
    print(f"kubeconfig: {local.kubeconfig} (contexts: {contexts})")
    print("use it with:")
    print(f"  export KUBECONFIG={kubeconfig}")
    print(f"  export PATH={shlex.quote(str(local.bin_dir))}:$PATH")
    print("  kubectl --context alice auth can-i list pods -n team-a")
    return 0


def _status() -> int:
    state = cluster.default_state_dir()
    components = cluster.status(state)
    for component in components:
        where = ", ".join(f"127.0.0.1:{port}" for port in component.ports) or "-"
        running = f"running (pid {component.pid})" if component.running else "stopped"
        print(f"{component.name:<24} {running:<22} {where}")
    if all(component.running for component in components):
        print(f"kubeconfig: {state / 'kubeconfig'}")
        return 0
    return 1


def _env() -> int:
    kubeconfig = cluster.default_state_dir() / "kubeconfig"
    if not kubeconfig.exists():
        print(
            f"no kubeconfig at {kubeconfig}: start the control plane with "
            "`python -m daypass.controlplane up`",
            file=sys.stderr,
        )
        return 1
    print(f"export KUBECONFIG={shlex.quote(str(kubeconfig))}")
    print(f"export PATH={shlex.quote(str(build.bin_dir()))}:$PATH")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m daypass.controlplane",
        description="A real Kubernetes control plane on loopback, for the demo and the tests.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("build", help="build the Kubernetes binaries into the cache")
    up = commands.add_parser("up", help="start the control plane, or reuse the running one")
    up.add_argument(
        "--apply",
        metavar="PATH",
        type=Path,
        nargs="+",
        action="extend",
        default=[],
        help="a manifest file or directory to apply as admin once it runs",
    )
    down = commands.add_parser("down", help="stop every process of the control plane")
    down.add_argument(
        "--wipe", action="store_true", help="also delete certificates, tokens and etcd data"
    )
    commands.add_parser("status", help="say which component runs")
    commands.add_parser("env", help="print the shell exports to use the control plane")
    args = parser.parse_args(argv)

    try:
        if args.command == "build":
            print(build.build())
            return 0
        if args.command == "up":
            return _up(args.apply)
        if args.command == "down":
            cluster.stop(wipe=args.wipe)
            print("control plane stopped" + (" and its state deleted" if args.wipe else ""))
            return 0
        if args.command == "status":
            return _status()
        return _env()
    except (cluster.ControlPlaneError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
