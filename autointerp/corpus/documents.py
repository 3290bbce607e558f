"""Documents of a corpus: files (`.txt` = one document, `.jsonl` / `.parquet` = one per row) and builtins,
streamed lazily so that a token budget stops reading as soon as it is met."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from autointerp.corpus.builtins import builtin_file, builtin_spec, is_builtin
from autointerp.errors import CorpusError

SUPPORTED_SUFFIXES = (".txt", ".jsonl", ".parquet")
_PARQUET_BATCH_ROWS = 1024


READ_CHARS = 1 << 20  # a .txt document is read this much at a time


@dataclass(frozen=True)
class Document:
    doc_id: int  # 0,1,2,... in reading order over all paths
    source: str  # "builtin:NAME#<n>", a file path, or "<path>#<n>" for multi-document files
    text: str = ""  # the text, for documents read whole (a row of .jsonl / .parquet, a builtin)
    path: str | None = None  # a .txt document: streamed from this file instead, never read whole

    def chunks(self) -> Iterator[str]:
        """The text in pieces of at most READ_CHARS characters (one piece for a document read whole)."""
        if self.path is None:
            yield self.text
            return
        with open(self.path, encoding="utf-8") as handle:
            while piece := handle.read(READ_CHARS):
                yield piece


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
            if is_builtin(entry):
                builtin_file(entry)
                resolved.append(entry)
            else:
                resolved.append(_resolve_file(entry, base_dir))
        except CorpusError as exc:
            problems.append(str(exc))
    if problems:
        raise CorpusError("invalid corpus paths:\n  " + "\n  ".join(problems))
    return resolved


def _read_txt(path: str, _text_field: str) -> Iterator[tuple[str, str | None]]:
    # The whole file is one document: streamed when excerpts are cut (Document.chunks), never held whole.
    yield path, None


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


_FILE_READERS: dict[str, Callable[[str, str], Iterator[tuple[str, str | None]]]] = {
    ".txt": _read_txt,
    ".jsonl": _read_jsonl,
    ".parquet": _read_parquet,
}


def _read_entry(entry: str, text_field: str) -> Iterator[tuple[str, str | None]]:
    """(source, text) pairs of one corpus entry, with I/O and format errors as CorpusError."""
    try:
        if is_builtin(entry):
            name, spec = builtin_spec(entry)
            yield from spec.reader(name, builtin_file(entry))
            return
        reader = _FILE_READERS.get(Path(entry).suffix.lower())
        if reader is None:
            raise CorpusError(f"corpus file {entry!r} has an unsupported suffix")
        yield from reader(entry, text_field)
    # EOFError: truncated bz2; ArrowException: not a parquet file.
    except (OSError, UnicodeDecodeError, ET.ParseError, EOFError, pa.ArrowException) as exc:
        raise CorpusError(f"cannot read corpus {entry!r}: {exc}") from exc


def _has_text(path: str) -> bool:
    """Whether a file holds anything but whitespace, read a piece at a time."""
    try:
        with open(path, encoding="utf-8") as handle:
            while piece := handle.read(READ_CHARS):
                if piece.strip():
                    return True
    except (OSError, UnicodeDecodeError) as exc:
        raise CorpusError(f"cannot read corpus {path!r}: {exc}") from exc
    return False


def iter_documents(paths: Sequence[str], text_field: str = "text") -> Iterator[Document]:
    """Stream the non-empty documents of all paths, numbered in reading order.

    ``paths`` are as returned by :func:`resolve_corpus_paths`. Empty or whitespace-only
    documents are skipped and get no doc_id. A `.txt` document is not read here: its
    `chunks()` stream it.
    """
    doc_id = 0
    for entry in paths:
        for source, text in _read_entry(entry, text_field):
            if text is None:
                if _has_text(source):
                    yield Document(doc_id=doc_id, source=source, path=source)
                    doc_id += 1
            elif text.strip():
                yield Document(doc_id=doc_id, source=source, text=text)
                doc_id += 1
