"""Namespace label selectors, matched the way the API server matches them."""

from __future__ import annotations

from typing import Any

import pytest
from daypass.labelselector import selector_matches, selector_problem
from daypass.models import LabelSelector

ELIGIBLE = {"daypass.dev/eligible": "true", "team": "a"}


def selector(**wire: Any) -> LabelSelector:
    return LabelSelector.model_validate(wire)


def expression(key: str, operator: str, *values: str) -> dict[str, Any]:
    term: dict[str, Any] = {"key": key, "operator": operator}
    if values:
        term["values"] = list(values)
    return term


def test_empty_selector_matches_every_namespace() -> None:
    assert selector_matches(selector(), ELIGIBLE)
    assert selector_matches(selector(), {})


def test_match_labels_needs_every_label_with_its_value() -> None:
    wanted = selector(matchLabels={"daypass.dev/eligible": "true", "team": "a"})

    assert selector_matches(wanted, ELIGIBLE)
    assert selector_matches(wanted, ELIGIBLE | {"extra": "label"})
    assert not selector_matches(wanted, {"daypass.dev/eligible": "true"})
    assert not selector_matches(wanted, ELIGIBLE | {"team": "b"})
    assert not selector_matches(wanted, {})


@pytest.mark.parametrize(
    ("term", "labels", "matches"),
    [
        (expression("team", "In", "a", "b"), {"team": "a"}, True),
        (expression("team", "In", "a", "b"), {"team": "c"}, False),
        (expression("team", "In", "a", "b"), {}, False),
        (expression("team", "NotIn", "a", "b"), {"team": "c"}, True),
        (expression("team", "NotIn", "a", "b"), {"team": "a"}, False),
        # As in Kubernetes, NotIn matches an object that does not have the label at all.
        (expression("team", "NotIn", "a", "b"), {}, True),
        (expression("team", "Exists"), {"team": ""}, True),
        (expression("team", "Exists"), {"other": "a"}, False),
        (expression("team", "DoesNotExist"), {"other": "a"}, True),
        (expression("team", "DoesNotExist"), {"team": "a"}, False),
    ],
)
def test_match_expressions_operators(
    term: dict[str, Any], labels: dict[str, str], matches: bool
) -> None:
    assert selector_matches(selector(matchExpressions=[term]), labels) is matches


def test_match_labels_and_expressions_must_all_hold() -> None:
    both = selector(
        matchLabels={"daypass.dev/eligible": "true"},
        matchExpressions=[expression("team", "In", "a"), expression("frozen", "DoesNotExist")],
    )

    assert selector_matches(both, ELIGIBLE)
    assert not selector_matches(both, ELIGIBLE | {"frozen": "yes"})
    assert not selector_matches(both, {"team": "a"})


def test_usable_selectors_have_no_problem() -> None:
    usable = selector(
        matchLabels={"team": "a"},
        matchExpressions=[
            expression("team", "In", "a"),
            expression("team", "NotIn", "b"),
            expression("team", "Exists"),
            expression("frozen", "DoesNotExist"),
        ],
    )

    assert selector_problem(usable) is None
    assert selector_problem(selector()) is None


def test_an_unknown_operator_is_a_problem_and_matches_nothing() -> None:
    bad = selector(matchExpressions=[expression("team", "Equals", "a")])

    problem = selector_problem(bad)

    assert problem is not None
    assert "'Equals'" in problem and "'team'" in problem
    assert "In, NotIn, Exists, DoesNotExist" in problem
    assert not selector_matches(bad, {"team": "a"})


@pytest.mark.parametrize("operator", ["In", "NotIn"])
def test_in_and_not_in_without_values_are_a_problem(operator: str) -> None:
    problem = selector_problem(selector(matchExpressions=[expression("team", operator)]))

    assert problem is not None
    assert operator in problem and "'team'" in problem and "needs values" in problem


@pytest.mark.parametrize("operator", ["Exists", "DoesNotExist"])
def test_exists_and_does_not_exist_with_values_are_a_problem(operator: str) -> None:
    problem = selector_problem(selector(matchExpressions=[expression("team", operator, "a")]))

    assert problem is not None
    assert operator in problem and "takes no values" in problem
