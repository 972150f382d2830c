"""A synthetic retrieval domain with a vocabulary shift, for training tests and benchmarks.

Each topic has its own passage keywords and its own query keywords, built from disjoint halves of
the alphabet, so a query shares no token with the passages it must find: only a model that learnt
which query words go with which passage words retrieves them. Passages also carry filler words
shared by every topic. Training pairs and held-out evaluation sets are drawn from the same topics
but are different texts.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

PASSAGE_LETTERS = "abcdefghijklm"
QUERY_LETTERS = "nopqrstuvwxyz"


@dataclass(frozen=True)
class Domain:
    """Topics of keywords: ``passage_words[t]`` and ``query_words[t]`` belong together."""

    passage_words: list[list[str]]
    query_words: list[list[str]]
    filler: list[str]
    seed: int

    def query(self, topic: int, rng: random.Random) -> str:
        return " ".join(rng.sample(self.query_words[topic], 2))

    def passage(self, topic: int, rng: random.Random) -> str:
        words = rng.sample(self.passage_words[topic], 2) + rng.sample(self.filler, 3)
        rng.shuffle(words)
        return " ".join(words)


def make_domain(topics: int = 12, words_per_topic: int = 3, seed: int = 0) -> Domain:
    """A domain of ``topics`` topics (the same seed gives the same words)."""
    rng = random.Random(seed)
    used: set[str] = set()

    def word(letters: str) -> str:
        while True:
            candidate = "".join(rng.choice(letters) for _ in range(rng.randint(4, 6)))
            if candidate not in used:
                used.add(candidate)
                return candidate

    passage_words = [[word(PASSAGE_LETTERS) for _ in range(words_per_topic)] for _ in range(topics)]
    query_words = [[word(QUERY_LETTERS) for _ in range(words_per_topic)] for _ in range(topics)]
    filler = [word(PASSAGE_LETTERS) for _ in range(8)]
    return Domain(passage_words, query_words, filler, seed)


def write_training_pairs(domain: Domain, path: Path, count: int, seed: int = 1) -> Path:
    """``count`` JSONL pairs ``{"query", "positive"}``, topics in turn."""
    rng = random.Random(seed)
    topics = len(domain.query_words)
    with path.open("w", encoding="utf-8") as handle:
        for index in range(count):
            topic = index % topics
            record = {"query": domain.query(topic, rng), "positive": domain.passage(topic, rng)}
            handle.write(json.dumps(record) + "\n")
    return path


def write_beir_split(
    domain: Domain,
    folder: Path,
    queries_per_topic: int = 2,
    passages_per_topic: int = 4,
    seed: int = 2,
) -> Path:
    """A held-out BEIR folder: every passage of a topic is relevant to every query of it."""
    rng = random.Random(seed)
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    corpus, queries, qrels = [], [], ["query-id\tcorpus-id\tscore"]
    for topic in range(len(domain.query_words)):
        doc_ids = [f"t{topic}d{i}" for i in range(passages_per_topic)]
        corpus += [{"_id": d, "title": "", "text": domain.passage(topic, rng)} for d in doc_ids]
        for i in range(queries_per_topic):
            query_id = f"t{topic}q{i}"
            queries.append({"_id": query_id, "text": domain.query(topic, rng)})
            qrels += [f"{query_id}\t{d}\t1" for d in doc_ids]
    (folder / "corpus.jsonl").write_text(
        "".join(json.dumps(c) + "\n" for c in corpus), encoding="utf-8"
    )
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps(q) + "\n" for q in queries), encoding="utf-8"
    )
    (folder / "qrels" / "test.tsv").write_text("\n".join(qrels) + "\n", encoding="utf-8")
    return folder
