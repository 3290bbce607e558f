"""Tests for autointerp.corpus: reading corpora, cutting excerpts, fingerprints, builtins."""

from __future__ import annotations

import bz2
import importlib.util
import json
import random
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from autointerp.corpus import (
    BUILTIN_CORPORA,
    Document,
    Excerpt,
    corpus_fingerprint,
    iter_documents,
    iter_excerpts,
    resolve_corpus_paths,
)
from autointerp.corpus.builtins import _read_wiki_dump_builtin
from autointerp.corpus.wiki import strip_wiki_markup as _strip_wiki_markup
from autointerp.errors import CorpusError


def tokenize(text: str) -> list[int]:
    """Deterministic test tokenizer: every whitespace-separated word is an integer."""
    return [int(word) for word in text.split()]


def word_tokenize(text: str) -> list[int]:
    """Tokenizer for real prose: one token per word (the id only needs to be an int)."""
    return [len(word) for word in text.split()]


def numbers(start: int, count: int) -> str:
    return " ".join(str(i) for i in range(start, start + count))


def write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_parquet(path: Path, columns: dict[str, list], row_group_size: int | None = None) -> Path:
    pq.write_table(pa.table(columns), path, row_group_size=row_group_size)
    return path


def documents(paths: list[str], text_field: str = "text") -> list[Document]:
    return list(iter_documents(paths, text_field))


# --------------------------------------------------------------------------- reading files


def test_txt_file_is_one_document(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("first line\nsecond line ünïcode\n", encoding="utf-8")
    [doc] = documents([str(path)])
    assert doc == Document(doc_id=0, source=str(path), path=str(path))  # streamed, not read here
    assert "".join(doc.chunks()) == "first line\nsecond line ünïcode\n"


def test_jsonl_one_document_per_line_with_custom_field(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "a.jsonl",
        [json.dumps({"body": "alpha", "other": 1}), "", "   ", json.dumps({"body": "beta"})],
    )
    docs = documents([str(path)], text_field="body")
    assert [(d.doc_id, d.source, d.text) for d in docs] == [
        (0, f"{path}#1", "alpha"),
        (1, f"{path}#4", "beta"),
    ]


def test_parquet_one_document_per_row_across_batches(tmp_path: Path) -> None:
    # More rows than one read batch and several row groups, so batching is exercised.
    texts: list[str | None] = [f"row {i}" for i in range(2500)]
    texts[7] = None
    path = write_parquet(tmp_path / "a.parquet", {"text": texts, "n": list(range(2500))}, 700)
    docs = documents([str(path)])
    assert len(docs) == 2499
    assert [d.text for d in docs] == [t for t in texts if t is not None]
    assert docs[7].source == f"{path}#8"  # row index survives the skipped null
    assert [d.doc_id for d in docs] == list(range(2499))


def test_doc_ids_follow_reading_order_across_files(tmp_path: Path) -> None:
    txt = tmp_path / "a.txt"
    txt.write_text("txt doc", encoding="utf-8")
    jsonl = write_jsonl(tmp_path / "b.jsonl", [json.dumps({"text": t}) for t in ("j0", "j1")])
    parquet = write_parquet(tmp_path / "c.parquet", {"text": ["p0", "p1"]})
    paths = [str(jsonl), str(txt), str(parquet), str(txt)]
    docs = documents(paths)
    assert ["".join(d.chunks()) for d in docs] == ["j0", "j1", "txt doc", "p0", "p1", "txt doc"]
    assert [d.doc_id for d in docs] == list(range(6))


def test_empty_and_whitespace_documents_are_skipped(tmp_path: Path) -> None:
    blank_txt = tmp_path / "blank.txt"
    blank_txt.write_text(" \n\t\n", encoding="utf-8")
    texts = ("", "a", " \n ", "b")
    jsonl = write_jsonl(tmp_path / "a.jsonl", [json.dumps({"text": t}) for t in texts])
    parquet = write_parquet(tmp_path / "a.parquet", {"text": ["", "c", "   "]})
    docs = documents([str(blank_txt), str(jsonl), str(parquet)])
    assert [(d.doc_id, d.text) for d in docs] == [(0, "a"), (1, "b"), (2, "c")]


def test_documents_are_streamed_lazily(tmp_path: Path) -> None:
    good = write_jsonl(tmp_path / "good.jsonl", [json.dumps({"text": "fine"})])
    bad = write_jsonl(tmp_path / "bad.jsonl", ["not json"])
    docs = iter_documents([str(good), str(bad)])
    assert next(docs).text == "fine"  # the broken second file has not been touched yet
    with pytest.raises(CorpusError):
        next(docs)


# --------------------------------------------------------------------------- reading errors


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("{not json", "invalid JSON"),
        (json.dumps({"content": "x"}), "no field 'text'"),
        (json.dumps(["text"]), "no field 'text'"),
        (json.dumps({"text": 3}), "not a string"),
    ],
)
def test_bad_jsonl_line_names_file_and_line(tmp_path: Path, line: str, expected: str) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", [json.dumps({"text": "ok"}), "", line])
    with pytest.raises(CorpusError, match=expected) as info:
        documents([str(path)])
    assert f"{path} line 3" in str(info.value)


def test_missing_parquet_column_names_file_and_columns(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "a.parquet", {"body": ["x"], "id": [1]})
    with pytest.raises(CorpusError) as info:
        documents([str(path)])
    message = str(info.value)
    assert str(path) in message and "'text'" in message
    assert "body" in message and "id" in message


def test_non_string_parquet_column_is_rejected(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "a.parquet", {"text": [1, 2]})
    with pytest.raises(CorpusError, match="not a string"):
        documents([str(path)])


def test_corrupt_parquet_is_a_corpus_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"this is not parquet")
    with pytest.raises(CorpusError, match="broken.parquet"):
        documents([str(path)])


def test_undecodable_txt_is_a_corpus_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(CorpusError, match="latin1.txt"):
        documents([str(path)])


# --------------------------------------------------------------------------- resolving paths


def test_resolve_normalises_relative_paths_and_keeps_builtins(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("x", encoding="utf-8")
    absolute = write_jsonl(tmp_path / "b.jsonl", ["{}"])
    entries = ["data/a.txt", "builtin:lee_background", str(absolute)]
    resolved = resolve_corpus_paths(entries, tmp_path)
    assert resolved == [str(tmp_path / "data" / "a.txt"), "builtin:lee_background", str(absolute)]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("missing.txt", "does not exist"),
        ("notes.csv", "unsupported suffix"),
        ("folder.txt", "is a directory"),
        ("builtin:nope", "builtin:lee_background"),  # the error lists the known builtins
    ],
)
def test_resolve_rejects_bad_entries(tmp_path: Path, name: str, expected: str) -> None:
    (tmp_path / "notes.csv").write_text("a,b", encoding="utf-8")
    (tmp_path / "folder.txt").mkdir()
    with pytest.raises(CorpusError, match=expected) as info:
        resolve_corpus_paths([name], tmp_path)
    assert name in str(info.value)


def test_resolve_reports_every_bad_entry(tmp_path: Path) -> None:
    with pytest.raises(CorpusError) as info:
        resolve_corpus_paths(["a.txt", "builtin:lee_background", "b.parquet"], tmp_path)
    assert "a.txt" in str(info.value) and "b.parquet" in str(info.value)


def test_resolve_rejects_empty_list(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="no corpus paths"):
        resolve_corpus_paths([], tmp_path)


def test_builtin_without_its_package_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "gensim" else real_find_spec(name, *args),
    )
    with pytest.raises(CorpusError) as info:
        resolve_corpus_paths(["builtin:enwiki_sample"], tmp_path)
    assert (
        "builtin corpus 'enwiki_sample' needs the package gensim==4.4.0 "
        "(pip install --no-deps gensim==4.4.0)" in str(info.value)
    )


# --------------------------------------------------------------------------- excerpts


def brute_force_excerpts(texts: list[str], length: int) -> list[tuple[int, int, tuple[int, ...]]]:
    """Independent reference: every full window at offsets 0, length, 2*length, ... per document."""
    expected = []
    for doc_id, text in enumerate(texts):
        ids = tokenize(text)
        position = 0
        while position + length <= len(ids):
            expected.append((doc_id, position, tuple(ids[position : position + length])))
            position += length
    return expected


def make_documents(texts: list[str]) -> list[Document]:
    return [Document(doc_id=i, source=f"mem#{i}", text=t) for i, t in enumerate(texts)]


@pytest.mark.parametrize("length", [1, 3, 7, 16])
def test_excerpts_match_brute_force(length: int) -> None:
    rng = random.Random(length)
    # Token ids are globally unique, so an excerpt crossing a document would be visible.
    texts, start = [], 0
    for _ in range(40):
        count = rng.randrange(0, 60)
        texts.append(numbers(start, count))
        start += count
    excerpts = list(iter_excerpts(make_documents(texts), tokenize, length=length))
    got = [(e.doc_id, e.position, e.token_ids) for e in excerpts]
    assert got == brute_force_excerpts(texts, length)
    assert [e.excerpt_id for e in excerpts] == list(range(len(excerpts)))
    assert all(len(e.token_ids) == length for e in excerpts)


def test_partial_tail_is_dropped_and_documents_are_not_joined() -> None:
    docs = make_documents([numbers(0, 10), numbers(100, 2), numbers(200, 4)])
    excerpts = list(iter_excerpts(docs, tokenize, length=4))
    assert excerpts == [
        Excerpt(0, 0, 0, (0, 1, 2, 3)),
        Excerpt(1, 0, 4, (4, 5, 6, 7)),
        Excerpt(2, 2, 0, (200, 201, 202, 203)),
    ]


def test_excerpts_keep_the_document_ids_they_are_given() -> None:
    docs = [Document(doc_id=5, source="x", text=numbers(0, 4)), Document(9, "y", numbers(4, 4))]
    assert [e.doc_id for e in iter_excerpts(docs, tokenize, length=4)] == [5, 9]


@pytest.mark.parametrize(
    ("max_tokens", "expected_count"), [(4, 1), (11, 2), (12, 3), (13, 3), (1000, 5)]
)
def test_max_tokens_budget(max_tokens: int, expected_count: int) -> None:
    docs = make_documents([numbers(0, 8), numbers(8, 8), numbers(16, 5)])  # 5 excerpts in all
    excerpts = list(iter_excerpts(docs, tokenize, length=4, max_tokens=max_tokens))
    assert len(excerpts) == expected_count
    assert sum(len(e.token_ids) for e in excerpts) <= max_tokens


def guarded_documents(texts: list[str], allowed: int) -> Iterator[Document]:
    """Yields documents, but fails the test if more than `allowed` of them are requested."""
    for doc in make_documents(texts):
        if doc.doc_id >= allowed:
            raise AssertionError(f"document {doc.doc_id} was read although the budget was met")
        yield doc


@pytest.mark.parametrize(
    ("max_tokens", "docs_needed"),
    [(8, 1), (12, 2), (16, 2), (20, 3)],  # 16 ends exactly at the end of document 1
)
def test_budget_stops_reading_documents(max_tokens: int, docs_needed: int) -> None:
    texts = [numbers(8 * i, 8) for i in range(10)]  # 2 excerpts of 4 tokens per document
    docs = guarded_documents(texts, allowed=docs_needed)
    excerpts = list(iter_excerpts(docs, tokenize, length=4, max_tokens=max_tokens))
    assert len(excerpts) == max_tokens // 4


def test_tokenizer_is_not_called_beyond_the_budget() -> None:
    calls: list[str] = []

    def counting_tokenize(text: str) -> list[int]:
        calls.append(text)
        return tokenize(text)

    texts = [numbers(8 * i, 8) for i in range(5)]
    list(iter_excerpts(make_documents(texts), counting_tokenize, length=4, max_tokens=8))
    assert calls == texts[:1]


def test_empty_corpus_names_length_and_sources(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "short.jsonl", [json.dumps({"text": "1 2 3"})] * 3)
    excerpts = iter_excerpts(iter_documents([str(path)]), tokenize, length=4)
    with pytest.raises(CorpusError) as info:
        list(excerpts)
    message = str(info.value)
    assert message.startswith("corpus is empty: no document has at least 4 tokens")
    assert str(path) in message and f"{path}#" not in message  # the file, not a line in it


def test_corpus_without_documents_is_empty() -> None:
    with pytest.raises(CorpusError, match="corpus is empty: .* no non-blank document"):
        list(iter_excerpts([], tokenize, length=4))


@pytest.mark.parametrize(("length", "max_tokens"), [(0, None), (-1, None), (8, 7)])
def test_invalid_excerpt_arguments_fail_at_the_call(length: int, max_tokens: int | None) -> None:
    with pytest.raises(CorpusError):
        iter_excerpts(make_documents([numbers(0, 100)]), tokenize, length, max_tokens)


# --------------------------------------------------------------------------- fingerprint


def test_fingerprint_is_stable_and_tracks_content_and_parameters(tmp_path: Path) -> None:
    a = tmp_path / "a.txt"
    b = write_jsonl(tmp_path / "b.jsonl", [json.dumps({"text": "hello"})])
    a.write_text("one two three", encoding="utf-8")
    paths = [str(a), str(b)]
    base = corpus_fingerprint(paths, "text", 64, 1000)
    assert re.fullmatch("[0-9a-f]{16}", base), base
    assert corpus_fingerprint(paths, "text", 64, 1000) == base

    variants = {
        corpus_fingerprint(paths, "body", 64, 1000),
        corpus_fingerprint(paths, "text", 32, 1000),
        corpus_fingerprint(paths, "text", 64, 2000),
        corpus_fingerprint(paths, "text", 64, None),
        corpus_fingerprint(paths[::-1], "text", 64, 1000),
        corpus_fingerprint(paths[:1], "text", 64, 1000),
    }
    assert len(variants) == 6 and base not in variants

    a.write_text("one two four", encoding="utf-8")
    changed = corpus_fingerprint(paths, "text", 64, 1000)
    assert changed != base
    a.write_text("one two three", encoding="utf-8")
    assert corpus_fingerprint(paths, "text", 64, 1000) == base


def test_fingerprint_ignores_where_an_unchanged_file_lives(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    original = tmp_path / "a.txt"
    original.write_text("same bytes", encoding="utf-8")
    copy = tmp_path / "x" / "a.txt"
    shutil.copy(original, copy)
    assert corpus_fingerprint([str(original)], "text", 8, None) == corpus_fingerprint(
        [str(copy)], "text", 8, None
    )


def test_fingerprint_of_large_file_reads_all_chunks(tmp_path: Path) -> None:
    # Differs only in the last byte after more than two 1 MiB chunks.
    path = tmp_path / "big.txt"
    path.write_bytes(b"a" * (2 * 1024 * 1024 + 10) + b"x")
    first = corpus_fingerprint([str(path)], "text", 8, None)
    path.write_bytes(b"a" * (2 * 1024 * 1024 + 10) + b"y")
    assert corpus_fingerprint([str(path)], "text", 8, None) != first


def test_fingerprint_of_builtins() -> None:
    lee = corpus_fingerprint(["builtin:lee_background"], "text", 64, None)
    wiki = corpus_fingerprint(["builtin:enwiki_sample"], "text", 64, None)
    assert lee != wiki
    assert corpus_fingerprint(["builtin:lee_background"], "text", 64, None) == lee


# --------------------------------------------------------------------------- builtins


def test_builtin_names_and_descriptions() -> None:
    assert set(BUILTIN_CORPORA) == {"lee_background", "enwiki_sample"}
    assert all(description and "\n" not in description for description in BUILTIN_CORPORA.values())


def test_lee_background_has_300_documents() -> None:
    docs = documents(["builtin:lee_background"])
    assert len(docs) == 300
    assert docs[0].source == "builtin:lee_background#1"
    assert docs[0].text.startswith("Hundreds of people have been forced to vacate their homes")
    assert not any(d.text.endswith("\n") for d in docs)
    assert 50_000 < sum(len(d.text.split()) for d in docs) < 70_000


@pytest.fixture(scope="module")
def enwiki_docs() -> list[Document]:
    return documents(["builtin:enwiki_sample"])


def test_enwiki_sample_is_prose(enwiki_docs: list[Document]) -> None:
    # 106 main-namespace articles that are not redirects in the pinned gensim 4.4.0 file.
    assert len(enwiki_docs) == 106
    text = "\n".join(d.text for d in enwiki_docs)
    markup = ("{{", "}}", "[[", "]]", "<ref", "{|", "|}", "'''", "&nbsp;", "thumb|", "Category:")
    assert [m for m in markup if m in text] == []
    assert 400_000 < len(text.split()) < 520_000
    anarchism = enwiki_docs[0]
    assert anarchism.source.startswith("builtin:enwiki_sample#")
    assert anarchism.text.startswith(
        "Anarchism is a political philosophy that advocates self-governed societies"
    )


def test_enwiki_sample_gives_excerpts(enwiki_docs: list[Document]) -> None:
    excerpts = list(iter_excerpts(enwiki_docs, word_tokenize, length=64, max_tokens=6400))
    assert len(excerpts) == 100


def test_strip_wiki_markup_on_handwritten_sample() -> None:
    wikitext = """{{Infobox person|name={{nowrap|A {{small|B}}}}|image=x.jpg}}
'''Ada''' ({{IPA|x}}; born 1815) was a [[mathematician]] and [[Writer (occupation)|writer]].\
<ref name="a">{{cite book|title=X}}</ref> She lived in [[London]]s.<ref name="a"/>
[[File:Ada.jpg|thumb|Ada with [[Charles Babbage|Babbage]] [above] in 1840]]
<!-- hidden note -->
== Early life ==
* Born in 1815 &ndash; see [http://example.org the site] and [[:Category:People|people]].
# Second &amp; last<br/>item
{| class="wikitable"
|-
| cell {{x}} || {braces}
|}
Formula <math>x^2</math> omitted.
[[Category:Mathematicians]]
[[de:Ada Lovelace]]



End."""
    assert _strip_wiki_markup(wikitext) == (
        "Ada (born 1815) was a mathematician and writer. She lived in Londons.\n\n"
        "Early life\n"
        "Born in 1815 \u2013 see the site and people.\n"
        "Second & last item\n\n"
        "Formula omitted.\n\n"
        "End."
    )


def test_wiki_dump_keeps_only_main_namespace_articles(tmp_path: Path) -> None:
    page = "<page><title>{0}</title><ns>{1}</ns>{2}<revision><text>{3}</text></revision></page>"
    pages = [
        page.format("Article", 0, "", "'''Body''' text."),
        page.format("Old name", 0, '<redirect title="Article" />', "#REDIRECT [[Article]]"),
        page.format("Wikipedia:Policy", 4, "", "Project page."),
        page.format("Stub", 0, "", "Second [[article|one]]."),
    ]
    namespace = "http://www.mediawiki.org/xml/export-0.10/"
    xml = f'<mediawiki xmlns="{namespace}">' + "".join(pages) + "</mediawiki>"
    path = tmp_path / "dump.xml.bz2"
    path.write_bytes(bz2.compress(xml.encode()))
    assert list(_read_wiki_dump_builtin("sample", path)) == [
        ("builtin:sample#0", "Body text."),
        ("builtin:sample#3", "Second one."),
    ]
