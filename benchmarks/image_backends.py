"""Qwen2-VL image preprocessing: transformers' PIL backend (uniembed) against torchvision (official)

uniembed preprocesses images for jina-embeddings-v4 with ``Qwen2VLImageProcessorPil`` because
torchvision from PyPI does not import beside uniembed's torch build; the official code uses the
torchvision-backed ``Qwen2VLImageProcessor`` (``use_fast=True``). This script runs both, with the
official preprocessor settings, on real photos (the sample images bundled with scikit-image, nothing
downloaded) and on A4 document pages (a vector PDF written here and rendered with pypdfium2 at
150 dpi, as uniembed renders PDFs), at two ``max_pixels``.

Per image it prints: the patch grids and whether they are equal, the max and mean absolute
difference of ``pixel_values`` (normalised units, and the max in 8-bit levels), the share of values
that differ, the cosine similarity of the flattened ``pixel_values`` and the median time per image
of each backend. With ``--embed`` it also embeds both outputs with a tiny *random*
jina-embeddings-v4 (so those cosines are only indicative). A benchmark, not a test: nothing is
asserted. Needs torchvision, scikit-image and pypdfium2 (a separate venv, see
docs/image-preprocessing.md):

    python benchmarks/image_backends.py                          # max_pixels 602112 and 2000000
    python benchmarks/image_backends.py --embed --repeats 5
    python benchmarks/image_backends.py --max-pixels 602112 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from PIL import Image

from uniembed.testing.jina_v4 import PREPROCESSOR_CONFIG
from uniembed.testing.pdfs import assemble_pdf

DEFAULT_MAX_PIXELS = (602_112, 2_000_000)
PDF_DPI = 150.0
A4_POINTS = (595, 842)
PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "camera",
    "hubble_deep_field",
    "immunohistochemistry",
    "coins",
    "retina",
    "motorcycle_left",
    "page",
    "text",
)
PROCESSOR_KEYS = (
    "min_pixels",
    "max_pixels",
    "patch_size",
    "temporal_patch_size",
    "merge_size",
    "image_mean",
    "image_std",
    "do_resize",
    "do_rescale",
    "rescale_factor",
    "do_normalize",
    "do_convert_rgb",
    "resample",
)


# ----------------------------------------------------------------- processors
def build_processors() -> tuple[Any, Any]:
    """(PIL backend, torchvision backend), both with the official ``preprocessor_config.json``."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

    settings = {key: PREPROCESSOR_CONFIG[key] for key in PROCESSOR_KEYS}
    return Qwen2VLImageProcessorPil(**settings), Qwen2VLImageProcessor(**settings)


def preprocess(
    processor: Any, image: Image.Image, max_pixels: int
) -> tuple[np.ndarray, tuple[int, ...]]:
    """pixel_values (patches, 1176) as float32 and the (t, h, w) grid; called as uniembed does."""
    size = {"shortest_edge": PREPROCESSOR_CONFIG["min_pixels"], "longest_edge": max_pixels}
    batch = processor(images=[image], size=size, return_tensors="pt")
    grid = tuple(int(v) for v in batch["image_grid_thw"][0])
    return batch["pixel_values"].numpy().astype(np.float32), grid


# ----------------------------------------------------------------- inputs
def sample_photos(names: Sequence[str] = PHOTOS) -> dict[str, Image.Image]:
    """scikit-image's bundled sample images as RGB (``motorcycle_left``: stereo_motorcycle()[0])."""
    from skimage import data

    photos = {}
    for name in names:
        array = data.stereo_motorcycle()[0] if name == "motorcycle_left" else getattr(data, name)()
        photos[name] = Image.fromarray(np.asarray(array)).convert("RGB")
    return photos


def photo_collage(
    photos: dict[str, Image.Image], names: Sequence[str] = PHOTOS[:4], side: int = 1008
) -> Image.Image:
    """A 2x2 collage of four photos, each resized (Lanczos) to ``side`` pixels square.

    A 4-megapixel photo-like image: scikit-image bundles none bigger than 1411x1411, and camera
    photos are shrunk a lot.
    """
    collage = Image.new("RGB", (2 * side, 2 * side))
    for index, name in enumerate(names):
        collage.paste(
            photos[name].resize((side, side), Image.Resampling.LANCZOS),
            (side * (index % 2), side * (index // 2)),
        )
    return collage


def document_pages(dpi: float = PDF_DPI) -> dict[str, Image.Image]:
    """Three A4 pages of a vector PDF (prose, table, slide), rendered as uniembed renders PDFs."""
    import pypdfium2 as pdfium

    document = pdfium.PdfDocument(vector_pdf([prose_page(), table_page(), slide_page()]))
    pages = {}
    for index, name in enumerate(("pdf-prose", "pdf-table", "pdf-slide")):
        page = document[index]
        pages[name] = (
            page.render(scale=dpi / 72, fill_color=(255, 255, 255, 255)).to_pil().convert("RGB")
        )
        page.close()
    document.close()
    return pages


PROSE = (
    "the embedding model maps text and images into one vector space so that a query finds the page "
    "which answers it even when the words differ; tables, charts and scanned forms are read as "
    "pixels and every page of a report becomes one vector with matryoshka dimensions"
)
WORDS = tuple(PROSE.split())


def prose_lines(count: int, width: int, seed: int) -> list[str]:
    """``count`` deterministic lines of about ``width`` characters drawn from :data:`WORDS`.

    >>> prose_lines(1, 20, 0)
    ['the embedding model']
    """
    lines, position = [], seed
    for _ in range(count):
        line: list[str] = []
        while sum(len(w) + 1 for w in line) < width:
            line.append(WORDS[position % len(WORDS)])
            position += 1
        lines.append(" ".join(line))
    return lines


def text_ops(
    lines: Sequence[str], x: float, y: float, font: str, size: float, leading: float
) -> str:
    """PDF operators that show ``lines`` from (x, y) downwards."""
    escaped = [line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") for line in lines]
    body = " T* ".join(f"({line}) Tj" for line in escaped)
    return f"BT /{font} {size} Tf {leading} TL {x} {y} Td {body} ET\n"


def prose_page() -> str:
    title = text_ops(
        ["Quarterly report: retrieval quality of visual document embeddings"], 56, 780, "F2", 15, 18
    )
    paragraphs = "".join(
        text_ops(prose_lines(11, 95, 7 * i), 56, 740 - 150 * i, "F1", 10, 12.5) for i in range(4)
    )
    footer = text_ops(["Page 1 of 3 - internal - do not distribute"], 56, 40, "F1", 8, 10)
    return title + paragraphs + footer


def table_page() -> str:
    ops = [
        text_ops(
            ["Table 2. Results per benchmark (nDCG@5, higher is better)"], 56, 780, "F2", 13, 16
        )
    ]
    columns, rows, top, row_height = (56, 200, 290, 380, 470, 540), 30, 750, 22
    ops.append(f"0.85 0.9 1 rg 56 {top - row_height} 484 {row_height} re f 0 0 0 rg\n")
    for r in range(rows + 1):
        y = top - r * row_height
        ops.append(f"0.4 w 56 {y} m 540 {y} l S\n")
    for x in columns:
        ops.append(f"0.4 w {x} {top} m {x} {top - rows * row_height} l S\n")
    header = ("benchmark", "model A", "model B", "model C", "delta")
    ops.append(
        "".join(text_ops([h], x + 4, top - 15, "F2", 9, 11) for h, x in zip(header, columns))
    )
    for r in range(1, rows):
        values = [f"dataset-{r:02d}"] + [
            f"{(zlib.crc32(bytes([r, c])) % 9000) / 100:.2f}" for c in range(4)
        ]
        ops.append(
            "".join(
                text_ops([v], x + 4, top - r * row_height - 15, "F1", 9, 11)
                for v, x in zip(values, columns)
            )
        )
    return "".join(ops)


def slide_page() -> str:
    ops = [
        "0.12 0.2 0.45 rg 0 742 595 100 re f\n",
        "1 1 1 rg\n",
        text_ops(["Visual retrieval at scale"], 40, 785, "F2", 28, 30),
        "0 0 0 rg\n",
    ]
    bars = (
        (0.86, 0.3, 0.25),
        (0.25, 0.55, 0.85),
        (0.3, 0.7, 0.35),
        (0.95, 0.7, 0.2),
        (0.55, 0.35, 0.7),
    )
    for i, (r, g, b) in enumerate(bars):
        height = 80 + 70 * ((i * 37) % 5)
        ops.append(f"{r} {g} {b} rg {80 + 95 * i} 380 60 {height} re f 0 0 0 rg\n")
        ops.append(text_ops([f"Q{i + 1}: {height / 3.1:.1f}%"], 80 + 95 * i, 362, "F1", 10, 12))
    ops.append("1 w 60 380 m 560 380 l S 60 380 m 60 720 l S\n")
    ops.append(text_ops([f"- {line}" for line in prose_lines(8, 80, 3)], 60, 320, "F1", 13, 20))
    return "".join(ops)


def vector_pdf(contents: Sequence[str]) -> bytes:
    """A minimal PDF with one A4 page per content stream and the standard fonts Helvetica (F1) and
    Helvetica-Bold (F2), which PDFium renders with its built-in fonts."""
    n = len(contents)
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(n))
    font1, font2 = 3 + 2 * n, 4 + 2 * n
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {n} >>".encode(),
    ]
    for i, content in enumerate(contents):
        stream = content.encode("latin-1")
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {A4_POINTS[0]} {A4_POINTS[1]}] "
            f"/Resources << /Font << /F1 {font1} 0 R /F2 {font2} 0 R >> >> "
            f"/Contents {4 + 2 * i} 0 R >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold >>")
    return assemble_pdf(objects)


# ----------------------------------------------------------------- comparison
@dataclass(frozen=True)
class Comparison:
    """How the two backends' outputs for one image and one ``max_pixels`` differ."""

    name: str
    source_size: tuple[int, int]  # (width, height) before preprocessing
    grid_pil: tuple[int, ...]
    grid_tv: tuple[int, ...]
    max_abs: float  # normalised units
    mean_abs: float
    max_levels: int  # the max difference in 8-bit levels of the resized image
    differing: float  # share of values that differ
    cosine: float
    ms_pil: float
    ms_tv: float
    embedding_cosine: float | None = None


def eight_bit_levels(pixel_values: np.ndarray) -> np.ndarray:
    """Undo normalisation: the resized image's 0-255 values behind ``pixel_values``.

    ``pixel_values`` is (patches, C*T*P*P); the result is (patches, C, T*P*P).
    """
    mean = np.asarray(PREPROCESSOR_CONFIG["image_mean"], dtype=np.float64).reshape(1, 3, 1)
    std = np.asarray(PREPROCESSOR_CONFIG["image_std"], dtype=np.float64).reshape(1, 3, 1)
    channels = pixel_values.astype(np.float64).reshape(pixel_values.shape[0], 3, -1)
    return (channels * std + mean) / PREPROCESSOR_CONFIG["rescale_factor"]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two arrays, flattened.

    >>> round(cosine(np.array([1.0, 0.0]), np.array([1.0, 1.0])), 4)
    0.7071
    """
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def median_ms(call: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``call`` in milliseconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def compare(
    name: str, image: Image.Image, processors: tuple[Any, Any], max_pixels: int, repeats: int
) -> Comparison:
    pil, tv = processors
    values_pil, grid_pil = preprocess(pil, image, max_pixels)
    values_tv, grid_tv = preprocess(tv, image, max_pixels)
    ms_pil = median_ms(lambda: preprocess(pil, image, max_pixels), repeats)
    ms_tv = median_ms(lambda: preprocess(tv, image, max_pixels), repeats)
    if grid_pil != grid_tv:
        nan = float("nan")
        return Comparison(
            name, image.size, grid_pil, grid_tv, nan, nan, -1, nan, nan, ms_pil, ms_tv
        )
    difference = np.abs(values_pil.astype(np.float64) - values_tv)
    levels = np.abs(eight_bit_levels(values_pil) - eight_bit_levels(values_tv))
    return Comparison(
        name=name,
        source_size=image.size,
        grid_pil=grid_pil,
        grid_tv=grid_tv,
        max_abs=float(difference.max()),
        mean_abs=float(difference.mean()),
        max_levels=int(np.rint(levels.max())),
        differing=float((levels > 0.5).mean()),
        cosine=cosine(values_pil, values_tv),
        ms_pil=ms_pil,
        ms_tv=ms_tv,
    )


# ----------------------------------------------------------------- where big differences come from
def two_pass_pil(image: Image.Image, size: tuple[int, int], vertical_first: bool) -> np.ndarray:
    """Pillow bicubic as two single-axis resizes (each rounds and clips to 8 bits) in this order."""
    width, height = size
    middle = (image.width, height) if vertical_first else (width, image.height)
    return np.asarray(
        image.resize(middle, Image.Resampling.BICUBIC).resize(size, Image.Resampling.BICUBIC)
    )


def torchvision_resize(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """The torchvision backend's resize: uint8 CHW tensor, bicubic, antialias=True."""
    import torch
    import torchvision.transforms.v2.functional as tvf

    tensor = torch.from_numpy(np.array(image)).permute(2, 0, 1)
    resized = tvf.resize(
        tensor, [size[1], size[0]], interpolation=tvf.InterpolationMode.BICUBIC, antialias=True
    )
    return resized.permute(1, 2, 0).numpy()


def pass_order_row(name: str, image: Image.Image, grid: tuple[int, ...]) -> str:
    """Max 8-bit differences between Pillow's resize, torchvision's and two-pass Pillow."""
    size = (
        grid[2] * PREPROCESSOR_CONFIG["patch_size"],
        grid[1] * PREPROCESSOR_CONFIG["patch_size"],
    )
    pil = np.asarray(image.resize(size, Image.Resampling.BICUBIC)).astype(int)
    tv = torchvision_resize(image, size).astype(int)
    orders = {
        order: two_pass_pil(image, size, order == "V,H").astype(int) for order in ("H,V", "V,H")
    }
    cells = [
        name,
        f"{image.width}x{image.height} -> {size[0]}x{size[1]}",
        str(int(np.abs(pil - tv).max())),
    ]
    cells += [str(int(np.abs(pil - orders[o]).max())) for o in orders]
    cells += [str(int(np.abs(tv - orders[o]).max())) for o in orders]
    return "| " + " | ".join(cells) + " |"


PASS_ORDER_HEADER = (
    "| image | resize | PIL vs tv | PIL vs H,V | PIL vs V,H | tv vs H,V | tv vs V,H |\n"
    "|---|---|---|---|---|---|---|"
)


# ----------------------------------------------------------------- embeddings (tiny random model)
class TinyEmbedder:
    """The tiny random jina-embeddings-v4 of ``uniembed.testing``: pooled embeddings of features."""

    def __init__(self) -> None:
        from uniembed.engine.loop import Engine
        from uniembed.models.registry import load_model
        from uniembed.testing.jina_v4 import write_tiny_jina_v4

        self._directory = tempfile.TemporaryDirectory(prefix="tiny-v4-")
        snapshot = write_tiny_jina_v4(self._directory.name)
        model = load_model(snapshot, device="cpu", dtype="float32")
        self.model = model
        self.engine = Engine(model.forward)  # rows built by hand below, run like every other row
        self.task = self.model.resolve_task("retrieval.passage")

    def embed(self, pixel_values: np.ndarray, grid: tuple[int, ...]) -> np.ndarray:
        """The pooled (span-mean) embedding of one preprocessed image."""
        import torch

        from uniembed.models.base import ImageFeatures, Row

        template = self.model.processor.template
        count = grid[0] * grid[1] * grid[2] // self.model.processor.merge_unit
        ids = template.before_image + [template.image_token] * count + template.after_image
        span = (len(template.before_image) - 1, len(template.before_image) + count + 1)
        pixels = torch.from_numpy(pixel_values)
        features = ImageFeatures(pixel_values=pixels, grid_thw=grid)  # type: ignore[arg-type]
        row = Row(torch.tensor(ids), self.task.adapter, (span,), image=features)
        return self.engine.run([row])[0].pooled[0].numpy()

    def close(self) -> None:
        self._directory.cleanup()


def embedding_cosine(
    embedder: TinyEmbedder, image: Image.Image, processors: tuple[Any, Any], max_pixels: int
) -> float:
    vectors = [
        embedder.embed(*preprocess(processor, image, max_pixels)) for processor in processors
    ]
    return cosine(*vectors)


# ----------------------------------------------------------------- report
HEADER = (
    "| image | source WxH | grid (t,h,w) | same grid | max abs | mean abs | max levels | differing "
    "| cosine | ms PIL | ms tv |"
)


def table(rows: Sequence[Comparison]) -> str:
    """A Markdown table of the comparisons (embedding cosine as a last column when measured)."""
    with_embeddings = any(row.embedding_cosine is not None for row in rows)
    header = HEADER + (" emb. cosine |" if with_embeddings else "")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for row in rows:
        cells = [
            row.name,
            f"{row.source_size[0]}x{row.source_size[1]}",
            "x".join(map(str, row.grid_pil)),
            "yes" if row.grid_pil == row.grid_tv else f"no (tv {row.grid_tv})",
            f"{row.max_abs:.4f}",
            f"{row.mean_abs:.5f}",
            str(row.max_levels),
            f"{100 * row.differing:.2f}%",
            f"{row.cosine:.7f}",
            f"{row.ms_pil:.1f}",
            f"{row.ms_tv:.1f}",
        ]
        if with_embeddings:
            cells.append("-" if row.embedding_cosine is None else f"{row.embedding_cosine:.8f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-pixels", type=int, nargs="+", default=list(DEFAULT_MAX_PIXELS))
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed runs per image and backend (median)"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (PIL is single-threaded)"
    )
    parser.add_argument(
        "--embed", action="store_true", help="also compare tiny random v4 embeddings"
    )
    return parser.parse_args(argv)


def measure(
    images: dict[str, Image.Image],
    processors: tuple[Any, Any],
    max_pixels: int,
    repeats: int,
    embedder: TinyEmbedder | None,
) -> list[Comparison]:
    """One :class:`Comparison` per image, with the embedding cosine when ``embedder`` is given."""
    rows = []
    for name, image in images.items():
        row = compare(name, image, processors, max_pixels, repeats)
        if embedder is not None:
            similarity = embedding_cosine(embedder, image, processors, max_pixels)
            row = replace(row, embedding_cosine=similarity)
        rows.append(row)
    return rows


def pass_order_table(rows: Sequence[Comparison], images: dict[str, Image.Image]) -> str:
    """The resize-only diagnosis for every image whose outputs differ by more than 2 levels."""
    outliers = [row for row in rows if row.max_levels > 2]
    if not outliers:
        return ""
    lines = [pass_order_row(row.name, images[row.name], row.grid_pil) for row in outliers]
    return (
        "\nResize alone, max difference in 8-bit levels (H,V / V,H: two single-axis Pillow "
        "resizes, horizontal or vertical first), images over 2 levels:\n\n"
        + PASS_ORDER_HEADER
        + "\n"
        + "\n".join(lines)
    )


def versions(threads: int, repeats: int) -> str:
    import torch
    import torchvision
    import transformers

    return (
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"transformers {transformers.__version__}, Pillow {Image.__version__}; "
        f"torch threads {threads}; median of {repeats} runs"
    )


def main(argv: Sequence[str] | None = None) -> None:
    import torch

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    processors = build_processors()
    photos = sample_photos()
    images = {**photos, "collage-2x2": photo_collage(photos), **document_pages()}
    embedder = TinyEmbedder() if args.embed else None
    print(versions(args.threads, args.repeats))
    try:
        for max_pixels in args.max_pixels:
            rows = measure(images, processors, max_pixels, args.repeats, embedder)
            print(f"\nmax_pixels = {max_pixels}\n\n{table(rows)}")
            print(pass_order_table(rows, images))
    finally:
        if embedder is not None:
            embedder.close()


if __name__ == "__main__":
    main()
