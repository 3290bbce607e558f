"""MediaWiki source to plain prose, for the builtin Wikipedia sample (best effort, regex based)."""

from __future__ import annotations

import html
import re
from collections.abc import Callable

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


def strip_wiki_markup(text: str) -> str:
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
