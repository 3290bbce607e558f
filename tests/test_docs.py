"""The documents point at files that exist: a refactor that moves a module must move its mentions too."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# A repository path: a top-level folder, then a file with an extension (`autointerp/command` is a Dagster tag,
# `autointerp/simulate/NAME.py` a template for a file you add: neither is a path that must exist).
_PATH = re.compile(r"\b(?:autointerp|eval|bench|tests|docs|scripts|assets|orchestration|resources)"
                   r"/[A-Za-z0-9_./*-]*\.(?:py|json|jsonl|md|sh|yaml|yml|j2|png|toml|txt)\b")


def mentioned_paths(text: str) -> set[str]:
    return {path for path in _PATH.findall(text) if "NAME" not in path}


def test_the_path_pattern_finds_paths_in_prose_and_in_code_spans():
    text = "see `autointerp/record/recorder.py`, eval/results/sae.json; the tag `autointerp/command`, NAME.py"
    assert mentioned_paths(text) == {"autointerp/record/recorder.py", "eval/results/sae.json"}


def test_every_path_in_the_readme_and_docs_exists():
    missing = [f"{document.relative_to(ROOT)}: {path}" for document in DOCUMENTS
               for path in sorted(mentioned_paths(document.read_text(encoding="utf-8")))
               if not any(ROOT.glob(path))]
    assert missing == []
    assert len(mentioned_paths((ROOT / "README.md").read_text(encoding="utf-8"))) > 20  # the pattern still matches
