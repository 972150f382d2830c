"""Random snapshots in the official layout by name, as ``uniembed bench --model`` takes them."""

from __future__ import annotations

from pathlib import Path

from uniembed.testing import jina_v3, jina_v4

# Mid: realistic shapes, a few minutes on a 2-core CPU. Tiny: seconds, for smoke runs. Full: the
# published shapes (v3's vocabulary stays the tiny tokenizer's).
V3_SIZES = {
    "v3-full": {"hidden_size": 1024, "num_layers": 24, "num_heads": 16, "intermediate_size": 4096},
    "v3-mid": {"hidden_size": 384, "num_layers": 6, "num_heads": 6, "intermediate_size": 1536},
    "v3-tiny": {"hidden_size": 32, "num_layers": 2, "num_heads": 4, "intermediate_size": 64},
}
V4_SIZES = {"mid": jina_v4.MID, "tiny": jina_v4.TINY, "full": jina_v4.FULL}


def write_random_snapshot(name: str, directory: Path) -> Path | None:
    """Write random snapshot ``name`` (a key of :data:`V3_SIZES` or :data:`V4_SIZES`) into
    ``directory / name`` and return its path; ``None`` for any other name."""
    if name in V3_SIZES:
        return jina_v3.write_tiny_jina_v3(directory / name, **V3_SIZES[name])
    if name in V4_SIZES:
        return jina_v4.write_tiny_jina_v4(directory / name, size=V4_SIZES[name])
    return None
