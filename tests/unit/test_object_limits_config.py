"""Finding 6: the options behind the size, replicas, history and quota limits are validated at start."""

from __future__ import annotations

import pytest

from atoll import errors
from coordinator.config import ServeConfig
from coordinator.objects import quota


def test_quota_keys_and_quantities() -> None:
    assert quota.parse_hard(["pods=10", "cpu=500m", "requests.memory=8Gi", "services=2"]) == {
        "pods": 10,
        "requests.cpu": 500,
        "requests.memory": 8 * 2**30,
        "services": 2,
    }
    assert quota.parse_hard(["requests.cpu=1.5"]) == {"requests.cpu": 1500}
    with pytest.raises(errors.InvalidArgument) as exc:
        quota.parse_hard(["pods=1", "pod=1"])
    assert exc.value.field == "namespace_quota[1]"
    with pytest.raises(errors.InvalidArgument, match="not a quantity"):
        quota.parse_hard(["pods=-1"])


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("namespace_quota", ["pods"], "namespace_quota[0]"),
        ("max_object_bytes", 512, "max_object_bytes"),
        ("max_object_bytes", 3 * 1024 * 1024, "max_object_bytes"),
        ("max_replicas", 0, "max_replicas"),
        ("compaction_interval", -1.0, "compaction_interval"),
    ],
)
def test_bad_limits_are_refused_at_start(option: str, value: object, message: str) -> None:
    cfg = ServeConfig(**{option: value})  # type: ignore[arg-type]
    with pytest.raises(errors.InvalidArgument, match=message.replace("[", r"\[")):
        cfg.validate()


def test_defaults_validate() -> None:
    cfg = ServeConfig()
    cfg.validate()
    assert (cfg.max_object_bytes, cfg.max_replicas, cfg.compaction_interval) == (1024 * 1024, 10_000, 300.0)
