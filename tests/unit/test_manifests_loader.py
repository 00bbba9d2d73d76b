"""Manifest text: formats, limits, and the errors for text an operator pasted from a web page."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import grpc
import pytest

from atoll import errors
from coordinator import manifests
from coordinator.manifests import loader
from coordinator.manifests.errors import ManifestError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

POD_JSON = """{
  "apiVersion": "v1",
  "kind": "Pod",
  "metadata": {"name": "apache"},
  "spec": {
    "containers": [
      {"name": "apache", "image": "fedora/apache", "ports": [{"containerPort": 80}]}
    ]
  }
}
"""

POD_YAML = """\
apiVersion: v1
kind: Pod
metadata:
  name: apache
spec:
  containers:
    - name: apache
      image: fedora/apache
      ports:
        - containerPort: 80
"""


def error(text: str, source: str) -> str:
    with pytest.raises(ManifestError) as info:
        manifests.load_text(text, source)
    message = str(info.value)
    assert "\n" not in message
    return message


# ------------------------------------------------------------------ formats


def test_json_and_yaml_give_the_same_pod() -> None:
    assert manifests.load_text(POD_JSON, "p.json") == manifests.load_text(POD_YAML, "p.yaml")


def test_format_is_sniffed_when_the_name_says_nothing() -> None:
    assert manifests.load_text(POD_JSON, "-") == manifests.load_text(POD_YAML, "<stdin>")


def test_multi_document_yaml() -> None:
    text = POD_YAML + "---\n" + POD_YAML.replace("name: apache\nspec", "name: apache2\nspec") + "---\n"
    pods = manifests.load_text(text, "two.yaml")
    assert [p.metadata.name for p in pods] == ["apache", "apache2"]  # type: ignore[attr-defined]


def test_byte_order_mark_is_tolerated() -> None:
    assert manifests.load_text("\ufeff" + POD_JSON, "p.json") == manifests.load_text(POD_JSON, "p.json")


def test_load_file_reads_json_and_yaml(tmp_path: Path) -> None:
    (tmp_path / "p.json").write_text(POD_JSON, encoding="utf-8")
    (tmp_path / "p.yml").write_text(POD_YAML, encoding="utf-8")
    assert manifests.load_file(tmp_path / "p.json") == manifests.load_file(str(tmp_path / "p.yml"))


def test_missing_file_is_a_manifest_error(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"nope\.yaml: cannot read: No such file or directory"):
        manifests.load_file(tmp_path / "nope.yaml")


def test_empty_file_is_refused() -> None:
    assert error("# nothing here\n---\n", "empty.yaml") == "empty.yaml: no objects found: the file is empty"


# ------------------------------------------------------------------ syntax errors


def test_json_syntax_error_is_one_line_with_position() -> None:
    text = POD_JSON.replace('"kind": "Pod",', '"kind": "Pod"')
    assert error(text, "p.json") == "p.json:4:3: invalid JSON: expecting ',' delimiter"


def test_yaml_syntax_error_is_one_line_with_position() -> None:
    message = error("a: [1, 2\nb: 3\n", "p.yaml")
    assert message.startswith("p.yaml:2:2: invalid YAML: expected ',' or ']', but got ':'")


def test_yaml_never_constructs_python_objects() -> None:
    message = error("x: !!python/object/apply:os.system [echo hi]\n", "evil.yaml")
    assert message.startswith("evil.yaml:1:4: invalid YAML: could not determine a constructor")


def test_json_nan_is_refused() -> None:
    assert error('{"a": NaN}', "n.json") == "n.json: invalid JSON: NaN is not valid JSON"


def test_duplicate_keys_are_refused() -> None:
    assert (
        error("kind: Pod\nkind: Node\n", "d.yaml")
        == 'd.yaml:2:1: duplicate key "kind" (first defined on line 1)'
    )
    text = '{"kind": "Pod",\n "kind": "Node"}'
    assert error(text, "d.json") == 'd.json:2:2: duplicate key "kind" (first defined on line 1)'


def test_same_key_in_sibling_objects_is_fine() -> None:
    text = POD_JSON.replace(
        '{"name": "apache", "image": "fedora/apache", "ports": [{"containerPort": 80}]}',
        '{"name": "a", "image": "nginx"}, {"name": "b", "image": "nginx"}',
    )
    assert len(manifests.load_text(text, "p.json")) == 1


def test_yaml_merge_keys_still_work() -> None:
    text = POD_YAML.replace("      image: fedora/apache\n", "      <<: {image: fedora/apache}\n")
    assert manifests.load_text(text, "m.yaml") == manifests.load_text(POD_YAML, "p.yaml")


def test_control_characters_are_reported_by_position() -> None:
    assert error("a: 1\nb: \x07\n", "c.yaml") == (
        "c.yaml:2:4: character U+0007 is not allowed in YAML (control characters must be escaped)"
    )


# ------------------------------------------------------------------ pasted characters


def test_non_breaking_space_in_json_names_line_and_column() -> None:
    text = POD_JSON.replace('"metadata": {"name"', '"metadata":\u00a0{"name"')
    assert (
        error(text, "apache.json")
        == "apache.json:4:14: non-breaking space (U+00A0) — replace it with a plain space"
    )


def test_smart_quotes_in_json() -> None:
    text = POD_JSON.replace('"kind": "Pod"', "\u201ckind\u201d: \u201cPod\u201d")
    assert error(text, "p.json") == (
        'p.json:3:3: left double quotation mark (U+201C) — replace it with a plain double quote (")'
    )


def test_closing_smart_quote_is_blamed_even_when_json_trips_later() -> None:
    text = POD_JSON.replace('"image": "fedora/apache"', '"image": "fedora/apache\u201d')
    assert error(text, "p.json").startswith("p.json:7:49: right double quotation mark (U+201D)")


def test_tab_in_yaml_indentation() -> None:
    text = POD_YAML.replace("      image: fedora/apache", "\timage: fedora/apache")
    assert error(text, "p.yaml") == "p.yaml:8:1: tab in indentation — YAML indents with spaces only"


def test_en_dash_used_as_a_list_dash_in_yaml() -> None:
    text = POD_YAML.replace("    - name: apache", "    \u2013 name: apache")
    assert error(text, "p.yaml") == "p.yaml:7:5: en dash (U+2013) — replace it with a plain hyphen (-)"


def test_non_breaking_space_indentation_that_yaml_accepts_is_still_caught() -> None:
    # YAML reads "\xa0\xa0name" as a key; the loader must not let that through.
    text = POD_YAML.replace("  name: apache", "\u00a0\u00a0name: apache")
    assert error(text, "p.yaml").startswith("p.yaml:4:1: non-breaking space (U+00A0)")


def test_smart_quotes_around_a_yaml_value() -> None:
    text = POD_YAML.replace("image: fedora/apache", "image: \u201cfedora/apache\u201d")
    assert error(text, "p.yaml").startswith("p.yaml:8:14: left double quotation mark (U+201C)")


def test_em_dash_in_an_argument_suggests_escaping_if_meant() -> None:
    text = POD_YAML.replace("image: fedora/apache", 'image: fedora/apache\n      args: ["\u2014verbose"]')
    assert error(text, "p.yaml") == (
        "p.yaml:9:15: em dash (U+2014) — replace it with a plain hyphen (-) "
        "(if it is meant, write it as \\u2014 in a double-quoted string)"
    )


def test_zero_width_space_in_a_json_key() -> None:
    text = POD_JSON.replace('"image"', '"ima\u200bge"')
    assert error(text, "p.json").startswith("p.json:7:30: zero-width space (U+200B) — delete it")


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_annotations_escapes_and_comments_may_hold_such_characters(fmt: str) -> None:
    doc = json.loads(POD_JSON)
    doc["metadata"]["annotations"] = {
        "description": "Apache\u00a0\u2014 it\u2019s \u201cthe\u201d web server"
    }
    doc["spec"]["containers"][0]["args"] = ["\u2014escaped"]
    if fmt == "json":
        text = json.dumps(doc, ensure_ascii=False).replace("\u2014escaped", "\\u2014escaped")
    else:
        text = "# Pasted from the wiki\u2019s \u201capache\u201d page\n" + json.dumps(doc, ensure_ascii=False)
        text = text.replace("\u2014escaped", "\\u2014escaped")
    (pod,) = manifests.load_text(text, f"p.{fmt}")
    assert pod.spec.containers[0].args == ["\u2014escaped"]  # type: ignore[attr-defined]


# ------------------------------------------------------------------ limits


def test_size_limit() -> None:
    text = POD_YAML + "#" * manifests.MAX_BYTES
    assert error(text, "big.yaml") == "big.yaml: the manifest is larger than 1 MiB; the limit is 1 MiB"


def test_size_limit_on_files(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    path.write_bytes(b" " * (3 << 20))
    with pytest.raises(ManifestError, match=r"big\.json: the manifest is 3\.0 MiB; the limit is 1 MiB"):
        manifests.load_file(path)


def test_json_depth_limit_stops_before_parsing() -> None:
    text = "[" * 100_000 + "]" * 100_000
    assert error(text, "deep.json") == "deep.json:1:65: nesting deeper than 64 levels"


def test_yaml_depth_limit() -> None:
    assert error("a: " + "[" * 70 + "]" * 70, "deep.yaml") == "deep.yaml:1:67: nesting deeper than 64 levels"
    block = "a:\n" + "".join("  " * i + "b:\n" for i in range(1, 800))
    assert error(block, "deep.yaml") == "deep.yaml: nesting deeper than 64 levels"


def test_yaml_alias_bomb_is_defused() -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]" for i in range(6)]
    message = error("\n".join(lines), "bomb.yaml")
    assert message.endswith(": more than 100000 YAML nodes once aliases are expanded")


def test_document_count_limit() -> None:
    text = "---\n".join(["a: 1\n"] * (manifests.MAX_DOCUMENTS + 1))
    assert error(text, "many.yaml") == "many.yaml:1001:1: more than 500 documents in one file"


# ------------------------------------------------------------------ encodings


def test_latin1_bytes_are_refused_by_position() -> None:
    with pytest.raises(ManifestError) as info:
        loader.decode_bytes(b"kind: Pod\nid: caf\xe9\n", "l.yaml")
    assert str(info.value) == "l.yaml:2:8: byte 0xe9 is not UTF-8; save the file as UTF-8"


def test_utf16_is_named() -> None:
    with pytest.raises(ManifestError, match="UTF-16 encoded; save it as UTF-8"):
        loader.decode_bytes(POD_JSON.encode("utf-16"), "p.json")


# ------------------------------------------------------------------ the error type


def test_manifest_error_is_an_invalid_argument() -> None:
    err = ManifestError("bad.json", "spec.containers", "must have at least one container")
    assert isinstance(err, errors.InvalidArgument)
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.field == "spec.containers"
    assert str(err) == "bad.json: spec.containers: must have at least one container"
    located = ManifestError("p.yaml", "", "tab in indentation", line=3, column=1)
    assert str(located) == "p.yaml:3:1: tab in indentation"
    copy = pickle.loads(pickle.dumps(located))
    assert (str(copy), copy.line, copy.column) == (str(located), 3, 1)


def test_examples_load() -> None:
    assert len(manifests.load_file(EXAMPLES / "apache-pod.json")) == 1
    assert len(manifests.load_file(EXAMPLES / "apache-pod-v1.yaml")) == 1
