"""Builders for the retrieval tests: sample texts, images and PDFs (a plain module tests import)."""

from __future__ import annotations

import pytest
from PIL import Image

from uniembed.testing.pdfs import assemble_pdf

TEXTS = {
    "solar": "Solar panels turn sunlight into electricity with photovoltaic cells.",
    "bread": "Knead the dough, let it rise for an hour, then bake the bread at 220 degrees.",
    "rust": "Rust's borrow checker enforces memory safety without a garbage collector.",
    "tides": "Tides are caused by the gravitational pull of the moon and the sun.",
    "chess": "In chess, castling moves the king two squares towards a rook.",
    "coffee": "Espresso is brewed by forcing hot water through finely ground coffee.",
    "volcano": "A volcano erupts when pressure from magma forces it up through the crust.",
    "tennis": "A tennis match is won by the player who first wins the required sets.",
    "python": "Python lists are dynamic arrays that grow by over-allocating memory.",
    "whales": "Blue whales are the largest animals known to have ever lived.",
}


def page_pdf(colors: list[tuple[float, float, float]], size: tuple[int, int] = (144, 96)) -> bytes:
    """A PDF whose page i is filled with ``colors[i]`` (RGB in 0…1), built with assemble_pdf."""
    count = len(colors)
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(count))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {count} >>".encode(),
    ]
    for i, (r, g, b) in enumerate(colors):
        width, height = size
        objects.append(
            (
                f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {width} {height}] "
                f"/Contents {4 + 2 * i} 0 R >>"
            ).encode()
        )
        stream = (
            f"{r} {g} {b} rg 0 0 {width} {height} re f "
            f"0 0 0 rg 10 10 {width // 3} {height // 3} re f"
        ).encode()
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
    return assemble_pdf(objects)


def color_image(color: str, size: tuple[int, int] = (112, 84)) -> Image.Image:
    image = Image.new("RGB", size, color)
    image.paste((0, 0, 0), (0, 0, size[0] // 4, size[1] // 4))
    return image


# qdrant-client's local mode warns that payload indexes and search params do nothing there
LOCAL_QDRANT_WARNINGS = [
    pytest.mark.filterwarnings("ignore:.*local Qdrant.*"),
    pytest.mark.filterwarnings("ignore:Local mode.*"),
]
