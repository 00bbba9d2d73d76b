from __future__ import annotations

import pytest

from atoll import errors, labels


@pytest.mark.parametrize(
    ("selector", "match", "nomatch"),
    [
        ("name=apache", {"name": "apache"}, {"name": "nginx"}),
        ("name==apache,tier!=db", {"name": "apache"}, {"name": "apache", "tier": "db"}),
        ("env in (prod, staging)", {"env": "prod"}, {"env": "dev"}),
        ("env notin (dev)", {}, {"env": "dev"}),
        ("app", {"app": "x"}, {}),
        ("!app", {}, {"app": "x"}),
    ],
)
def test_selectors(selector: str, match: dict[str, str], nomatch: dict[str, str]) -> None:
    s = labels.parse(selector)
    assert s.matches(match)
    assert not s.matches(nomatch)


@pytest.mark.parametrize("bad", ["name in (a,", "=x", "a b", "na me=x", "x=" + "a" * 64])
def test_bad_selectors(bad: str) -> None:
    with pytest.raises(errors.InvalidArgument):
        labels.parse(bad)
