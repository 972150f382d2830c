from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from uniembed.chunking import (
    DEFAULT_OVERLAP,
    DocumentPlan,
    Window,
    char_spans_to_token_spans,
    check_char_spans,
    fixed_token_chunker,
    join_chunks,
    plan_document,
    plan_windows,
    resolve_overlap,
    sentence_chunker,
    sentence_spans,
)
from uniembed.core.vectors import Span, normalize
from uniembed.embedder import Embedder, EncodeOptions
from uniembed.errors import InvalidInput
from uniembed.inputs.items import TextItem
from uniembed.models.base import TaskSpec, TokenizedText
from uniembed.testing.fake import VOCAB, FakeModel

MULTILINGUAL = "Café naïve façade. 東京は大きい。日本語です！ Emoji 😀🎉 here? Ünïcödé ends."
TRAINING = [
    MULTILINGUAL,
    "Hello world. Late chunking keeps context! Berlin is a city.",
    "ça va? 你好，世界。",
] * 8


# ----------------------------------------------------------------- helpers
class TokenizerModel(FakeModel):
    """The fake model's forward behind a real ``tokenizers`` tokenizer (tokens span several
    chars)."""

    def __init__(self, tokenizer: Tokenizer, bos_eos: bool) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.bos_eos = bos_eos

    def tokenize(self, text: str) -> TokenizedText:
        encoding = self.tokenizer.encode(text, add_special_tokens=False)
        ids = [4 + i % (VOCAB - 4) for i in encoding.ids]
        offsets = list(encoding.offsets)
        special = [False] * len(ids)
        if self.bos_eos:
            ids, offsets, special = [1, *ids, 2], [(0, 0), *offsets, (0, 0)], [True, *special, True]
        return TokenizedText(ids, offsets, special)


def byte_level_bpe() -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tokenizer.train_from_iterator(TRAINING, trainer)
    return tokenizer


def metaspace_unigram() -> Tokenizer:
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=120, unk_token="<unk>", special_tokens=["<unk>"], show_progress=False
    )
    tokenizer.train_from_iterator(TRAINING, trainer)
    return tokenizer


@pytest.fixture(scope="module")
def bpe_model() -> TokenizerModel:
    return TokenizerModel(byte_level_bpe(), bos_eos=False)  # like v4: no special tokens


@pytest.fixture(scope="module")
def unigram_model() -> TokenizerModel:
    return TokenizerModel(metaspace_unigram(), bos_eos=True)  # like v3: <s> … </s>


@pytest.fixture(scope="module")
def fake() -> FakeModel:
    return FakeModel()


def token_states(model: FakeModel, ids: list[int], task: TaskSpec) -> torch.Tensor:
    """Last hidden states of one direct forward of ``ids`` → (tokens, dim) (one span per token)."""
    row = model.text_sequence(ids, task, [(i, i + 1) for i in range(len(ids))])
    return model.forward([row])[0].pooled


def span_means(states: torch.Tensor, spans: list[Span]) -> torch.Tensor:
    return torch.stack([states[start:end].mean(0) for start, end in spans])


def run_plan(model: FakeModel, plan: DocumentPlan) -> torch.Tensor:
    return plan.pooling.pool(model.forward(plan.rows))


# ----------------------------------------------------------------- join_chunks
def test_join_inserts_one_space_only_where_needed() -> None:
    text, spans = join_chunks(["Berlin is a city.", "It is big. ", "Very.", "\nEnd"])
    assert text == "Berlin is a city. It is big. Very.\nEnd"
    assert spans == [(0, 17), (18, 29), (29, 34), (34, 38)]


def test_join_keeps_multibyte_characters_as_python_characters() -> None:
    text, spans = join_chunks(["東京。", "😀🎉", "café"])
    assert text == "東京。 😀🎉 café"
    assert spans == [(0, 3), (4, 6), (7, 11)]


@settings(max_examples=80, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=6))
def test_join_spans_slice_back_to_each_chunk(chunks: list[str]) -> None:
    text, spans = join_chunks(chunks)
    assert [text[start:end] for start, end in spans] == chunks
    assert all(spans[i][1] <= spans[i + 1][0] <= spans[i][1] + 1 for i in range(len(spans) - 1))
    assert spans[-1][1] == len(text)


def test_join_rejects_empty_chunks_and_no_chunks() -> None:
    with pytest.raises(InvalidInput, match="input 2 is an empty string"):
        join_chunks(["a", "b", "", "c"])
    with pytest.raises(InvalidInput, match="at least one chunk"):
        join_chunks([])


# ----------------------------------------------------------------- chunkers
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hi there. How are you?  Fine.", ["Hi there.", " How are you?", "  Fine."]),
        ("Pi is 3.14 roughly. Yes!", ["Pi is 3.14 roughly.", " Yes!"]),
        ('He said "stop." Then left.', ['He said "stop."', " Then left."]),
        ("Wait... what?! Ok", ["Wait...", " what?!", " Ok"]),
        ("你好。世界！再见", ["你好。", "世界！", "再见"]),
        ("  Lead. Trail.   ", ["  Lead.", " Trail.   "]),
        ("no punctuation", ["no punctuation"]),
        ("", []),
    ],
)
def test_sentence_spans(text: str, expected: list[str]) -> None:
    assert [text[start:end] for start, end in sentence_spans(text)] == expected


@settings(max_examples=80, deadline=None)
@given(st.text(alphabet="ab .!?。\n😀é", max_size=30))
def test_sentence_spans_cover_the_text_contiguously(text: str) -> None:
    spans = sentence_spans(text)
    if text:
        assert spans[0][0] == 0 and spans[-1][1] == len(text)
        assert all(spans[i][1] == spans[i + 1][0] for i in range(len(spans) - 1))
        assert all(start < end for start, end in spans)
    else:
        assert spans == []


def test_sentence_chunker_ignores_the_model(fake: FakeModel) -> None:
    assert sentence_chunker()("A. B.", fake) == [(0, 2), (2, 5)]


def test_fixed_token_chunker_with_one_char_tokens(fake: FakeModel) -> None:
    assert fixed_token_chunker(3)("abcdefg", fake) == [(0, 3), (3, 6), (6, 7)]
    assert fixed_token_chunker(3)("", fake) == []


def test_fixed_token_chunker_with_bpe_tokens(bpe_model: TokenizerModel) -> None:
    text = MULTILINGUAL
    spans = fixed_token_chunker(4)(text, bpe_model)
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    assert all(spans[i][1] == spans[i + 1][0] for i in range(len(spans) - 1))
    offsets = bpe_model.tokenize(text).offsets
    token_spans = char_spans_to_token_spans(offsets, [False] * len(offsets), spans, len(offsets))
    counts = [end - start for start, end in token_spans]
    # byte-level pieces of one character share a start and are never split, so a chunk may get more
    assert sum(counts) == len(offsets) and all(c >= 4 for c in counts[:-1]) and len(spans) > 3


def test_fixed_token_chunker_rejects_non_positive_sizes() -> None:
    with pytest.raises(InvalidInput, match="tokens_per_chunk must be at least 1, got 0"):
        fixed_token_chunker(0)


# ----------------------------------------------------------------- characters → tokens
def test_first_chunk_absorbs_special_tokens_and_prefix_last_absorbs_trailing() -> None:
    # <s> "Query: " "Hello" " " "World" </s>; the document starts at character 7
    offsets = [(0, 0), (0, 7), (7, 12), (12, 13), (13, 18), (0, 0)]
    special = [True, False, False, False, False, True]
    spans = char_spans_to_token_spans(offsets, special, [(0, 5), (6, 11)], 6, text_start=7)
    assert spans == [(0, 3), (3, 6)]  # the separator space goes to the chunk after it


def test_token_whose_first_char_is_in_a_gap_goes_to_the_next_chunk() -> None:
    offsets = [(0, 3), (3, 7), (7, 9)]  # "abc" " def" "gh" with chunks "abc" and "def" (gap at 3)
    assert char_spans_to_token_spans(offsets, [False] * 3, [(0, 3), (4, 7)], 3) == [(0, 1), (1, 3)]


def test_tokens_without_characters_go_with_the_next_token() -> None:
    # Metaspace "▁" tokens with empty offsets before "中", then a trailing special token
    offsets = [(0, 2), (2, 2), (3, 4), (0, 0)]
    assert char_spans_to_token_spans(offsets, [False, False, False, True], [(0, 2), (2, 4)], 4) == [
        (0, 1),
        (1, 4),
    ]


def test_one_char_tokens_with_cjk_emoji_and_accents(fake: FakeModel) -> None:
    text = "Café. 東京。😀🎉!"
    tokens = fake.tokenize(text)
    spans = sentence_spans(text)  # "Café." " 東京。" "😀🎉!"
    assert [text[s:e] for s, e in spans] == ["Café.", " 東京。", "😀🎉!"]
    token_spans = char_spans_to_token_spans(tokens.offsets, tokens.special, spans, len(tokens.ids))
    assert token_spans == [(0, 6), (6, 10), (10, 14)]  # <s> + 5 chars | 4 chars | 3 chars + </s>


@pytest.mark.parametrize("tokenizer_fixture", ["bpe_model", "unigram_model"])
def test_real_tokenizers_map_each_token_to_the_chunk_of_its_text(
    tokenizer_fixture: str, request: pytest.FixtureRequest
) -> None:
    model: TokenizerModel = request.getfixturevalue(tokenizer_fixture)
    prefix = "Passage: "
    text = MULTILINGUAL
    spans = sentence_spans(text)
    tokens = model.tokenize(prefix + text)
    token_spans = char_spans_to_token_spans(
        tokens.offsets, tokens.special, spans, len(tokens.ids), text_start=len(prefix)
    )
    assert token_spans[0][0] == 0 and token_spans[-1][1] == len(tokens.ids)
    assert all(token_spans[i][1] == token_spans[i + 1][0] for i in range(len(spans) - 1))
    for chunk, ((char_start, char_end), (tok_start, tok_end)) in enumerate(zip(spans, token_spans)):
        for token in range(tok_start, tok_end):
            start, end = tokens.offsets[token]
            if tokens.special[token] or start == end:
                continue
            document_start = start - len(prefix)
            if chunk == 0:
                assert document_start < char_end
            else:
                assert char_start <= document_start < char_end


def test_chunk_inside_a_token_is_an_error_naming_it() -> None:
    offsets = [(0, 2), (2, 4), (4, 5)]  # "He" "ll" "o"
    with pytest.raises(InvalidInput, match=r"chunk 1 span \(1, 2\) has no tokens of its own"):
        char_spans_to_token_spans(offsets, [False] * 3, [(0, 1), (1, 2), (2, 5)], 3)


@pytest.mark.parametrize(
    ("spans", "message"),
    [
        ([], "no chunks given"),
        ([(0, 2), (2, 2)], r"chunk 1 span \(2, 2\) is empty"),
        ([(3, 1)], r"chunk 0 span \(3, 1\) is empty"),
        ([(-1, 2)], r"chunk 0 span \(-1, 2\) is outside the text"),
        ([(0, 3), (2, 4)], r"chunk 1 span \(2, 4\) overlaps or comes before chunk 0 span \(0, 3\)"),
        ([(2, 4), (0, 1)], "must be sorted and must not overlap"),
    ],
)
def test_invalid_char_spans(spans: list[Span], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        char_spans_to_token_spans([(0, 1)] * 4, [False] * 4, spans, 4)


def test_spans_past_the_text_are_out_of_range() -> None:
    with pytest.raises(
        InvalidInput, match=r"chunk 1 span \(3, 9\) is outside the text of 5 characters"
    ):
        check_char_spans([(0, 3), (3, 9)], 5)


def test_mismatched_offsets_are_a_programming_error() -> None:
    with pytest.raises(ValueError, match="2 offsets and 1 special flags for 2 tokens"):
        char_spans_to_token_spans([(0, 1), (1, 2)], [False], [(0, 2)], 2)


# ----------------------------------------------------------------- windows
@settings(max_examples=100, deadline=None)
@given(st.integers(1, 200), st.integers(1, 40), st.data())
def test_kept_parts_of_windows_tile_the_document(
    num_tokens: int, window: int, data: st.DataObject
) -> None:
    overlap = data.draw(st.integers(0, window - 1))
    windows = plan_windows(num_tokens, window, overlap)
    kept = [i for w in windows for i in range(w.keep_from, w.end)]
    assert kept == list(range(num_tokens))
    assert all(w.end - w.start <= window for w in windows)
    assert all(w.keep_from - w.start == (overlap if i else 0) for i, w in enumerate(windows))
    assert all(b.start - a.start == window - overlap for a, b in itertools.pairwise(windows))


def test_short_document_is_one_window() -> None:
    assert plan_windows(5, 8, 4) == [Window(0, 5, 0)]


def test_overlap_defaults_and_validation() -> None:
    assert resolve_overlap(None, 8192) == DEFAULT_OVERLAP
    assert resolve_overlap(None, 100) == 50
    assert resolve_overlap(0, 1) == 0
    with pytest.raises(InvalidInput, match="smaller than the window \\(10\\), got 10"):
        resolve_overlap(10, 10)
    with pytest.raises(InvalidInput, match="overlap must be at least 0"):
        resolve_overlap(-1, 10)
    with pytest.raises(InvalidInput, match="window must be at least 1 token, got 0"):
        resolve_overlap(None, 0)


# ----------------------------------------------------------------- plan_document
TEXT = "Berlin is the capital of Germany. Its population is large. The city is also a state."


def test_single_pass_chunk_vectors_are_span_means_of_the_full_document(fake: FakeModel) -> None:
    task = fake.resolve_task("retrieval.passage")
    spans = sentence_spans(TEXT)
    plan = plan_document(fake, TEXT, spans, task, window=512, overlap=None, truncate=False)
    assert len(plan.rows) == 1
    ids = fake.tokenize(task.prefix + TEXT).ids
    assert plan.rows[0].input_ids.tolist() == ids
    # computed independently: 1 BOS + prefix to chunk 0, the EOS to the last chunk
    prefix = len(task.prefix)
    expected_spans = [(1 + prefix + s, 1 + prefix + e) for s, e in spans]
    expected_spans[0] = (0, expected_spans[0][1])
    expected_spans[-1] = (expected_spans[-1][0], len(ids))
    assert list(plan.token_spans) == expected_spans
    assert list(plan.tokens_per_chunk) == [e - s for s, e in expected_spans]
    assert sum(plan.tokens_per_chunk) == len(ids)
    expected = span_means(token_states(fake, ids, task), expected_spans)
    assert torch.allclose(run_plan(fake, plan), expected, atol=1e-6)


def test_window_at_least_the_document_equals_the_single_pass_exactly(fake: FakeModel) -> None:
    task = fake.resolve_task("retrieval.passage")
    spans = sentence_spans(TEXT)
    num_tokens = len(fake.tokenize(task.prefix + TEXT).ids)
    reference = run_plan(
        fake, plan_document(fake, TEXT, spans, task, window=512, overlap=None, truncate=False)
    )
    for window in (num_tokens, num_tokens + 1):
        plan = plan_document(fake, TEXT, spans, task, window=window, overlap=0, truncate=False)
        assert len(plan.rows) == 1
        assert torch.equal(run_plan(fake, plan), reference)


def test_small_windows_cover_exactly_the_document_tokens(fake: FakeModel) -> None:
    task = fake.resolve_task("retrieval.passage")
    spans = sentence_spans(TEXT)
    ids = fake.tokenize(task.prefix + TEXT).ids
    window, overlap = 20, 6
    plan = plan_document(fake, TEXT, spans, task, window=window, overlap=overlap, truncate=False)
    assert len(plan.rows) == len(plan.windows) > 3
    kept_states = []
    for win, sequence in zip(plan.windows, plan.rows):
        assert sequence.input_ids.tolist() == ids[win.start : win.end]
        assert len(sequence.spans) < sequence.num_tokens  # only chunk span means come back
        states = token_states(fake, ids[win.start : win.end], task)  # a direct forward of the slice
        kept_states.append(states[win.keep_from - win.start :])
    document_states = torch.cat(kept_states)  # (tokens, dim)
    assert document_states.shape[0] == len(ids)
    expected = span_means(document_states, plan.token_spans)
    assert torch.allclose(run_plan(fake, plan), expected, atol=1e-5)
    assert sum(plan.tokens_per_chunk) == len(ids)


def test_windowed_vectors_differ_from_the_single_pass(fake: FakeModel) -> None:
    task = fake.resolve_task("retrieval.passage")
    spans = sentence_spans(TEXT)
    single = run_plan(
        fake, plan_document(fake, TEXT, spans, task, window=512, overlap=None, truncate=False)
    )
    windowed = run_plan(
        fake, plan_document(fake, TEXT, spans, task, window=50, overlap=10, truncate=False)
    )
    assert torch.allclose(
        windowed[0], single[0], atol=1e-6
    )  # chunk 0 (43 tokens) lies in the first window
    assert not torch.allclose(windowed[-1], single[-1], atol=1e-3)  # later chunks lost left context


def test_late_chunks_differ_from_independently_encoded_chunks(fake: FakeModel) -> None:
    task = fake.resolve_task("retrieval.passage")
    spans = sentence_spans(TEXT)
    late = run_plan(
        fake, plan_document(fake, TEXT, spans, task, window=512, overlap=None, truncate=False)
    )
    for index, (start, end) in enumerate(spans):
        alone = token_states(fake, fake.tokenize(task.prefix + TEXT[start:end]).ids, task).mean(0)
        if index == 0:
            continue  # chunk 0 has only its own left context either way (causal model)
        assert not torch.allclose(late[index], alone, atol=1e-3)


def test_truncate_has_no_effect(fake: FakeModel) -> None:
    task = fake.resolve_task("retrieval.passage")
    spans = sentence_spans(TEXT)
    plans = [
        plan_document(fake, TEXT, spans, task, window=20, overlap=6, truncate=t)
        for t in (False, True)
    ]
    assert plans[0].windows == plans[1].windows and plans[0].token_spans == plans[1].token_spans


@pytest.mark.parametrize("tokenizer_fixture", ["bpe_model", "unigram_model"])
def test_real_tokenizer_documents_pool_their_token_states(
    tokenizer_fixture: str, request: pytest.FixtureRequest
) -> None:
    model: TokenizerModel = request.getfixturevalue(tokenizer_fixture)
    task = model.resolve_task("retrieval.query")
    text, spans = join_chunks(
        ["Café naïve façade.", "東京は大きい。", "Emoji 😀🎉 here?", "Ünïcödé ends."]
    )
    plan = plan_document(model, text, spans, task, window=512, overlap=None, truncate=False)
    ids = model.tokenize(task.prefix + text).ids
    expected = span_means(token_states(model, ids, task), plan.token_spans)
    assert torch.allclose(run_plan(model, plan), expected, atol=1e-6)
    assert sum(plan.tokens_per_chunk) == len(ids)
    windowed = plan_document(model, text, spans, task, window=7, overlap=3, truncate=False)
    assert windowed.token_spans == plan.token_spans
    assert len(windowed.windows) > 1
    assert sum(w.end - w.keep_from for w in windowed.windows) == len(ids)


def test_plan_document_errors(fake: FakeModel) -> None:
    task = fake.resolve_task(None)
    with pytest.raises(InvalidInput, match="outside the text of 5 characters"):
        plan_document(fake, "hello", [(0, 6)], task, window=10, overlap=None, truncate=False)
    with pytest.raises(InvalidInput, match="no chunks given"):
        plan_document(fake, "hello", [], task, window=10, overlap=None, truncate=False)
    with pytest.raises(InvalidInput, match="smaller than the window"):
        plan_document(fake, "hello", [(0, 5)], task, window=4, overlap=4, truncate=False)
    plan = plan_document(fake, "hello", [(0, 5)], task, window=10, overlap=None, truncate=False)
    with pytest.raises(ValueError, match="got 0 outputs for 2 rows"):
        plan.pooling.pool([])


# ----------------------------------------------------------------- through the Embedder
def expected_late_vectors(
    model: FakeModel, chunks: list[str], task_name: str | None = None
) -> torch.Tensor:
    task = model.resolve_task(task_name)
    text, spans = join_chunks(chunks)
    ids = model.tokenize(task.prefix + text).ids
    first_token = 1 + len(task.prefix)  # <s> and the prefix come before the text's one-char tokens
    # the separating spaces start no chunk, so each goes to the chunk after it
    bounds = [0] + [first_token + end for _, end in spans[:-1]] + [len(ids)]
    token_spans = list(itertools.pairwise(bounds))
    return normalize(span_means(token_states(model, ids, task), token_spans))


def test_embedder_plan_and_run_late_chunking(fake: FakeModel) -> None:
    embedder = Embedder(fake)
    plan = embedder.plan(
        [TextItem("a"), TextItem("b"), TextItem("c")], None, EncodeOptions(late_chunking=True)
    )
    result = embedder.run(plan)
    assert torch.allclose(
        torch.stack(result.embeddings), expected_late_vectors(fake, ["a", "b", "c"]), atol=1e-6
    )
    # "Query: a b c" + <s></s>: <s> "Query: " "a" | " b" | " c" </s>
    assert result.token_counts == [1 + 7 + 1, 2, 3]


def test_embedder_encode_late_chunking(fake: FakeModel) -> None:
    result = Embedder(fake).encode(["a", "b", "c"], late_chunking=True)
    assert len(result.embeddings) == 3
    assert torch.allclose(
        torch.stack(result.embeddings), expected_late_vectors(fake, ["a", "b", "c"]), atol=1e-6
    )
    assert result.total_tokens == len(fake.tokenize("Query: a b c").ids)


def test_embed_document_with_sentence_chunker(fake: FakeModel) -> None:
    embedder = Embedder(fake)
    vectors = embedder.embed_document(TEXT, chunker=sentence_chunker(), task="retrieval.passage")
    task = fake.resolve_task("retrieval.passage")
    plan = plan_document(
        fake, TEXT, sentence_spans(TEXT), task, window=512, overlap=None, truncate=False
    )
    ids = fake.tokenize(task.prefix + TEXT).ids
    expected = normalize(span_means(token_states(fake, ids, task), plan.token_spans))
    assert vectors.shape == (3, fake.info.dim)
    assert torch.allclose(vectors, expected, atol=1e-6)
    windowed = embedder.embed_document(
        TEXT, chunker=sentence_chunker(), task="retrieval.passage", window=50
    )
    assert torch.allclose(windowed[0], expected[0], atol=1e-6)
    assert torch.allclose(windowed.norm(dim=-1), torch.ones(3))
