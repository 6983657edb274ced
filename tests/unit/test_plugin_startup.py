"""`kubectl daypass` starts fast: help and usage errors never load the heavy libraries."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

OPERATOR = Path(__file__).resolve().parents[2] / "operator"
HEAVY = ("kubernetes", "pydantic", "kopf", "rich", "yaml")

PROBE = """
import sys
from daypass.cli import kubectl
try:
    kubectl.main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
heavy = sorted(name for name in sys.modules if name.split(".")[0] in {heavy!r})
print("loaded:", ",".join(heavy), "exit:", code, file=sys.stderr)
"""


def probe(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=set(HEAVY)), *argv],
        capture_output=True, text=True, check=False, env={"PYTHONPATH": str(OPERATOR)},
        timeout=60,
    )


@pytest.mark.parametrize("argv", [
    ["--help"],
    ["request", "--help"],
    ["audit", "--help"],
    ["request"],
    ["list", "--output", "xml"],
    ["frobnicate"],
])
def test_help_and_usage_errors_load_no_heavy_library(argv: list[str]) -> None:
    result = probe(*argv)
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("loaded:  exit:"), result.stderr
    assert last.endswith("exit: 0") == ("--help" in argv)


def test_help_names_every_command() -> None:
    result = probe("--help")
    for command in ("request", "list", "approve", "deny", "revoke", "extend", "show",
                    "eligible", "audit"):
        assert command in result.stdout
