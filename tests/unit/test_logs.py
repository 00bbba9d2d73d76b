"""atoll.logs: the JSON lines of --log-format json, and the option itself."""

from __future__ import annotations

import argparse
import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest

from atoll import agentconfig, errors, logs
from atoll.v1 import meta_pb2
from coordinator import config as coordinator_config

RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\Z")


class Captured:
    def __init__(self, stream: io.StringIO, logger: logging.Logger) -> None:
        self.stream = stream
        self.log = logger

    def lines(self) -> list[str]:
        text = self.stream.getvalue()
        assert text.endswith("\n")
        return text[:-1].split("\n")

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines()]


def _capture(name: str, fmt: str, fields: dict[str, str] | None = None) -> Iterator[Captured]:
    stream = io.StringIO()
    logger = logging.getLogger(name)
    handler = logs.handler(fmt, stream, fields)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield Captured(stream, logger)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


@pytest.fixture
def captured() -> Iterator[Captured]:
    yield from _capture("atoll.test.json", "json")


def test_a_record_carries_time_level_logger_and_the_formatted_message(captured: Captured) -> None:
    captured.log.warning("sync of pod %s failed: %s; retrying", "default/web", "timeout")
    (entry,) = captured.records()
    assert entry["level"] == "warning"
    assert entry["logger"] == "atoll.test.json"
    assert entry["message"] == "sync of pod default/web failed: timeout; retrying"
    assert RFC3339_UTC.match(entry["ts"]), entry["ts"]
    assert set(entry) == {"ts", "level", "logger", "message"}


def test_context_fields_are_top_level_keys(captured: Captured) -> None:
    meta = meta_pb2.ObjectMeta(name="web", namespace="prod", uid="1234-abcd")
    captured.log.info("bound pod %s to %s", "prod/web", "n1", extra=logs.pod(meta, node="n1"))
    captured.log.info("removed pod %s", "99", extra=logs.pod(None, "99"))
    captured.log.info("odd value", extra={"when": {1, 2}.__class__, "count": 3})
    bound, removed, odd = captured.records()
    assert {k: bound[k] for k in ("pod", "namespace", "uid", "node")} == {
        "pod": "web",
        "namespace": "prod",
        "uid": "1234-abcd",
        "node": "n1",
    }
    assert removed["uid"] == "99" and "pod" not in removed and "namespace" not in removed
    assert odd["count"] == 3 and odd["when"] == "<class 'set'>"  # not JSON: its str()


def test_context_never_replaces_the_core_keys(captured: Captured) -> None:
    captured.log.info("real", extra={"level": "fake", "ts": "fake", "logger": "fake"})
    (entry,) = captured.records()
    assert (entry["level"], entry["logger"], entry["message"]) == ("info", "atoll.test.json", "real")
    assert entry["ts"] != "fake"


def test_an_exception_is_one_field_and_the_record_one_line(captured: Captured) -> None:
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        captured.log.exception("sync of pod %s crashed", "default/web", extra={"pod": "web"})
    captured.log.info("after")
    lines = captured.lines()
    assert len(lines) == 2
    crashed, after = (json.loads(line) for line in lines)
    assert crashed["level"] == "error" and crashed["pod"] == "web"
    assert crashed["exception"].startswith("Traceback (most recent call last):")
    assert crashed["exception"].endswith("ValueError: bad\nvalue")
    assert "exception" not in after


def test_stack_info_is_its_own_field(captured: Captured) -> None:
    captured.log.info("where", stack_info=True)
    (entry,) = captured.records()
    assert entry["stack"].startswith("Stack (most recent call last):")


def test_non_ascii_and_control_characters_round_trip_on_one_ascii_line(captured: Captured) -> None:
    message = "pod café/ñandú: 日本語 \u2028 tab\tnewline\n end \udcff"
    captured.log.info("%s", message, extra={"node": "nœud"})
    (line,) = captured.lines()
    assert line.isascii()  # valid whatever the encoding of stderr
    entry = json.loads(line)
    assert entry["message"] == message and entry["node"] == "nœud"


def test_fixed_fields_go_on_every_record_unless_it_has_its_own() -> None:
    for captured in _capture("atoll.test.fields", "json", {"node": "host-1"}):
        captured.log.info("plain")
        captured.log.info("about another node", extra={"node": "host-2"})
        plain, other = captured.records()
        assert plain["node"] == "host-1" and other["node"] == "host-2"


def test_text_format_stays_as_it_was() -> None:
    for captured in _capture("atoll.test.text", "text", {"node": "host-1"}):
        captured.log.warning("pod %s: %s", "web", "gone", extra={"pod": "web"})
        (line,) = captured.lines()
        assert re.fullmatch(
            r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING atoll.test.text: pod web: gone", line
        )


def test_setup_configures_the_root_logger_once(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", root.level)
    stream = io.StringIO()
    logs.setup("warning", "json", stream=stream, fields={"node": "n1"})
    logs.setup("debug", "text", stream=io.StringIO())  # a second call changes nothing, like basicConfig
    logging.getLogger("atoll.test.setup").info("dropped")
    logging.getLogger("atoll.test.setup").warning("kept")
    (line,) = stream.getvalue().splitlines()
    assert json.loads(line)["message"] == "kept" and json.loads(line)["node"] == "n1"
    assert root.level == logging.WARNING


@pytest.mark.parametrize(("value", "expected"), [("text", "text"), ("json", "json"), ("JSON", "json")])
def test_log_format_option(value: str, expected: str) -> None:
    cfg, _ = agentconfig.load(["--log-format", value], environ={})
    assert cfg.log_format == expected
    cfg, _ = agentconfig.load([], environ={"ATOLL_AGENT_LOG_FORMAT": value})
    assert cfg.log_format == expected


def test_log_format_is_validated_at_start() -> None:
    with pytest.raises(errors.InvalidArgument, match="log_format: expected text or json, got 'xml'"):
        agentconfig.load(["--log-format", "xml"], environ={})
    parser = argparse.ArgumentParser()
    coordinator_config.add_serve_flags(parser)
    args = parser.parse_args([])
    assert (
        coordinator_config.load_serve(args, environ={"ATOLL_COORDINATOR_LOG_FORMAT": "json"}).log_format
        == "json"
    )
    with pytest.raises(errors.InvalidArgument, match="log_format: expected text or json, got 'xml'"):
        coordinator_config.load_serve(args, environ={"ATOLL_COORDINATOR_LOG_FORMAT": "xml"})
