"""Fuzzing the manifest layer: thousands of generated documents and texts, no crash ever.

Every input either decodes or fails with a ManifestError (an InvalidArgument
naming a field or a position); nothing else may escape. Inputs are random
JSON-shaped values, the examples with random subtrees swapped in, and random
text around JSON/YAML syntax (smart quotes and non-breaking spaces included).
Derandomized, so CI sees the same inputs every run.
"""

from __future__ import annotations

import copy
import json
import pathlib
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atoll import errors
from coordinator import manifests

EXAMPLES = [
    doc
    for path in sorted((pathlib.Path(__file__).resolve().parents[2] / "examples").glob("*.json"))
    for doc in [json.loads(path.read_text())]
]
FUZZ = settings(
    max_examples=3400,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
COUNT = {"documents": 0, "texts": 0}

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(
        [
            "v1",
            "v1beta1",
            "Pod",
            "Service",
            "ReplicationController",
            "Node",
            "80",
            "TCP",
            "Always",
            "10.0.0.1",
        ]
    ),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=20,
)


def paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            found += paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            found += paths(value, (*prefix, i))
    return found


def replace(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    doc = copy.deepcopy(doc)
    target = doc
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return doc


@st.composite
def mutated_examples(draw: st.DrawFn) -> Any:
    doc = draw(st.sampled_from(EXAMPLES))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(paths(doc)))
        doc = replace(doc, path, draw(json_values))
    return doc


def decode(doc: Any) -> None:
    try:
        manifests.load_data(doc, "fuzz.json")
    except errors.InvalidArgument as exc:
        assert str(exc) and "Traceback" not in str(exc)


@FUZZ
@given(json_values)
def test_random_documents(doc: Any) -> None:
    COUNT["documents"] += 1
    decode(doc)


@FUZZ
@given(mutated_examples())
def test_mutated_examples(doc: Any) -> None:
    COUNT["documents"] += 1
    decode(doc)


@FUZZ
@given(
    st.lists(
        st.one_of(
            st.sampled_from(
                [
                    "{",
                    "}",
                    "[",
                    "]",
                    ":",
                    ",",
                    '"',
                    "'",
                    "\n",
                    "  ",
                    "- ",
                    "kind: Pod",
                    "apiVersion: v1",
                    '"id": "x"',
                    "\u00a0",
                    "\u201c",
                    "\u201d",
                    "\u2018",
                    "\t",
                    "---",
                    "&a",
                    "*a",
                    "!!python/object",
                ]
            ),
            st.text(max_size=10),
        ),
        max_size=30,
    ).map("".join)
)
def test_random_text(text: str) -> None:
    COUNT["texts"] += 1
    for fmt in ("json", "yaml"):
        try:
            manifests.load_text(text, f"fuzz.{fmt}", fmt=fmt)  # type: ignore[arg-type]
        except errors.InvalidArgument as exc:
            assert "Traceback" not in str(exc)


def test_zz_count() -> None:
    """At least 10,000 generated manifests went through (issue #5)."""
    assert COUNT["documents"] + COUNT["texts"] >= 10_000, COUNT
