"""Fixtures for training tests: one torch thread, the synthetic domain's files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from uniembed.testing.domain import Domain, make_domain, write_beir_split, write_training_pairs


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """The tiny models gain nothing from threads, and on a shared 2-core machine a busy second core
    turns every small parallel op into a wait (~40x slower steps measured). Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def domain() -> Domain:
    return make_domain(topics=12, seed=0)


@pytest.fixture(scope="session")
def domain_files(domain: Domain, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Training pairs and a held-out BEIR split of the domain."""
    root = tmp_path_factory.mktemp("domain")
    return write_training_pairs(domain, root / "train.jsonl", 400), write_beir_split(
        domain, root / "eval"
    )
