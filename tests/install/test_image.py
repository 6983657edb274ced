"""What can be checked of the operator image without a container engine: the Dockerfile runs
`daypass run` as a numeric non-root user from python:3.11-slim, and every pin of
deploy/requirements.lock is exact and within pyproject.toml's constraints.
"""

from __future__ import annotations

import json
import re
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from .manifests import DEPLOY, ROOT

pytestmark = pytest.mark.e2e

PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;#]+)$")


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions, continuation lines joined, comments left out."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def pins() -> dict[str, Version]:
    pinned: dict[str, Version] = {}
    for line in (DEPLOY / "requirements.lock").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = PIN.match(line.strip())
        assert match, f"not an exact pin: {line!r}"
        name = canonicalize_name(match["name"])
        assert name not in pinned, f"pinned twice: {name}"
        pinned[name] = Version(match["version"])
    return pinned


def test_the_image_builds_in_stages_from_python_3_11_slim() -> None:
    steps = instructions()
    bases = [rest.split()[0] for word, rest in steps if word == "FROM"]
    args = dict(rest.split("=", 1) for word, rest in steps if word == "ARG" and "=" in rest)

    assert len(bases) >= 2
    for base in bases:
        image = args.get(base.strip("${}"), base) if base.startswith("$") else base
        assert image.startswith("python:3.11-slim"), image


def test_the_image_runs_daypass_as_a_numeric_non_root_user() -> None:
    users = [rest for word, rest in final_stage() if word == "USER"]

    assert users, "the final stage sets no USER: it would run as root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0, users[-1]
    assert not gid or (gid.isdigit() and int(gid) > 0), users[-1]
    entrypoint = [rest for word, rest in final_stage() if word == "ENTRYPOINT"]
    command = [rest for word, rest in final_stage() if word == "CMD"]
    assert [json.loads(e) for e in entrypoint] == [["daypass"]]
    assert [json.loads(c) for c in command] == [["run"]]


def test_the_entrypoint_is_a_script_the_package_installs() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())

    assert pyproject["project"]["scripts"]["daypass"] == "daypass.cli.run:main"


def test_what_the_dockerfile_copies_exists_and_is_not_docker_ignored() -> None:
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    sources = [part for word, rest in instructions() if word == "COPY"
               and not rest.startswith("--from") for part in rest.split()[:-1]]

    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert f"!{source.rstrip('/')}" in {line.rstrip("/") for line in ignored}, source


def test_every_pin_is_exact_and_within_pyproject_constraints() -> None:
    pinned = pins()
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]

    for dependency in map(Requirement, dependencies):
        name = canonicalize_name(dependency.name)
        assert name in pinned, f"{dependency} is not pinned in deploy/requirements.lock"
        assert dependency.specifier.contains(pinned[name], prereleases=True), \
            f"{name}=={pinned[name]} does not satisfy {dependency} from pyproject.toml"
    assert "daypass" not in pinned
