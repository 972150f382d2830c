"""The index end to end on the tiny v4 checkpoint (real patch grids) and the fake model: every mode
against brute force over ``encode`` outputs, filters, PDFs, similarity maps, writes and
reopening."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import torch
from qdrant_client import QdrantClient
from typer.testing import CliRunner

from tests.helpers import png_bytes
from tests.retrieval.retrieval_samples import LOCAL_QDRANT_WARNINGS, TEXTS, color_image, page_pdf
from uniembed.cli import app as cli_app
from uniembed.core.scores import cosine, maxsim
from uniembed.embedder import Embedder
from uniembed.errors import InvalidInput
from uniembed.retrieval.filters import Match
from uniembed.retrieval.index import Hit, Index, open_index, read_settings
from uniembed.testing.fake import FakeModel

pytestmark = LOCAL_QDRANT_WARNINGS
DIMENSIONS = 32  # the Matryoshka cut of the tiny v4 (full size 64)
QUERIES = ["how do solar cells make power", "baking bread", "memory safety", "red picture"]
PDF_COLORS = [(1, 0, 0), (0, 0.6, 0), (0, 0, 1)]


def documents() -> tuple[list[str], list[object], list[dict]]:
    ids = [*TEXTS, "red", "green", "blue", "report"]
    inputs: list[object] = [
        *TEXTS.values(),
        color_image("red"),
        color_image("green", (84, 112)),
        color_image("blue", (140, 56)),
        {"pdf": page_pdf(PDF_COLORS)},
    ]
    metadata = [{"lang": "en" if i % 2 else "de", "n": i} for i in range(len(ids))]
    return ids, inputs, metadata


@pytest.fixture(scope="module")
def v4_index(tiny_v4: Embedder, tmp_path_factory: pytest.TempPathFactory) -> Index:
    index = Index.create(
        tmp_path_factory.mktemp("v4") / "index",
        tiny_v4,
        dimensions=DIMENSIONS,
        metadata_fields={"lang": "keyword"},
    )
    ids, inputs, metadata = documents()
    index.add(inputs, ids, metadata, batch_items=5)
    yield index
    index.close()


@pytest.fixture(scope="module")
def brute_force(tiny_v4: Embedder) -> dict[str, dict[tuple[str, int | None], tuple[float, float]]]:
    """query → (doc id, page) → (dense cosine, MaxSim) over encode outputs in float32."""
    ids, inputs, _ = documents()
    keys = [(i, None) for i in ids[:-1]] + [("report", page) for page in (1, 2, 3)]
    docs = tiny_v4.encode(inputs, task="retrieval.passage", output="both", dimensions=DIMENSIONS)
    table = {}
    for query in QUERIES:
        q = tiny_v4.encode([query], task="retrieval.query", output="both", dimensions=DIMENSIONS)
        dense = cosine(q.embeddings[0], torch.stack(docs.embeddings))
        late = [float(maxsim(q.multivectors[0], mv[None])[0]) for mv in docs.multivectors]
        table[query] = {key: (float(d), s) for key, d, s in zip(keys, dense, late)}
    return table


def key(hit: Hit) -> tuple[str, int | None]:
    return hit.id, hit.page


def assert_ranked_like(
    hits: list[Hit], expected: dict, column: int, k: int, tolerance: float
) -> None:
    """Hits are the top ``k`` of ``expected`` (near-ties may swap) with scores within
    ``tolerance``."""
    ranking = sorted(expected, key=lambda key_: -expected[key_][column])
    assert len(hits) == k
    for hit in hits:
        assert hit.score == pytest.approx(expected[key(hit)][column], abs=tolerance)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    kth, next_ = expected[ranking[k - 1]][column], expected[ranking[k]][column]
    if kth - next_ > 2 * tolerance:
        assert {key(h) for h in hits} == set(ranking[:k])


@pytest.mark.parametrize("query", QUERIES)
def test_dense_mode_equals_brute_force_cosine(
    v4_index: Index, brute_force: dict, query: str
) -> None:
    hits = v4_index.search(query, k=5, mode="dense")
    assert_ranked_like(hits, brute_force[query], 0, 5, tolerance=1e-5)


@pytest.mark.parametrize("query", QUERIES)
def test_exact_mode_equals_brute_force_maxsim_within_float16_rounding(
    v4_index: Index, brute_force: dict, query: str, tiny_v4: Embedder
) -> None:
    tokens = len(tiny_v4.token_strings(query, "retrieval.query"))
    hits = v4_index.search(query, k=5, mode="multivector")
    assert_ranked_like(hits, brute_force[query], 1, 5, tolerance=1e-3 * tokens)


@pytest.mark.parametrize("mode", ["two-stage", "binary"])
def test_two_stage_and_binary_with_every_candidate_equal_exact(v4_index: Index, mode: str) -> None:
    for query in QUERIES:
        exact = v4_index.search(query, k=6, mode="multivector")
        other = v4_index.search(query, k=6, mode=mode, candidates=100)
        assert [key(h) for h in other] == [key(h) for h in exact]
        # Qdrant scores with the query rounded to float16, the in-memory scan in float32
        assert [h.score for h in other] == pytest.approx([h.score for h in exact], rel=1e-4)


@pytest.mark.parametrize("mode", ["dense", "multivector", "two-stage", "binary"])
def test_filters_hold_in_every_mode(v4_index: Index, mode: str) -> None:
    for spec, check in [
        ({"metadata.lang": "en"}, lambda h: h.metadata["lang"] == "en"),
        ({"kind": "page", "page": {"gte": 2}}, lambda h: h.kind == "page" and h.page >= 2),
        ({"id": ["solar", "red"]}, lambda h: h.id in ("solar", "red")),
        ({"metadata.n": {"lt": 3}}, lambda h: h.metadata["n"] < 3),
    ]:
        hits = v4_index.search("solar power", k=20, mode=mode, filter=spec)
        assert hits and all(check(h) for h in hits)
        assert len(hits) == v4_index.count(spec)


def test_pdf_pages_are_entries_with_the_document_id_and_page_number(v4_index: Index) -> None:
    pages = v4_index.get("report")
    assert [(p.id, p.kind, p.page) for p in pages] == [("report", "page", n) for n in (1, 2, 3)]
    assert v4_index.count({"id": "report"}) == 3
    assert v4_index.count() == len(TEXTS) + 3 + 3


def test_similarity_maps_have_the_patch_grid_of_each_page(
    v4_index: Index, tiny_v4: Embedder
) -> None:
    _, inputs, _ = documents()
    grids = tiny_v4.encode(
        inputs[len(TEXTS) :], task="retrieval.passage", output="both"
    ).patch_grids
    expected = {
        ("red", None): grids[0],
        ("green", None): grids[1],
        ("blue", None): grids[2],
        **{("report", page): grids[2 + page] for page in (1, 2, 3)},
    }
    query = "red picture"
    tokens = tiny_v4.token_strings(query, "retrieval.query")
    for mode in ("dense", "multivector", "two-stage", "binary"):
        hits = v4_index.search(query, k=20, mode=mode, maps=True)
        pictures = [h for h in hits if h.kind != "text"]
        assert len(pictures) == 6 and all(h.similarity is None for h in hits if h.kind == "text")
        for hit in pictures:
            grid = expected[key(hit)]
            assert hit.similarity.scores.shape == (len(tokens), grid.height, grid.width)
            assert hit.similarity.tokens == tokens


def test_similarity_map_is_the_dot_of_each_query_token_with_each_patch(
    tiny_v4: Embedder, tmp_path: Path
) -> None:
    image = color_image("red")
    index = Index.create(tmp_path / "index", tiny_v4)
    index.add([image], ["red"])
    page = tiny_v4.encode([image], task="retrieval.passage", output="both")
    query = tiny_v4.encode(["red"], task="retrieval.query", output="both").multivectors[0]
    grid = page.patch_grids[0]
    patches = page.multivectors[0][grid.start : grid.stop].half().float()
    expected = (query @ patches.T).reshape(-1, grid.height, grid.width)
    (hit,) = index.search("red", k=1, maps=True)
    torch.testing.assert_close(hit.similarity.scores, expected, rtol=0, atol=1e-5)
    index.close()


@pytest.mark.parametrize("settings", [{"pool_factor": 2}, {"max_rows": 8}])
def test_pooled_and_capped_pages_keep_maps_on_the_full_grid(
    tiny_v4: Embedder, tmp_path: Path, settings: dict
) -> None:
    index = Index.create(tmp_path / "index", tiny_v4, **settings)
    _, inputs, _ = documents()
    index.add(inputs, [f"d{i}" for i in range(len(inputs))])
    full = tiny_v4.encode(inputs, task="retrieval.passage", output="both").multivectors
    snapshot = index.retriever.tokens.snapshot
    rows = sorted(snapshot.entries["count"][snapshot.alive].tolist())
    assert len(rows) == index.count()
    if "max_rows" in settings:
        assert max(rows) <= 8
    else:
        assert sum(rows) < 0.6 * sum(m.shape[0] for m in full)
    for hit in index.search("red picture", k=20, maps=True):
        if hit.kind != "text":
            assert hit.similarity.scores.dim() == 3 and hit.similarity.scores.shape[1] > 1
    index.close()


def test_delete_update_and_reopen(fake_embedder: Embedder, tmp_path: Path) -> None:
    index = Index.create(tmp_path / "index", fake_embedder)
    index.add(list(TEXTS.values()), list(TEXTS), [{"topic": t} for t in TEXTS])
    index.delete(["bread", "missing"])
    index.update("solar", "Wind turbines turn moving air into electricity.", {"topic": "wind"})
    before = [(h.id, h.score) for h in index.search("wind electricity", k=5, mode="multivector")]
    assert index.count() == len(TEXTS) - 1 and index.get("bread") == []
    assert index.get("solar")[0].metadata == {"topic": "wind"}
    index.close()
    reopened = Index.open(tmp_path / "index", fake_embedder)
    assert reopened.count() == len(TEXTS) - 1
    assert [
        (h.id, h.score) for h in reopened.search("wind electricity", k=5, mode="multivector")
    ] == before
    assert reopened.settings.model == "fake-model"
    reopened.close()


def test_an_item_is_parsed_once_so_a_text_that_looks_like_an_image_stays_a_text(
    fake_embedder: Embedder, tmp_path: Path
) -> None:
    """``{"text": "data:image/png;base64,…"}`` is a text: the index must embed the text, not the
    image a second parse of the bare string would find."""
    uri = "data:image/png;base64," + base64.b64encode(png_bytes(color_image("red"))).decode()
    index = Index.create(tmp_path / "index", fake_embedder)
    index.add([{"text": uri}], ["t"])
    (hit,) = index.search("a plain query", k=1, mode="dense")
    query = fake_embedder.encode(["a plain query"], task="retrieval.query").embeddings[0]
    as_text, as_image = fake_embedder.encode(
        [{"text": uri}, {"image": uri}], task="retrieval.passage"
    ).embeddings
    assert hit.kind == "text"
    assert hit.score == pytest.approx(float(cosine(query, as_text[None])[0]), abs=1e-5)
    assert abs(float(cosine(query, as_image[None])[0]) - hit.score) > 1e-3  # the test can fail
    index.close()


def test_reopening_checks_the_model_and_loads_the_recorded_one(
    tiny_v4_path: Path, tmp_path: Path
) -> None:
    index = Index.create(tmp_path / "index", tiny_v4_path, dimensions=16)
    index.add(["hello"], ["h"])
    index.close()
    with pytest.raises(InvalidInput, match="built with tiny"):
        Index.open(tmp_path / "index", Embedder(FakeModel()))
    reopened = open_index(tmp_path / "index")  # loads the model from the manifest
    assert reopened.settings.dimensions == 16 and reopened.count() == 1
    assert reopened.search("hello", k=1)[0].id == "h"
    reopened.close()


def test_an_index_created_from_a_loaded_model_reopens_without_one(
    tiny_v4: Embedder, tiny_v4_path: Path, tmp_path: Path
) -> None:
    index = Index.create(tmp_path / "index", tiny_v4, dimensions=16)  # as docs/search.md shows
    index.add(["hello", "bread"], ["h", "b"])
    index.close()
    assert read_settings(tmp_path / "index").model_source == str(tiny_v4_path.resolve())
    with Index.open(tmp_path / "index") as reopened:
        assert reopened.search("hello", k=1)[0].id == "h"
    found = CliRunner().invoke(cli_app, ["search", str(tmp_path / "index"), "hello", "--json"])
    assert found.exit_code == 0, found.output
    assert json.loads(found.stdout.splitlines()[0])["id"] == "h"


def test_without_a_recorded_source_the_error_names_the_model_options(
    fake_embedder: Embedder, tmp_path: Path
) -> None:
    Index.create(tmp_path / "index", fake_embedder).close()  # a model built by hand: no source
    with pytest.raises(InvalidInput, match="fake-model: --model on the command line, model= in"):
        Index.open(tmp_path / "index")
    failed = CliRunner().invoke(cli_app, ["search", str(tmp_path / "index"), "hello"])
    assert failed.exit_code == 1 and "--model" in failed.output


def test_folders_index_texts_images_and_pdf_pages(fake_embedder: Embedder, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "notes.md").write_text(TEXTS["tides"])
    color_image("red").save(folder / "sub" / "red.png")
    (folder / "sub" / "deck.pdf").write_bytes(page_pdf(PDF_COLORS[:2]))
    (folder / "data.bin").write_bytes(b"\x00\x01")
    index = Index.create(tmp_path / "index", fake_embedder)
    assert index.add_path(folder) == ["notes.md", "sub/deck.pdf", "sub/red.png"]
    assert [(h.kind, h.page) for h in index.get("sub/deck.pdf")] == [("page", 1), ("page", 2)]
    assert index.get("notes.md")[0].source == str(folder / "notes.md")
    assert index.count({"kind": "image"}) == 1
    index.close()


def test_bad_requests_get_clear_errors(fake_embedder: Embedder, tmp_path: Path) -> None:
    index = Index.create(tmp_path / "index", fake_embedder)
    with pytest.raises(InvalidInput, match="twice"):
        index.add(["a", "b"], ["same", "same"])
    with pytest.raises(InvalidInput, match="metadata.when is not JSON"):
        index.add(["a"], ["x"], [{"when": object()}])
    with pytest.raises(InvalidInput, match="mode must be one of"):
        index.search("a", mode="fuzzy")
    with pytest.raises(InvalidInput, match="k must be"):
        index.search("a", k=0)
    with pytest.raises(InvalidInput, match="filter field 'lang'"):
        index.search("a", filter={"lang": "en"})
    with pytest.raises(InvalidInput, match="not a PDF"):
        index.search({"pdf": b"%PDF"})
    with pytest.raises(InvalidInput, match="not an empty directory"):
        Index.create(tmp_path / "index", fake_embedder)
    index.close()
    with pytest.raises(InvalidInput, match="no index"):
        Index.open(tmp_path / "nothing", fake_embedder)


def test_the_embedded_index_is_locked_against_a_second_opener(
    fake_embedder: Embedder, tmp_path: Path
) -> None:
    index = Index.create(tmp_path / "index", fake_embedder)
    with pytest.raises(Exception, match="already open"):
        Index.open(tmp_path / "index", fake_embedder)
    index.close()


@pytest.mark.parametrize(
    ("codec", "quantization"),
    [("float16", None), ("int8", "ScalarQuantization"), ("binary", "BinaryQuantization")],
)
def test_a_server_collection_quantizes_its_multivectors_as_the_first_codec_says(
    tiny_v4: Embedder, tmp_path: Path, codec: str, quantization: str | None
) -> None:
    client = QdrantClient(path=str(tmp_path / "local"))
    index = Index.create("pages", tiny_v4, dimensions=DIMENSIONS, client=client, codecs=[codec])
    params = client.get_collection("pages").config.params.vectors["multi"]
    assert params.on_disk is True
    assert type(params.quantization_config).__name__ == (quantization or "NoneType")
    index.add(["solar panels", "bread"], ["solar", "bread"])
    assert index.search("solar panels", k=1, mode="multivector")[0].id == "solar"
    index.close()


@pytest.mark.parametrize("mode", ["dense", "multivector", "two-stage", "muvera"])
def test_qdrant_client_local_mode_gives_the_embedded_results(
    tiny_v4: Embedder, tmp_path: Path, mode: str
) -> None:
    ids, inputs, metadata = documents()
    embedded = Index.create(tmp_path / "edge", tiny_v4, dimensions=DIMENSIONS, muvera=True)
    server = Index.create(
        "pages",
        tiny_v4,
        dimensions=DIMENSIONS,
        muvera=True,
        client=QdrantClient(path=str(tmp_path / "local")),
    )
    for index in (embedded, server):
        index.add(inputs, ids, metadata)
    for query in QUERIES:
        for spec in (None, {"metadata.lang": "de"}):
            a = embedded.search(query, k=6, mode=mode, filter=spec, candidates=8)
            b = server.search(query, k=6, mode=mode, filter=spec, candidates=8)
            assert [key(h) for h in a] == [key(h) for h in b]
            # local mode keeps float32 where Qdrant stores float16
            assert [h.score for h in a] == pytest.approx(
                [h.score for h in b], abs=1e-2 if mode != "dense" else 1e-6
            )
            assert [h.metadata for h in a] == [h.metadata for h in b]
    assert server.count() == embedded.count()
    server.delete(["report"])
    assert server.count() == embedded.count() - 3
    embedded.close()
    server.close()


def test_get_by_id_reads_payload_only(v4_index: Index) -> None:
    (solar,) = v4_index.get("solar")
    assert solar.text == TEXTS["solar"] and solar.thumbnail is None and solar.metadata["n"] == 0
    assert isinstance(Match("id", "solar"), Match)


def test_indexing_runs_one_forward_row_per_entry(fake_embedder: Embedder, tmp_path: Path) -> None:
    index = Index.create(tmp_path / "index", fake_embedder)
    before = fake_embedder.engine.totals.rows
    index.add(["a text", color_image("red"), {"pdf": page_pdf(PDF_COLORS)}], ["t", "i", "p"])
    assert (
        fake_embedder.engine.totals.rows - before == index.count() == 5
    )  # single and multi from one forward
    index.close()


def test_uniembed_index_opens_or_creates(fake_embedder: Embedder, tmp_path: Path) -> None:
    import uniembed

    created = uniembed.index(tmp_path / "index", fake_embedder, pool_factor=2)
    created.add(["first"], ["a"])
    created.close()
    reopened = uniembed.index(tmp_path / "index", fake_embedder)
    assert reopened.count() == 1 and reopened.settings.pool_factor == 2
    reopened.close()
    with pytest.raises(InvalidInput, match="give a model"):
        uniembed.index(tmp_path / "other")
