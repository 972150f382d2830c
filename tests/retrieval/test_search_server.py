"""``uniembed serve --index``: the search routes on a real server, the search page in a real browser
(Debian's Chromium driven by Selenium), and the ``uniembed index`` / ``uniembed search``
commands."""

from __future__ import annotations

import base64
import json
import math
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis.generation.modes import GenerationMode
from typer.testing import CliRunner

from tests.fuzz import fuzz_operations
from tests.helpers import png_bytes
from tests.retrieval.retrieval_samples import TEXTS, color_image, page_pdf
from uniembed.cli import app as cli_app
from uniembed.embedder import Embedder
from uniembed.retrieval.index import Index
from uniembed.server.app import create_app
from uniembed.server.settings import ServerSettings
from uniembed.testing.fake import FakeModel
from uniembed.testing.live import LiveServer, ServeProcess


def as_json(body: Any) -> dict[str, Any]:
    """A request body as JSON that may hold NaN and infinities (as clients can send them)."""
    return {"content": json.dumps(body), "headers": {"content-type": "application/json"}}


def data_uri(data: bytes, media_type: str) -> str:
    return f"data:{media_type};base64," + base64.b64encode(data).decode()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[LiveServer, Index]]:
    embedder = Embedder(FakeModel())
    index = Index.create(tmp_path / "index", embedder, metadata_fields={"topic": "keyword"})
    index.add(list(TEXTS.values()), list(TEXTS), [{"topic": name} for name in TEXTS])
    index.add(
        [color_image("red"), color_image("blue"), {"pdf": page_pdf([(0, 1, 0), (1, 1, 0)])}],
        ["red.png", "blue.png", "deck.pdf"],
    )
    settings = ServerSettings(models=("fake-model",))
    with LiveServer(create_app(settings, {"fake-model": embedder}, index)) as live:
        yield live, index
    index.close()


def test_search_route_returns_the_library_results(served: tuple[LiveServer, Index]) -> None:
    live, index = served
    with httpx.Client(base_url=live.url, timeout=30) as http:
        for body in (
            {"query": "bread dough"},
            {"query": {"text": "moon tides"}, "k": 3, "mode": "multivector"},
            {"query": "solar", "mode": "dense", "filter": {"metadata.topic": ["solar", "rust"]}},
            {
                "query": {"image": data_uri(png_bytes(color_image("red")), "image/png")},
                "k": 2,
                "mode": "binary",
            },
        ):
            response = http.post("/v1/search", json=body)
            assert response.status_code == 200, response.text
            query = body["query"]
            if isinstance(query, dict) and "image" in query:
                query = color_image("red")
            expected = index.search(
                query, k=body.get("k", 10), mode=body.get("mode"), filter=body.get("filter")
            )
            got = response.json()["results"]
            assert [(h["id"], h["page"]) for h in got] == [(h.id, h.page) for h in expected]
            assert [h["score"] for h in got] == pytest.approx([h.score for h in expected], rel=1e-5)


def test_search_route_maps_and_thumbnails(served: tuple[LiveServer, Index]) -> None:
    live, _ = served
    body = {"query": "green page", "filter": {"kind": "page"}, "maps": True, "thumbnails": True}
    hits = httpx.post(f"{live.url}/v1/search", json=body, timeout=30).json()["results"]
    assert [(h["id"], h["kind"]) for h in hits] == [("deck.pdf", "page")] * 2
    for hit in hits:
        assert hit["thumbnail"].startswith("data:image/jpeg;base64,")
        similarity = hit["similarity"]
        assert (similarity["height"], similarity["width"]) == (4, 4)  # the fake model's patch grid
        assert (
            len(similarity["scores"]) == len(similarity["tokens"]) == len("Query: green page") + 2
        )


def test_add_delete_and_info_routes(served: tuple[LiveServer, Index]) -> None:
    live, index = served
    before = index.count()
    with httpx.Client(base_url=live.url, timeout=30) as http:
        documents = [
            {
                "id": "note",
                "text": "Wind turbines make electricity.",
                "metadata": {"topic": "wind"},
            },
            {"id": "green.png", "image": data_uri(png_bytes(color_image("green")), "image/png")},
            {"pdf": base64.b64encode(page_pdf([(0, 0, 1)] * 3)).decode()},
        ]
        added = http.post("/v1/index/documents", json={"documents": documents}).json()
        assert added["ids"][:2] == ["note", "green.png"] and added["entries"] == 5
        assert http.get("/v1/index").json()["entries"] == before + 5
        assert http.delete(f"/v1/index/documents/{added['ids'][2]}").json() == {
            "deleted": added["ids"][2]
        }
        assert index.count() == before + 2
        assert (
            http.post(
                "/v1/search", json={"query": "wind", "filter": {"metadata.topic": "wind"}}
            ).json()["results"][0]["id"]
            == "note"
        )


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"query": "a", "mode": "fuzzy"}, 422, "mode"),
        ({"query": "a", "mode": "muvera"}, 400, "keeps no MUVERA encodings"),
        ({"query": "a", "k": 0}, 422, "k"),
        ({"query": "a", "filter": {"lang": "en"}}, 400, "filter field 'lang'"),
        ({"query": "a", "k": "5"}, 422, "k"),
        ({"query": "a", "candidates": "5"}, 422, "candidates"),
        ({"query": "a", "thumbnails": 0}, 422, "thumbnails"),
        ({"query": "a", "maps": "true"}, 422, "maps"),
        ({"query": "a", "filter": {"page": "abc"}}, 400, "'page' is an integer field"),
        ({"query": "a", "filter": {"page": True}}, 400, "'page' is an integer field"),
        ({"query": "a", "filter": {"page": {"gte": math.nan}}}, 400, "finite"),
        ({"query": "a", "filter": {"metadata.topic": 3}}, 400, "'metadata.topic' is a keyword"),
        ({"query": {"pdf": "JVBERi0="}}, 400, "not a PDF"),
        ({"query": {"image": "/etc/passwd"}}, 400, "input 0"),
    ],
)
def test_search_route_errors_name_the_problem(
    served: tuple[LiveServer, Index], body: dict, status: int, message: str
) -> None:
    response = httpx.post(f"{served[0].url}/v1/search", **as_json(body), timeout=30)
    assert response.status_code == status and message in response.text


def test_add_route_refuses_documents_with_two_kinds_or_a_path(
    served: tuple[LiveServer, Index],
) -> None:
    url = f"{served[0].url}/v1/index/documents"
    response = httpx.post(url, json={"documents": [{"text": "a"}, {"text": "b", "image": "x"}]})
    assert response.status_code == 400 and "document 1: give exactly one" in response.text
    response = httpx.post(url, json={"documents": [{"pdf": "/etc/hosts"}]})
    assert response.status_code == 400 and "document 0" in response.text


def test_whole_numbers_pass_as_on_the_embeddings_route(served: tuple[LiveServer, Index]) -> None:
    response = httpx.post(f"{served[0].url}/v1/search", json={"query": "a", "k": 2.0}, timeout=30)
    assert response.status_code == 200 and len(response.json()["results"]) == 2


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    ("document", "status", "message"),
    [
        (
            {"id": "two\nlines", "text": "a"},
            400,
            "document 1: document id 'two\\nlines' holds a control",
        ),
        ({"id": "x" * 1025, "text": "a"}, 422, "id"),
        ({"text": "a", "metadata": nested(130)}, 413, "document 1: metadata nests deeper"),
        ({"text": "a", "metadata": {f"k{i}": i for i in range(1025)}}, 413, "1,024"),
        ({"text": "a", "metadata": {"x": "y" * 70_000}}, 413, "65,536 bytes"),
        ({"text": "a", "metadata": {"x": math.inf}}, 400, "metadata.x is inf"),
    ],
)
def test_add_route_checks_ids_and_metadata_before_reading_inputs(
    served: tuple[LiveServer, Index], document: dict, status: int, message: str
) -> None:
    live, index = served
    before = index.count()
    with httpx.Client(base_url=live.url, timeout=30) as http:
        # document 0 is no valid PDF: refused for document 1 means nothing was read before
        body = {"documents": [{"pdf": "/etc/hosts"}, document]}
        response = http.post("/v1/index/documents", **as_json(body))
        assert response.status_code == status, response.text
        assert message in str(response.json()["detail"])
        assert http.post("/v1/search", json={"query": "solar", "k": 50}).status_code == 200
        added = http.post("/v1/index/documents", json={"documents": [{"id": "ok", "text": "a"}]})
        assert added.status_code == 200 and index.count() == before + 1
        assert http.delete("/v1/index/documents/ok").status_code == 200
    assert index.count() == before


def test_api_keys_guard_the_routes_but_not_the_page(tmp_path: Path) -> None:
    embedder = Embedder(FakeModel())
    index = Index.create(tmp_path / "index", embedder)
    settings = ServerSettings(models=("fake-model",), api_keys=("secret",))
    with LiveServer(create_app(settings, {"fake-model": embedder}, index)) as live:
        assert httpx.post(f"{live.url}/v1/search", json={"query": "a"}).status_code == 401
        assert httpx.get(f"{live.url}/v1/index").status_code == 401
        ok = httpx.get(f"{live.url}/v1/index", headers={"authorization": "Bearer secret"})
        assert ok.status_code == 200 and ok.json()["entries"] == 0
        page = httpx.get(f"{live.url}/")
        assert page.status_code == 200 and 'id="query"' in page.text
    index.close()


# ----------------------------------------------------------------- the page in a real browser
CHROME_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip(
            "Debian's chromium and chromium-driver are not installed (scripts/setup.sh installs "
            "them)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in (
        *CHROME_FLAGS,
        f"--user-data-dir={tmp_path / 'chrome-profile'}",
        "--window-size=1280,900",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def test_the_search_page_in_chromium(
    served: tuple[LiveServer, Index], browser: Any, tmp_path: Path
) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    live, index = served
    # a wait may read an element the page has just replaced (results are re-rendered): read it again
    wait = WebDriverWait(browser, 20, ignored_exceptions=(StaleElementReferenceException,))
    browser.get(live.url + "/")
    wait.until(lambda d: d.find_element(By.ID, "count").text == f"{index.count()} entries")

    # type a query: the first hit is the library's first hit
    query = "Knead the dough and bake the bread"
    (expected,) = index.search(query, k=1)
    browser.find_element(By.ID, "query").send_keys(query + "\n")
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#results .hit"))
    first = browser.find_element(By.CSS_SELECTOR, "#results .hit")
    assert first.get_attribute("data-id") == expected.id
    assert expected.text[:20] in first.text and f"{expected.score:.4f}" in first.text

    # images only: hover a thumbnail to see its similarity map, click a token to see that token's
    Select(browser.find_element(By.ID, "kind")).select_by_value("image")
    browser.find_element(By.CSS_SELECTOR, "#search-form button").click()
    wait.until(
        lambda d: (
            d.find_element(By.CSS_SELECTOR, "#results .hit")
            .get_attribute("data-id")
            .endswith(".png")
        )
    )
    card = browser.find_element(By.CSS_SELECTOR, "#results .hit")
    canvas = card.find_element(By.CSS_SELECTOR, "canvas.map")
    ActionChains(browser).move_to_element(card.find_element(By.CSS_SELECTOR, ".frame")).perform()
    wait.until(lambda d: canvas.get_attribute("data-drawn") == "all")
    assert "show" in card.find_element(By.CSS_SELECTOR, ".frame").get_attribute("class")
    size = browser.execute_script("return [arguments[0].width, arguments[0].height]", canvas)
    assert size == [4, 4]  # the page's patch grid
    painted = browser.execute_script(
        "const d = arguments[0].getContext('2d').getImageData(0, 0, 4, 4).data;"
        "return Array.from(d).filter((v, i) => i % 4 === 3 && v > 0).length",
        canvas,
    )
    assert painted == 16
    tokens = card.find_elements(By.CSS_SELECTOR, ".tokens button")
    assert len(tokens) == 1 + len("Query: " + query) + 2
    tokens[3].click()
    wait.until(lambda d: canvas.get_attribute("data-drawn") == "2")

    # the drop zone (its file input) adds a file to the index
    note = tmp_path / "wind.txt"
    note.write_text("Wind turbines turn moving air into electricity.")
    before = index.count()
    files = browser.find_element(By.ID, "files")
    browser.execute_script("arguments[0].hidden = false", files)
    files.send_keys(str(note))
    wait.until(lambda d: "added wind.txt" in d.find_element(By.ID, "status").text)
    assert index.count() == before + 1 and index.get("wind.txt")[0].text.startswith("Wind turbines")


# ----------------------------------------------------------------- the commands
def test_index_and_search_commands(tiny_v4_path: Path, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    for name, text in list(TEXTS.items())[:4]:
        (folder / f"{name}.txt").write_text(text)
    (folder / "deck.pdf").write_bytes(page_pdf([(1, 0, 0), (0, 0, 1)]))
    records = tmp_path / "more.jsonl"
    records.write_text(
        json.dumps({"id": "wind", "text": "Wind turbines.", "metadata": {"lang": "en"}}) + "\n"
    )
    runner = CliRunner()
    location = str(tmp_path / "index")
    created = runner.invoke(
        cli_app,
        [
            "index",
            location,
            str(folder),
            "--model",
            str(tiny_v4_path),
            "--jsonl",
            str(records),
            "--dimensions",
            "32",
            "--field",
            "lang:keyword",
        ],
    )
    assert created.exit_code == 0, created.output
    info = json.loads(created.stdout.strip().splitlines()[-1])
    assert info["entries"] == 4 + 2 + 1 and info["settings"]["dimensions"] == 32
    found = runner.invoke(
        cli_app,
        [
            "search",
            location,
            "Wind turbines",
            "-k",
            "3",
            "--json",
            "--filter",
            '{"metadata.lang": "en"}',
        ],
    )
    assert found.exit_code == 0, found.output
    assert [json.loads(line)["id"] for line in found.stdout.strip().splitlines()] == ["wind"]
    listed = runner.invoke(cli_app, ["search", location, "red", "--mode", "multivector"])
    assert listed.exit_code == 0 and len(listed.stdout.strip().splitlines()) == 7
    deleted = runner.invoke(cli_app, ["index", location, "--delete", "deck.pdf"])
    assert (
        deleted.exit_code == 0
        and json.loads(deleted.stdout.strip().splitlines()[-1])["entries"] == 5
    )
    bad = runner.invoke(cli_app, ["search", location, "x", "--filter", "{nope"])
    assert bad.exit_code == 1 and "--filter is not JSON" in bad.output
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": "a", "text": "fine"}\n{"id": "b"}\n')
    failed = runner.invoke(cli_app, ["index", location, "--jsonl", str(broken)])
    assert failed.exit_code == 1 and f"{broken}:2" in failed.output


def test_uniembed_serve_index_serves_the_index_model_routes_and_page(
    tiny_v4_path: Path, tmp_path: Path
) -> None:
    """The real command: ``serve --index`` without --model loads the model recorded in the index."""
    index = Index.create(tmp_path / "index", tiny_v4_path)
    index.add(list(TEXTS.values())[:3], list(TEXTS)[:3])
    expected = [h.id for h in index.search("sunlight", k=3)]
    index.close()
    server = ServeProcess("--index", str(tmp_path / "index"), log=subprocess.PIPE)
    url = server.url
    try:
        assert httpx.get(f"{url}/v1/models").json()["data"][0]["id"].endswith(tiny_v4_path.name)
        hits = httpx.post(
            f"{url}/v1/search", json={"query": "sunlight", "k": 3}, timeout=60
        ).json()["results"]
        assert [h["id"] for h in hits] == expected
        assert "uniembed search" in httpx.get(f"{url}/ui").text
    finally:
        server.stop()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_the_search_routes_keep_their_documented_promises(
    served: tuple[LiveServer, Index], mode: GenerationMode
) -> None:
    """schemathesis, as for the embeddings API (tests/server/test_schemathesis.py): every answer
    documented and fitting its schema, never a 5xx, schema-valid requests never called malformed."""
    schema = schemathesis.openapi.from_url(f"{served[0].url}/openapi.json")
    operations = [
        result.ok()
        for result in schema.get_all_operations()
        if "/index" in result.ok().label or "/search" in result.ok().label
    ]
    assert len(operations) == 4
    fuzz_operations(operations, mode)
