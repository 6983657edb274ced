"""Label selectors, matched the way the API server matches them.

Pure: takes labels and a selector, never asks the cluster.
"""

from __future__ import annotations

from collections.abc import Mapping

from daypass.models import LabelSelector

OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


def selector_problem(selector: LabelSelector) -> str | None:
    """Why this selector cannot be used, or None when it can."""
    for requirement in selector.match_expressions:
        if requirement.operator not in OPERATORS:
            return (
                f"selector operator {requirement.operator!r} on key {requirement.key!r} is not one"
                f" of {', '.join(OPERATORS)}"
            )
        if requirement.operator in ("In", "NotIn") and not requirement.values:
            return (
                f"selector operator {requirement.operator} on key {requirement.key!r} needs values"
            )
        if requirement.operator in ("Exists", "DoesNotExist") and requirement.values:
            return (
                f"selector operator {requirement.operator} on key {requirement.key!r}"
                " takes no values"
            )
    return None


def selector_matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """Whether labels satisfy every term of the selector; an empty selector matches everything."""
    for key, value in selector.match_labels.items():
        if labels.get(key) != value:
            return False
    for requirement in selector.match_expressions:
        present = requirement.key in labels
        found = labels.get(requirement.key)
        if requirement.operator == "In" and found not in requirement.values:
            return False
        if requirement.operator == "NotIn" and present and found in requirement.values:
            return False
        if requirement.operator == "Exists" and not present:
            return False
        if requirement.operator == "DoesNotExist" and present:
            return False
        if requirement.operator not in OPERATORS:
            return False
    return True
