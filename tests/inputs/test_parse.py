from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.helpers import pdf_bytes, png_bytes
from tests.inputs.input_samples import LocalServer
from uniembed.embedder import Embedder
from uniembed.errors import FetchError, InputTooLarge, InvalidInput
from uniembed.inputs.fetch import SafeFetcher
from uniembed.inputs.items import ImageItem, TextItem
from uniembed.inputs.limits import InputLimits
from uniembed.inputs.parse import (
    aparse_api_items,
    coerce_image_items,
    coerce_items,
    coerce_items_with_origin,
    parse_api_items,
)
from uniembed.testing.fake import FakeModel

PRIVATE_OK = InputLimits(allow_private_urls=True)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def pixel(item: object) -> tuple[int, int, int]:
    assert isinstance(item, ImageItem)
    return item.image.getpixel((0, 0))  # type: ignore[return-value]


# --------------------------------------------------------------------- library
def test_coerce_items_mixed_inputs_and_origins(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(png_bytes((5, 6, 7)))
    raw = [
        "plain text",
        Image.new("RGB", (3, 3), (1, 2, 3)),
        {"text": "dict text"},
        {"image": str(path)},
        {"pdf": pdf_bytes(["red", "green", "blue"])},
        {"image": png_bytes((9, 9, 9))},
    ]
    items, origin = coerce_items_with_origin(raw)
    assert origin == [0, 1, 2, 3, 4, 4, 4, 5]
    assert items[0] == TextItem("plain text") and items[2] == TextItem("dict text")
    assert [pixel(items[i]) for i in (1, 3, 7)] == [(1, 2, 3), (5, 6, 7), (9, 9, 9)]
    pages = items[4:7]
    assert [p.source for p in pages] == ["pdf page 1", "pdf page 2", "pdf page 3"]  # type: ignore[union-attr]
    assert [p.image.getpixel((5, 5))[0] > 200 for p in pages] == [True, False, False]  # type: ignore[union-attr]
    assert coerce_items(raw) == items


def test_coerce_items_of_pdf_path_and_base64(tmp_path: Path) -> None:
    data = pdf_bytes(["red", "blue"])
    path = tmp_path / "doc.pdf"
    path.write_bytes(data)
    items, origin = coerce_items_with_origin(
        [{"pdf": path}, {"pdf": str(path)}, {"pdf": b64(data)}]
    )
    assert origin == [0, 0, 1, 1, 2, 2]
    assert all(isinstance(item, ImageItem) for item in items)


@pytest.mark.parametrize(
    ("raw", "error", "message"),
    [
        ([42], InvalidInput, "^input 0: expected a string, a PIL image or a dict"),
        (
            ["ok", {"text": "a", "image": "b"}],
            InvalidInput,
            r"^input 1: give exactly one of .* \(found: text, image\)",
        ),
        (["ok", "ok", {}], InvalidInput, r"^input 2: give exactly one of .* \(found: none\)"),
        ([{"txt": "a"}], InvalidInput, "^input 0: unknown field.s. txt"),
        ([{"text": 5}], InvalidInput, "^input 0: 'text' must be a string, got int"),
        (["a", {"image": b"junk"}], InvalidInput, "^input 1: image: not a recognised image format"),
        ([{"pdf": b"junk"}], InvalidInput, "^input 0: pdf: not a valid PDF"),
        ([{"pdf": Image.new("RGB", (2, 2))}], InvalidInput, "^input 0: 'pdf' must be bytes"),
        (
            [{"image": "file:///etc/passwd"}],
            InvalidInput,
            "^input 0: image: URL scheme 'file' is not allowed",
        ),
        (
            [{"image": "http://169.254.169.254/x"}],
            FetchError,
            "^input 0: http://169.254.169.254/x: address",
        ),
    ],
)
def test_coerce_items_errors_name_the_input(
    raw: list[object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        coerce_items(raw)


@pytest.mark.parametrize("raw", ["text", {"text": "a"}, b"png", Image.new("RGB", (1, 1)), 5])
def test_a_lone_input_is_not_iterated(raw: object) -> None:
    for parse in (coerce_items, coerce_image_items, parse_api_items):
        with pytest.raises(InvalidInput, match="expected a list of inputs"):
            parse(raw)  # type: ignore[arg-type]


def test_coerce_items_pdf_page_limit_names_the_input() -> None:
    with pytest.raises(
        InputTooLarge, match="^input 1: pdf: the PDF has 3 pages, more than the limit of 2"
    ):
        coerce_items(["a", {"pdf": pdf_bytes(["red"] * 3)}], InputLimits(max_pdf_pages=2))


def test_coerce_items_uses_the_fetchers_limits(local_server: LocalServer) -> None:
    local_server.state.routes["/a.png"] = png_bytes((4, 4, 4))
    items = coerce_items([{"image": local_server.url("/a.png")}], fetcher=SafeFetcher(PRIVATE_OK))
    assert pixel(items[0]) == (4, 4, 4)


def test_coerce_image_items(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(png_bytes((5, 6, 7)))
    raw = [
        Image.new("L", (2, 2), 50),
        str(path),
        png_bytes((1, 1, 1)),
        "data:image/png;base64," + b64(png_bytes()),
    ]
    items = coerce_image_items(raw)
    assert [pixel(item) for item in items] == [(50, 50, 50), (5, 6, 7), (1, 1, 1), (10, 200, 30)]
    with pytest.raises(
        InvalidInput, match="^input 1: image: .* is neither an existing file nor valid base64"
    ):
        coerce_image_items([str(path), str(tmp_path / "missing.png")])


# --------------------------------------------------------------------- server
def test_parse_api_items(local_server: LocalServer) -> None:
    local_server.state.routes["/a.png"] = png_bytes((3, 3, 3))
    local_server.state.routes["/d.pdf"] = pdf_bytes(["red", "blue"])
    raw = [
        "query",
        {"text": "passage"},
        {"image": local_server.url("/a.png")},
        {"image": "data:image/png;base64," + b64(png_bytes((8, 8, 8)))},
        {"pdf": local_server.url("/d.pdf")},
        {"pdf": b64(pdf_bytes(["green"]))},
    ]
    items, origin = parse_api_items(raw, PRIVATE_OK)
    assert origin == [0, 1, 2, 3, 4, 4, 5]
    assert items[:2] == [TextItem("query"), TextItem("passage")]
    assert [pixel(items[2]), pixel(items[3])] == [(3, 3, 3), (8, 8, 8)]
    assert [item.source for item in items[4:]] == ["pdf page 1", "pdf page 2", "pdf page 1"]  # type: ignore[union-attr]


def test_api_never_reads_local_paths(tmp_path: Path) -> None:
    path = tmp_path / "secret.png"
    path.write_bytes(png_bytes())
    for kind in ("image", "pdf"):
        with pytest.raises(InvalidInput, match="^input 0: .*not valid base64"):
            parse_api_items([{kind: str(path)}])
        with pytest.raises(InvalidInput, match="^input 0: .*not valid base64"):
            asyncio.run(aparse_api_items([{kind: str(path)}]))


@pytest.mark.parametrize(
    ("raw", "error", "message"),
    [
        ([b"bytes"], InvalidInput, "^input 0: expected a string or an object"),
        ([{"image": png_bytes()}], InvalidInput, "^input 0: 'image' must be a string"),
        (["a", {"pdf": ["x"]}], InvalidInput, "^input 1: 'pdf' must be a string"),
        (
            ["a", "b", "c" * 11],
            InputTooLarge,
            "^input 2: the text has 11 characters, more than the limit of 10",
        ),
        ([{"text": "c" * 11}], InputTooLarge, "^input 0: the text has 11 characters"),
        ([{"image": "http://127.0.0.1:9/a.png"}], FetchError, "^input 0: .*loopback"),
        ([{"image": "http://[::1]/a.png"}], FetchError, "^input 0: .*loopback"),
    ],
)
def test_api_errors(raw: list[object], error: type[Exception], message: str) -> None:
    limits = InputLimits(max_text_chars=10)
    with pytest.raises(error, match=message):
        parse_api_items(raw, limits)
    with pytest.raises(error, match=message):
        asyncio.run(aparse_api_items(raw, limits))


def test_async_matches_sync(local_server: LocalServer) -> None:
    local_server.state.routes["/a.png"] = png_bytes((3, 3, 3))
    local_server.state.routes["/d.pdf"] = pdf_bytes(["red", "blue"])
    raw = [
        {"pdf": local_server.url("/d.pdf")},
        "text",
        {"image": local_server.url("/a.png")},
        {"image": b64(png_bytes((7, 7, 7)))},
    ]
    sync_items, sync_origin = parse_api_items(raw, PRIVATE_OK)
    async_items, async_origin = asyncio.run(aparse_api_items(raw, PRIVATE_OK))
    assert async_origin == sync_origin == [0, 0, 1, 2, 3]
    assert [type(i) for i in async_items] == [type(i) for i in sync_items]
    assert [pixel(i) for i in async_items if isinstance(i, ImageItem)] == [
        pixel(i) for i in sync_items if isinstance(i, ImageItem)
    ]
    assert async_items[2] == TextItem("text")


def test_async_fetches_concurrently_within_the_bound(local_server: LocalServer) -> None:
    local_server.state.routes["a"] = png_bytes()
    raw = [{"image": local_server.url("/delayed?seconds=0.2&name=a&i=" + str(i))} for i in range(6)]
    limits = InputLimits(allow_private_urls=True, max_concurrent_fetches=2)
    items, origin = asyncio.run(aparse_api_items(raw, limits))
    assert origin == list(range(6)) and len(items) == 6
    assert local_server.state.max_in_flight == 2


def test_async_fails_fast_and_cancels_pending_fetches(local_server: LocalServer) -> None:
    local_server.state.routes["a"] = png_bytes()
    raw = [
        "ok",
        {"image": local_server.url("/delayed?seconds=1.5&name=a")},  # would succeed, late
        {"image": "not base64!"},  # fails at once
    ]
    start = time.monotonic()
    with pytest.raises(InvalidInput, match="^input 2: image: not valid base64"):
        asyncio.run(aparse_api_items(raw, PRIVATE_OK))
    assert time.monotonic() - start < 1.2


def test_async_decoding_runs_off_the_event_loop(local_server: LocalServer) -> None:
    """A ticker on the loop keeps running while a PDF is rendered."""
    data = b64(pdf_bytes(["red"] * 20, size=(600, 800)))

    async def main() -> int:
        ticks = 0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0.001)

        task = asyncio.create_task(ticker())
        await aparse_api_items([{"pdf": data}], InputLimits(pdf_dpi=150))
        done.set()
        await task
        return ticks

    assert asyncio.run(main()) > 3


# --------------------------------------------------------------------- the facade
def test_embedder_encode_uses_coerce_items_defaults() -> None:
    embedder = Embedder(FakeModel())
    result = embedder.encode(
        ["text", {"pdf": pdf_bytes(["red", "blue"])}, Image.new("RGB", (4, 4))]
    )
    assert len(result.embeddings) == 4
    vectors = torch.stack(result.embeddings)
    assert torch.allclose(vectors.norm(dim=-1), torch.ones(4), atol=1e-5)
    assert not torch.allclose(vectors[1], vectors[2])  # red and blue pages differ


def test_embedder_encode_task_list_is_per_input_and_shared_by_pdf_pages() -> None:
    embedder = Embedder(FakeModel())
    pdf = {"pdf": pdf_bytes(["red", "blue"])}
    mixed = embedder.encode(["q", pdf], task=["retrieval.query", "code.passage"])
    code = embedder.encode([pdf], task="code.passage")
    assert len(mixed.embeddings) == 3
    assert torch.allclose(torch.stack(mixed.embeddings[1:]), torch.stack(code.embeddings))
    with pytest.raises(InvalidInput, match="got 3 task names for 2 inputs"):
        embedder.encode(["q", pdf], task=["retrieval.query"] * 3)


def test_embedder_encode_image_uses_coerce_image_items(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(png_bytes((200, 10, 10)))
    embedder = Embedder(FakeModel())
    from_path = embedder.encode_image(str(path))
    from_pil = embedder.encode_image(Image.new("RGB", (8, 6), (200, 10, 10)))
    assert torch.allclose(from_path, from_pil)
