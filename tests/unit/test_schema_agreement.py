"""The CRDs in crds/ and the pydantic models must describe the same objects.

The API server prunes every field its schema does not know, and the operator cannot read a field
its models do not know: a field added on one side only is silently lost. These tests walk both
and fail on any difference in names, required-ness, types, enums or defaults.
"""

from __future__ import annotations

import types
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import pytest
import yaml
from daypass.models import (
    GROUP,
    VERSION,
    AccessPolicy,
    AccessPolicySpec,
    AccessPolicyStatus,
    AccessRequest,
    AccessRequestSpec,
    AccessRequestStatus,
    Phase,
    RoleKind,
)
from pydantic import BaseModel

CRDS = Path(__file__).resolve().parents[2] / "crds"
KINDS = {
    "AccessPolicy": ("accesspolicies.yaml", "apol", "Cluster"),
    "AccessRequest": ("accessrequests.yaml", "areq", "Namespaced"),
}
MODELS: dict[str, dict[str, type[BaseModel]]] = {
    "AccessPolicy": {"spec": AccessPolicySpec, "status": AccessPolicyStatus},
    "AccessRequest": {"spec": AccessRequestSpec, "status": AccessRequestStatus},
}
SCALARS: dict[type, str] = {str: "string", int: "integer", bool: "boolean", float: "number"}


def crd(kind: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CRDS / KINDS[kind][0]).read_text())
    return loaded


def version(kind: str) -> dict[str, Any]:
    (served,) = crd(kind)["spec"]["versions"]
    return dict(served)


def schema(kind: str) -> dict[str, Any]:
    return dict(version(kind)["schema"]["openAPIV3Schema"])


def unwrap_optional(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, types.UnionType):
        present = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(present) == 1:
            return present[0]
    return annotation


def disagreements(node: dict[str, Any], annotation: Any, path: str) -> list[str]:
    """Every way the schema node and the model type differ, each naming where."""
    annotation = unwrap_optional(annotation)
    origin = get_origin(annotation)
    found: list[str] = []

    def expect_type(wanted: str) -> None:
        if node.get("type") != wanted:
            found.append(f"{path}: CRD type {node.get('type')!r}, model wants {wanted!r}")

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        expect_type("object")
        found += model_disagreements(node, annotation, path)
    elif origin is list:
        expect_type("array")
        found += disagreements(node.get("items", {}), get_args(annotation)[0], f"{path}[]")
    elif origin is dict:
        expect_type("object")
        if "properties" in node:
            found.append(f"{path}: CRD lists properties, the model has a free-form map")
        values = node.get("additionalProperties")
        if not isinstance(values, dict):
            found.append(f"{path}: CRD has no additionalProperties for the model's map")
        else:
            found += disagreements(values, get_args(annotation)[1], f"{path}{{}}")
    elif isinstance(annotation, type) and issubclass(annotation, Enum):
        expect_type("string")
        model_values = [member.value for member in annotation]
        if node.get("enum") != model_values:
            found.append(f"{path}: CRD enum {node.get('enum')}, model enum {model_values}")
    elif origin is Literal:
        expect_type("string")
        if node.get("enum") != list(get_args(annotation)):
            found.append(f"{path}: CRD enum {node.get('enum')}, model {list(get_args(annotation))}")
    elif annotation is datetime:
        expect_type("string")
        if node.get("format") != "date-time":
            found.append(f"{path}: a time in the model, but CRD format is {node.get('format')!r}")
    elif annotation in SCALARS:
        expect_type(SCALARS[annotation])
        if "enum" in node:
            found.append(f"{path}: CRD enum {node['enum']} but the model takes any {annotation}")
    else:
        found.append(f"{path}: the test does not know how to compare model type {annotation!r}")
    return found


def model_disagreements(node: dict[str, Any], model: type[BaseModel], path: str) -> list[str]:
    fields = {(info.alias or name): info for name, info in model.model_fields.items()}
    properties = node.get("properties", {})
    found: list[str] = []

    for name in sorted(set(properties) - set(fields)):
        found.append(f"{path}.{name}: in the CRD but not in {model.__name__}")
    for name in sorted(set(fields) - set(properties)):
        found.append(f"{path}.{name}: in {model.__name__} but not in the CRD")

    crd_required = set(node.get("required", []))
    model_required = {alias for alias, info in fields.items() if info.is_required()}
    for name in sorted(crd_required - model_required):
        found.append(f"{path}.{name}: required by the CRD, optional in {model.__name__}")
    for name in sorted(model_required - crd_required):
        found.append(f"{path}.{name}: required by {model.__name__}, optional in the CRD")

    for name in sorted(set(properties) & set(fields)):
        info = fields[name]
        found += disagreements(properties[name], info.annotation, f"{path}.{name}")
        default = properties[name].get("default")
        if default is not None and not isinstance(default, dict) and not info.is_required():
            model_default = info.get_default(call_default_factory=True)
            if isinstance(model_default, Enum):
                model_default = model_default.value
            if model_default != default:
                found.append(
                    f"{path}.{name}: CRD default {default!r}, model default {model_default!r}"
                )
    return found


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("part", ["spec", "status"])
def test_crd_and_model_agree(kind: str, part: str) -> None:
    node = schema(kind)["properties"][part]

    assert model_disagreements(node, MODELS[kind][part], f"{kind}.{part}") == []


@pytest.mark.parametrize(
    ("kind", "model"), [("AccessPolicy", AccessPolicy), ("AccessRequest", AccessRequest)]
)
def test_crd_and_model_have_the_same_top_level_fields(kind: str, model: type[BaseModel]) -> None:
    aliases = {info.alias or name for name, info in model.model_fields.items()}

    assert set(schema(kind)["properties"]) == aliases


def test_the_comparison_catches_a_field_added_on_one_side_only() -> None:
    # The guard itself must bite: a CRD property the model lacks, and the other way round.
    node = schema("AccessRequest")["properties"]["spec"]
    with_extra = node | {"properties": node["properties"] | {"ticket": {"type": "string"}}}
    without_reason = node | {
        "properties": {k: v for k, v in node["properties"].items() if k != "reason"}
    }

    assert model_disagreements(with_extra, AccessRequestSpec, "spec") == [
        "spec.ticket: in the CRD but not in AccessRequestSpec"
    ]
    assert model_disagreements(without_reason, AccessRequestSpec, "spec") == [
        "spec.reason: in AccessRequestSpec but not in the CRD"
    ]


def test_the_comparison_catches_a_changed_enum() -> None:
    node = schema("AccessRequest")["properties"]["status"]
    phase = node["properties"]["phase"] | {"enum": ["Pending", "Active"]}
    changed = node | {"properties": node["properties"] | {"phase": phase}}

    (problem,) = model_disagreements(changed, AccessRequestStatus, "status")
    assert problem.startswith("status.phase: CRD enum ['Pending', 'Active']")


def test_phase_and_role_kind_enums_are_the_models() -> None:
    request_schema = schema("AccessRequest")["properties"]
    policy_schema = schema("AccessPolicy")["properties"]
    phases = [phase.value for phase in Phase]
    kinds = [kind.value for kind in RoleKind]

    assert request_schema["status"]["properties"]["phase"]["enum"] == phases
    assert (
        request_schema["status"]["properties"]["history"]["items"]["properties"]["phase"]["enum"]
        == phases
    )
    assert request_schema["spec"]["properties"]["role"]["properties"]["kind"]["enum"] == kinds
    roles = policy_schema["spec"]["properties"]["roles"]["items"]
    assert roles["properties"]["kind"]["enum"] == kinds


# Structural schemas and kubectl ergonomics


def untyped(node: dict[str, Any], path: str) -> list[str]:
    """Schema nodes without a type: the API server refuses a non-structural CRD."""
    found = [] if "type" in node else [path]
    for name, child in node.get("properties", {}).items():
        found += untyped(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        found += untyped(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        found += untyped(node["additionalProperties"], f"{path}{{}}")
    return found


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_schema_node_has_a_type(kind: str) -> None:
    assert untyped(schema(kind), kind) == []


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_crd_names_scope_and_version_are_the_spec(kind: str) -> None:
    definition = crd(kind)
    _, short_name, scope = KINDS[kind]
    names = definition["spec"]["names"]

    assert definition["spec"]["group"] == GROUP
    assert definition["metadata"]["name"] == f"{names['plural']}.{GROUP}"
    assert names["kind"] == kind
    assert short_name in names["shortNames"]
    assert definition["spec"]["scope"] == scope
    assert version(kind)["name"] == VERSION
    assert version(kind)["served"] and version(kind)["storage"]
    assert "status" in version(kind)["subresources"]


def resolves(root: dict[str, Any], json_path: str) -> bool:
    """Whether a printer column's simple JSONPath names a field the schema has."""
    node = root
    for segment in json_path.lstrip(".").split("."):
        name, _, selection = segment.partition("[")
        node = node.get("properties", {}).get(name, {})
        if selection:
            node = node.get("items", {})
        if not node:
            return False
    return True


def printer_paths(kind: str) -> list[str]:
    # Filters such as [?(@.type=="Ready")] hold dots of their own; drop them before splitting.
    paths = []
    for column in version(kind)["additionalPrinterColumns"]:
        path = column["jsonPath"]
        while "[?(" in path:
            start = path.index("[?(")
            path = path[:start] + "[]" + path[path.index(")]", start) + 2 :]
        paths.append(path)
    return paths


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_printer_columns_exist_and_point_at_real_fields(kind: str) -> None:
    columns = version(kind)["additionalPrinterColumns"]
    with_metadata = schema(kind)
    with_metadata["properties"]["metadata"] = {
        "type": "object",
        "properties": {"creationTimestamp": {"type": "string"}},
    }

    assert len(columns) >= 3
    assert all({"name", "type", "jsonPath"} <= set(column) for column in columns)
    missing = [path for path in printer_paths(kind) if not resolves(with_metadata, path)]
    assert missing == []


def test_request_columns_show_who_what_and_where_it_stands() -> None:
    names = {column["name"] for column in version("AccessRequest")["additionalPrinterColumns"]}

    assert {"Requester", "Role", "Phase", "Expires"} <= names
