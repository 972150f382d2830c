"""Nothing added to an index can break it: ids and metadata are bounded and validated before they
reach the store (real qdrant-edge, and the qdrant-client store in local mode for filters), a
refused or failed write leaves the index usable, an index that cannot be opened says why and how
to recover, filters are checked against each field's type, and bool filters match."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qdrant_client import QdrantClient

from tests.retrieval.retrieval_samples import LOCAL_QDRANT_WARNINGS
from uniembed.embedder import Embedder
from uniembed.errors import InputTooLarge, InvalidInput, UniembedError
from uniembed.retrieval.documents import (
    MAX_ID_CHARS,
    MAX_METADATA_BYTES,
    MAX_METADATA_DEPTH,
    MAX_METADATA_KEYS,
)
from uniembed.retrieval.edge_store import EdgeStore
from uniembed.retrieval.index import FORMAT, Index
from uniembed.retrieval.store import Layout, Point
from uniembed.testing.fake import FakeModel

pytestmark = LOCAL_QDRANT_WARNINGS


def nested(depth: int) -> dict[str, Any]:
    """``{"a": {"a": … {}}}``: an object ``depth`` levels deep."""
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


@pytest.fixture
def index(tmp_path: Path) -> Index:
    index = Index.create(tmp_path / "index", Embedder(FakeModel()), metadata_fields={"ok": "bool"})
    index.add(["solar panels", "bread"], ["solar", "bread"], [{"n": 1}, {"n": 2}])
    yield index
    index.close()


def assert_usable(index: Index, entries: int) -> None:
    """Searches in every mode, count, delete and add all work."""
    for mode in ("dense", "multivector", "two-stage", "binary"):
        assert len(index.search("solar", k=10, mode=mode)) == entries
    index.add(["probe"], ["probe"])
    assert index.count() == entries + 1
    index.delete(["probe"])
    assert index.count() == entries


@pytest.mark.parametrize("depth", [MAX_METADATA_DEPTH + 1, 124, 130, 5000])
def test_deeply_nested_metadata_is_refused_and_the_index_survives(
    index: Index, tmp_path: Path, depth: int
) -> None:
    with pytest.raises(
        InputTooLarge, match=f"deeper than the limit of {MAX_METADATA_DEPTH} levels"
    ):
        index.add(["deep"], ["deep"], [nested(depth)])
    with pytest.raises(InputTooLarge, match="metadata"):
        index.add(["deep"], ["deep"], [{"list": [nested(depth)]}])
    assert_usable(index, 2)
    index.close()
    with Index.open(tmp_path / "index", Embedder(FakeModel())) as reopened:
        assert_usable(reopened, 2)


def test_metadata_at_the_limits_is_stored_and_read_back(index: Index) -> None:
    keys = {f"k{i}": i for i in range(MAX_METADATA_KEYS - 1)}
    index.add(["deep", "wide"], ["deep", "wide"], [{"x": nested(MAX_METADATA_DEPTH - 1)}, keys])
    assert index.get("deep")[0].metadata == {"x": nested(MAX_METADATA_DEPTH - 1)}
    assert index.get("wide")[0].metadata == keys
    index.delete(["deep", "wide"])
    assert_usable(index, 2)


@pytest.mark.parametrize(
    ("metadata", "error", "message"),
    [
        ({f"k{i}": 0 for i in range(MAX_METADATA_KEYS + 1)}, InputTooLarge, "keys"),
        ({"a": [{"b": 1}] * (MAX_METADATA_KEYS + 1)}, InputTooLarge, "keys"),
        ({"x": "y" * MAX_METADATA_BYTES}, InputTooLarge, f"{MAX_METADATA_BYTES:,} bytes"),
        ({"x": math.nan}, InvalidInput, r"metadata\.x.*finite"),
        ({"x": [1, math.inf]}, InvalidInput, r"metadata\.x\[1\].*finite"),
        ({"x": 2**64}, InvalidInput, r"metadata\.x.*64-bit"),
        ({"x": "a\ud800"}, InvalidInput, r"metadata\.x.*surrogate"),
        ({"\udc00": 1}, InvalidInput, "surrogate"),
        ({1: "a"}, InvalidInput, "keys must be strings"),
        ({"x": {1, 2}}, InvalidInput, r"metadata\.x.*set"),
        ({"x": b"bytes"}, InvalidInput, r"metadata\.x.*bytes"),
    ],
)
def test_bad_metadata_is_refused_naming_the_field(
    index: Index, metadata: dict, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        index.add(["bread again"], ["bread"], [metadata])
    assert index.get("bread")[0].metadata == {"n": 2}  # the document it would replace is intact
    assert_usable(index, 2)


@pytest.mark.parametrize(
    ("doc_id", "error", "message"),
    [
        ("two\nlines", InvalidInput, r"control character.*position 3"),
        ("nul\x00", InvalidInput, "control character"),
        ("del\x7f", InvalidInput, "control character"),
        ("a\ud800", InvalidInput, "surrogate"),
        ("x" * (MAX_ID_CHARS + 1), InputTooLarge, f"limit is {MAX_ID_CHARS:,} characters"),
        ("", InvalidInput, "non-empty"),
    ],
)
def test_ids_that_could_not_be_deleted_are_refused(
    index: Index, doc_id: str, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        index.add(["x"], [doc_id])
    assert_usable(index, 2)


def test_every_id_that_can_be_added_can_be_deleted(index: Index) -> None:
    ids = ["a/b", "..", "%0A", "tab-less \u00e9\u4e2d", "x" * MAX_ID_CHARS, " spaced "]
    index.add(["t"] * len(ids), ids)
    for doc_id in ids:
        assert [hit.id for hit in index.get(doc_id)] == [doc_id]
    index.delete(ids)
    assert index.count() == 2


def test_looking_up_ids_no_document_can_have_is_refused(index: Index) -> None:
    for call in (lambda: index.get("a\ud800"), lambda: index.delete(["b", "a\ud800"])):
        with pytest.raises(InvalidInput, match="surrogate"):
            call()
    with pytest.raises(InvalidInput, match="strings, got int"):
        index.delete([7])
    assert_usable(index, 2)


def test_a_store_write_that_fails_leaves_the_store_usable(tmp_path: Path) -> None:
    store = EdgeStore.create(tmp_path / "store", Layout.build(4, None, {}), {})
    good = Point("00000000-0000-0000-0000-000000000001", [1.0, 0, 0, 0], None, {"id": "good"})
    store.upsert([good])
    bad = Point("00000000-0000-0000-0000-000000000002", [0, 1.0, 0, 0], None, {"x": math.nan})
    with pytest.raises(InvalidInput, match="store"):
        store.upsert([bad])
    assert store.count() == 1
    store.upsert([Point(bad.id, bad.dense, None, {"id": "second"})])
    assert store.count() == 2
    store.delete(["good"])
    assert [found.payload["id"] for found in store.scroll()] == ["second"]
    store.close()


def test_an_index_that_cannot_be_opened_says_why_and_how_to_recover(tmp_path: Path) -> None:
    path = tmp_path / "store"
    store = EdgeStore.create(path, Layout.build(4, None, {}), {})
    store.upsert([Point("00000000-0000-0000-0000-000000000001", [1.0, 0, 0, 0], None, {"n": 1})])
    # bypasses the index's validation: a record qdrant-edge writes to its log but cannot read back
    store.upsert([Point("00000000-0000-0000-0000-000000000002", [0, 1.0, 0, 0], None, nested(130))])
    store.close()
    with pytest.raises(UniembedError) as caught:
        EdgeStore.open(path)
    message = caught.value.message
    assert str(path) in message and "write-ahead log" in message
    assert str(path / "shard" / "wal") in message and "rebuild" in message
    shutil.move(path / "shard" / "wal", tmp_path / "wal.bad")  # what the message says to do
    reopened = EdgeStore.open(path)
    assert reopened.count() >= 1
    reopened.close()


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ("{not json", "manifest .*uniembed-index.json is unreadable"),
        ('{"layout": {"dense_dim": 4}}', "manifest .*uniembed-index.json is unreadable"),
        (None, "holds no readable index settings"),
    ],
)
def test_an_unreadable_manifest_says_so_and_what_to_do(
    tmp_path: Path, manifest: str | None, message: str
) -> None:
    path = tmp_path / "index"
    Index.create(path, Embedder(FakeModel())).close()
    written = json.loads((path / "uniembed-index.json").read_text())
    if manifest is None:  # the store's manifest is fine, the index settings in it are not
        written["uniembed_index"] = {"format": FORMAT, "model": "fake-model"}
        manifest = json.dumps(written)
    (path / "uniembed-index.json").write_text(manifest)
    with pytest.raises(UniembedError, match=f"{message}.*(backup|rebuild)") as caught:
        Index.open(path, Embedder(FakeModel()))
    assert str(path) in caught.value.message


@pytest.mark.parametrize("name", ["a b", "a..b", "", "x\n"])
def test_declared_metadata_fields_must_be_valid_paths(tmp_path: Path, name: str) -> None:
    with pytest.raises(InvalidInput, match="dotted names"):
        Index.create(tmp_path / "index", Embedder(FakeModel()), metadata_fields={name: "keyword"})
    assert not (tmp_path / "index").exists()


def test_invalid_field_paths_are_refused_by_the_client_store_too(tmp_path: Path) -> None:
    for index in boolean_indexes(tmp_path):
        with pytest.raises(InvalidInput, match="not a valid field path"):
            index.count({"metadata.a..b": 1})
        index.close()


def boolean_indexes(tmp_path: Path) -> list[Index]:
    embedder = Embedder(FakeModel())
    fields = {"ok": "bool"}
    edge = Index.create(tmp_path / "edge", embedder, metadata_fields=fields)
    client = QdrantClient(path=str(tmp_path / "client"))
    return [edge, Index.create("c", embedder, client=client, metadata_fields=fields)]


def test_bool_filters_match_in_count_and_every_mode_in_both_stores(tmp_path: Path) -> None:
    ids = ["yes", "no", "one", "also-yes"]
    values = [True, False, 1, True]
    for index in boolean_indexes(tmp_path):
        index.add(ids, ids, [{"ok": v, "flag": v} for v in values])
        for key in ("metadata.ok", "metadata.flag"):  # declared bool, and not declared
            for value, expected in ((True, {"yes", "also-yes"}), (False, {"no"})):
                assert index.count({key: value}) == len(expected), (index.store, key, value)
                modes = ("dense", "multivector", "two-stage", "binary")
                for mode in modes if index.store.embedded else modes[:3]:
                    hits = index.search("yes", k=10, mode=mode, filter={key: value})
                    assert {hit.id for hit in hits} == expected, (index.store, key, value, mode)
        assert index.count({"metadata.flag": 1}) == 1  # an integer matches the integer only
        index.close()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"page": "abc"}, "'page' is an integer field"),
        ({"page": True}, "'page' is an integer field"),
        ({"page": ["1", "2"]}, "'page' is an integer field"),
        ({"page": {"gte": math.nan}}, "finite"),
        ({"page": {"lte": math.inf}}, "finite"),
        ({"page": 2**64}, "64-bit"),
        ({"id": 5}, "'id' is a keyword field"),
        ({"kind": "pdf"}, "kind is one of text, image, page"),
        ({"kind": {"gte": 1}}, "'kind' is a keyword field"),
        ({"metadata.ok": "yes"}, "'metadata.ok' is a bool field"),
        ({"metadata.ok": 1}, "'metadata.ok' is a bool field"),
        ({"metadata.x": "a\ud800"}, "surrogate"),
        ({"id": ["a", "b\ud800"]}, "surrogate"),
        ({"metadata.x": 1.5}, "range"),
        ({"metadata.a..b": 1}, "'metadata.a..b' is not a valid field path"),
        ({"metadata.a[": 1}, "not a valid field path"),
        ({"metadata.a\nb": "x"}, "not a valid field path"),
    ],
)
def test_filters_are_checked_against_the_field_type(index: Index, spec: dict, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        index.count(spec)
    with pytest.raises(InvalidInput, match=message):
        index.search("solar", filter=spec)
    assert_usable(index, 2)


def same_json(found: Any, expected: Any) -> bool:
    """Equal JSON values, floats to one unit in the last place (qdrant-edge may not round-trip the
    last digit of a float)."""
    if isinstance(expected, float) and isinstance(found, float):
        return math.isclose(found, expected, rel_tol=4e-16, abs_tol=0.0) or found == expected
    if isinstance(expected, dict) and isinstance(found, dict):
        return found.keys() == expected.keys() and all(
            same_json(found[key], value) for key, value in expected.items()
        )
    if isinstance(expected, list) and isinstance(found, list):
        return len(found) == len(expected) and all(map(same_json, found, expected))
    return type(found) is type(expected) and found == expected


def test_two_thousand_hostile_adds_and_a_sigkill_leave_an_index_that_answers(
    tmp_path: Path,
) -> None:
    """A real writer process on real qdrant-edge, killed mid-add after 2,000 adds of seeded hostile
    ids and metadata (about 2 in 3 refused); ~9 s."""
    path = tmp_path / "index"
    root = Path(__file__).parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), *sys.path])}
    writer = subprocess.Popen(
        [sys.executable, "-m", "tests.retrieval.hostile_writer", str(path), "16"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=root,
    )
    stored: dict[str, Any] = {}  # id → metadata of its last acknowledged add
    refused: Counter = Counter()
    try:
        while sum(refused.values()) + len(stored) < 2_000 or len(refused) == 0:
            line = writer.stdout.readline()
            assert line, writer.stderr.read()
            report = json.loads(line)
            if "ok" in report:
                stored[report["ok"]] = report["metadata"]
            else:
                refused[report["refused"]] += 1
    finally:
        writer.send_signal(signal.SIGKILL)  # in the middle of its next add
        writer.wait()
    assert set(refused) == {"InvalidInput", "InputTooLarge"} and sum(refused.values()) > 300
    assert len(stored) > 300

    with Index.open(path, Embedder(FakeModel())) as index:
        assert index.count() >= len(stored)  # plus, perhaps, the add the kill interrupted
        for doc_id, metadata in stored.items():
            (hit,) = index.get(doc_id)
            assert same_json(hit.metadata, metadata), doc_id
        for mode in ("dense", "multivector", "two-stage", "binary"):
            assert len(index.search("text number 7", k=20, mode=mode)) == 20
        for value in (True, False):
            expected = {i for i, m in stored.items() if m.get("flag") is value}
            assert {
                hit.id
                for hit in index.search("x", k=2_000, filter={"metadata.flag": value}, mode="dense")
            } >= expected
            assert index.count({"metadata.flag": value}) >= len(expected)
        before = index.count()
        index.delete(list(stored)[:50])
        index.add(["after the storm"], ["after"])
        assert index.count() == before - 50 + 1 and index.get("after")[0].text == "after the storm"


JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=6)
)
FILTER_KEYS = st.sampled_from(["id", "kind", "page", "metadata.ok", "metadata.n"]) | st.text(
    max_size=12
).map(lambda tail: f"metadata.{tail}")
FILTER_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["gte", "gt", "lte", "lt", "x"]) | st.text(max_size=3), inner
        )
    ),
    max_leaves=6,
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(spec=st.dictionaries(FILTER_KEYS, FILTER_VALUES, max_size=3))
def test_any_filter_is_answered_or_refused_cleanly(index: Index, spec: dict) -> None:
    """Random filters on real qdrant-edge: a count or a clear refusal, never another error."""
    try:
        assert index.count(spec) in (0, 1, 2)
    except InvalidInput:
        pass


def test_jsonl_records_over_the_limits_name_their_file_and_line(tmp_path: Path) -> None:
    from uniembed.cli.index import _jsonl_documents

    records = tmp_path / "records.jsonl"
    for line, error, message in [
        (json.dumps({"text": "a", "metadata": nested(40)}), InputTooLarge, "deeper than the limit"),
        ('{"text": "a", "metadata": {"x": NaN}}', InvalidInput, "metadata.x is nan"),
        ('{"text": "a", "id": "a\\nb"}', InvalidInput, "control character"),
        ('{"metadata": ' * 100_000 + "}" * 100_000, InvalidInput, "not valid JSON"),
    ]:
        records.write_text(f'{{"text": "fine"}}\n{line}\n')
        with pytest.raises(error, match=f"{records}:2: .*{message}"):
            list(_jsonl_documents(records))
