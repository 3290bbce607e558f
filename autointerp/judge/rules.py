"""Synthetic units whose ground truth is known by construction: a rule over an excerpt's tokens (their text) says
where the unit fires. Rules come in FAMILIES (the word after X, word lists, word endings, ...); each rule has
several phrasings of its explanation and names the rules it is easily confused with (its near-misses: a rule
whose explanation sounds alike but fires elsewhere). The trained judge learns from some families; whole other
families are held out, so its evaluation measures kinds of pattern it never saw (docs/method.md s.11).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Sequence

Labels = Callable[[Sequence[str]], list[bool]]

SENTENCE_END = re.compile(r"[.!?:;\n]\s*$")
DIGITS = re.compile(r"^\s?\d+$")
_WORD = re.compile(r"^ ?[A-Za-z]+$")


@dataclass(frozen=True)
class Rule:
    family: str
    name: str  # unique: family/parameter
    phrasings: tuple[str, ...]  # explanations that say exactly this rule, in different words
    fires: Labels = field(compare=False, repr=False)
    near_misses: tuple[str, ...] = ()  # names of rules that sound alike and fire elsewhere

    def labels(self, tokens: Sequence[str]) -> list[bool]:
        return self.fires(tokens)


def word(token: str) -> str:
    return token.strip().lower()


def previous_tokens(tokens: Sequence[str]) -> list[str]:
    return ["\n", *tokens[:-1]]


def number_spans(tokens: Sequence[str]) -> list[tuple[int, int]]:
    """[start, end) of each run of digit tokens (a number split into digits, as Llama-family tokenizers do)."""
    spans, start = [], None
    for i, t in enumerate([*tokens, ""]):
        glued = start is not None and not t.startswith(" ")  # " 19" "90": one number; " 19" " 90": two
        if DIGITS.match(t) and (start is None or glued):
            start = i if start is None else start
            continue
        if start is not None:
            spans.append((start, i))
        start = i if DIGITS.match(t) else None
    return spans


def inside(tokens: Sequence[str], opening: str, closing: str) -> list[bool]:
    """Tokens strictly between an opening and its closing character (quotes: every other one)."""
    out, depth = [], 0
    for t in tokens:
        opens, closes = t.count(opening), t.count(closing)
        if opening == closing:  # quotes: toggled
            inside_now = depth == 1 and opens == 0
            depth = (depth + opens) % 2
            out.append(inside_now and bool(t.strip()))
            continue
        out.append(depth > 0 and closes == 0 and opens == 0 and bool(t.strip()))
        depth = max(0, depth + opens - closes)
    return out


def numbers(tokens: Sequence[str], years: bool) -> list[bool]:
    out = [False] * len(tokens)
    for lo, hi in number_spans(tokens):
        value = "".join(t.strip() for t in tokens[lo:hi])
        is_year = len(value) == 4 and 1000 <= int(value) <= 2099
        if is_year == years:
            out[lo:hi] = [True] * (hi - lo)
    return out


def nth_word_of_sentence(tokens: Sequence[str], n: int) -> list[bool]:
    out, words = [], None
    for t, p in zip(tokens, previous_tokens(tokens)):
        if SENTENCE_END.search(p):
            words = 0
        starts_word = bool(re.match(r"^ ?[A-Za-z]", t)) and (t.startswith(" ") or words == 0)
        if words is not None and starts_word:
            words += 1
        out.append(words == n and starts_word)
    return out


# --- families ---------------------------------------------------------------------------------------------------

# Frequent in news and encyclopaedic text, so every rule over them fires in many excerpts.
ANCHOR_WORDS = ("of", "the", "in", "to", "and", "a", "for", "on", "with", "by", "from", "at", "as", "is", "was",
                "that", "were", "are", "has", "have", "had", "be", "his", "their", "an", "it", "not", "or", "will",
                "said", "after", "about", "more", "into", "would", "than", "who", "its", "which", "but", "this",
                "he", "they", "she", "we", "all", "one", "new", "also", "can", "two", "up", "out", "when", "there",
                "over", "first", "last", "such")


def _after(w: str) -> Labels:
    return lambda tokens: [word(p) == w and bool(t.strip()) for t, p in zip(tokens, previous_tokens(tokens))]


def _before(w: str) -> Labels:
    return lambda tokens: [bool(t.strip()) and word(n) == w for t, n in zip(tokens, [*tokens[1:], ""])]


def _is(words: frozenset[str], case_sensitive: bool = False) -> Labels:
    return lambda tokens: [(t.strip() if case_sensitive else word(t)) in words for t in tokens]


def _anchor_rules() -> list[Rule]:
    rules = []
    for i, w in enumerate(ANCHOR_WORDS):
        other = ANCHOR_WORDS[(i + 7) % len(ANCHOR_WORDS)]
        rules.append(Rule("after_word", f"after_word/{w}", (
            f'the word right after "{w}"', f'words that follow "{w}"', f'the token that comes after the word {w}',
            f'whatever word is preceded by "{w}"'), _after(w),
            (f"word_is/{w}", f"before_word/{w}", f"after_word/{other}")))
        rules.append(Rule("before_word", f"before_word/{w}", (
            f'the word right before "{w}"', f'words that precede "{w}"', f'the token just ahead of the word {w}',
            f'whatever word is followed by "{w}"'), _before(w),
            (f"word_is/{w}", f"after_word/{w}", f"before_word/{other}")))
        rules.append(Rule("word_is", f"word_is/{w}", (
            f'the word "{w}"', f'occurrences of "{w}"', f'the token {w}', f'"{w}" wherever it appears'),
            _is(frozenset([w])), (f"after_word/{w}", f"before_word/{w}")))
    return rules


MONTHS = "January February March April May June July August September October November December".split()
WEEKDAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
WORD_LISTS: dict[str, tuple[str, str]] = {  # name -> (what the words are, the words)
    "months": ("names of months", " ".join(MONTHS).lower()),
    "weekdays": ("days of the week", " ".join(WEEKDAYS).lower()),
    "number_words": ("numbers written as words", "one two three four five six seven eight nine ten hundred "
                                                 "thousand million billion twenty thirty fifty"),
    "family": ("family members", "mother father son daughter wife husband brother sister children child parents "
                                 "family"),
    "water": ("water and bodies of water", "water sea ocean river lake coast rivers lakes waters"),
    "pronouns": ("personal pronouns", "he she they we i you him her them us it"),
    "possessives": ("possessive pronouns", "his her their our my your its"),
    "articles": ("articles", "the a an"),
    "prepositions": ("prepositions of place", "in on at under over between near above below into"),
    "auxiliaries": ("forms of the verbs be and have", "is was were are be been being has have had"),
    "modals": ("modal verbs", "will would can could should may might must"),
    "conjunctions": ("conjunctions joining clauses", "and but or because although while if"),
    "negations": ("negation words", "not no never nothing none nor"),
    "time": ("words for units of time", "year years month months week weeks day days hour hours time"),
    "directions": ("compass directions", "north south east west northern southern eastern western"),
    "government": ("words about government", "government minister president parliament election party "
                                             "council law state"),
    "sport": ("words about sport", "game match team season cup players player win won coach"),
    "money": ("words about money", "money dollars million billion pay price cost tax bank budget"),
    "war": ("words about war and the military", "war army troops military soldiers forces attack killed"),
    "people_roles": ("words for groups of people", "people men women children police officials workers"),
}


def _word_list_rules() -> list[Rule]:
    names = list(WORD_LISTS)
    rules = []
    for i, name in enumerate(names):
        what, words = WORD_LISTS[name]
        examples = ", ".join(words.split()[:3])
        rules.append(Rule("word_list", f"word_list/{name}", (
            what, f"{what}, such as {examples}", f"words that are {what}", f"any of: {examples} and similar"),
            _is(frozenset(words.split())), (f"word_list/{names[(i + 1) % len(names)]}",
                                            f"word_list/{names[(i + 5) % len(names)]}")))
    return rules


SUFFIXES = ("ing", "ed", "ly", "tion", "ment", "ness", "er", "est", "able", "ful", "ous", "al", "ity", "ive", "ist",
            "ism", "ship", "less")


def _suffix(s: str) -> Labels:
    return lambda tokens: [bool(_WORD.match(t)) and len(word(t)) > len(s) + 2 and word(t).endswith(s) for t in tokens]


def _prefix(s: str) -> Labels:
    return lambda tokens: [bool(_WORD.match(t)) and t.startswith(" ") and len(word(t)) > len(s) + 2
                           and word(t).startswith(s) for t in tokens]


def _affix_rules() -> list[Rule]:
    rules = []
    for i, s in enumerate(SUFFIXES):
        rules.append(Rule("suffix", f"suffix/{s}", (
            f'words ending in "-{s}"', f'words with the suffix -{s}', f'tokens that end with "{s}"',
            f'any word whose last letters are "{s}"'), _suffix(s),
            (f"suffix/{SUFFIXES[(i + 1) % len(SUFFIXES)]}", f"prefix/{PREFIXES[i % len(PREFIXES)]}")))
    for i, s in enumerate(PREFIXES):
        rules.append(Rule("prefix", f"prefix/{s}", (
            f'words starting with "{s}-"', f'words with the prefix {s}-', f'tokens that begin with "{s}"',
            f'any word whose first letters are "{s}"'), _prefix(s),
            (f"prefix/{PREFIXES[(i + 1) % len(PREFIXES)]}", f"suffix/{SUFFIXES[i % len(SUFFIXES)]}")))
    return rules


PREFIXES = ("re", "un", "in", "pro", "con", "com", "dis", "pre", "ex", "de", "per", "st", "tr", "sh")


def _shape_rules() -> list[Rule]:
    def capitalised_inside(tokens: Sequence[str]) -> list[bool]:
        return [bool(re.match(r"^ [A-Z][a-z]", t)) and not SENTENCE_END.search(p)
                for t, p in zip(tokens, previous_tokens(tokens))]

    def all_caps(tokens: Sequence[str]) -> list[bool]:
        return [bool(re.match(r"^ ?[A-Z]{2,}$", t)) for t in tokens]

    def long_word(n: int) -> Labels:
        return lambda tokens: [bool(_WORD.match(t)) and len(word(t)) >= n for t in tokens]

    def short_word(tokens: Sequence[str]) -> list[bool]:
        return [bool(_WORD.match(t)) and t.startswith(" ") and len(word(t)) <= 2 for t in tokens]

    def first_word(tokens: Sequence[str]) -> list[bool]:
        return nth_word_of_sentence(tokens, 1)

    def last_before_stop(tokens: Sequence[str]) -> list[bool]:
        return [bool(t.strip()) and n.strip() == "." for t, n in zip(tokens, [*tokens[1:], ""])]

    def punctuation(marks: str) -> Labels:
        return lambda tokens: [bool(t.strip()) and all(c in marks for c in t.strip()) for t in tokens]

    specs = [
        ("capitalised", ("capitalised words inside a sentence", "names of people, places and organisations in the "
                         "middle of a sentence", "words with a capital first letter that do not start a sentence"),
         capitalised_inside, ("position/first_word", "shape/all_caps")),
        ("all_caps", ("words written in capital letters", "acronyms and abbreviations in upper case",
                      "tokens in all caps"), all_caps, ("shape/capitalised",)),
        ("long_words", ("long words of nine letters or more", "very long words", "words with many letters"),
         long_word(9), ("shape/short_words", "suffix/tion")),
        ("short_words", ("short words of one or two letters", "tiny words like a, of, in, to",
                         "one- and two-letter words"), short_word, ("shape/long_words", "word_list/articles")),
        ("digits", ("digits and numbers", "numbers written with digits", "numerals"),
         lambda tokens: [bool(DIGITS.match(t)) for t in tokens], ("word_list/number_words", "shape/years")),
        ("years", ("numbers that are years, such as 1998 or 2004", "years written as four digits", "dates' years"),
         lambda tokens: numbers(tokens, years=True), ("shape/counts", "word_list/months")),
        ("counts", ("numbers that count or measure things, not years", "quantities written in digits",
                    "numbers of things, amounts and measurements"), lambda tokens: numbers(tokens, years=False),
         ("shape/years", "word_list/number_words")),
        ("commas", ("commas", "the comma character", "commas between clauses and in lists"), punctuation(","),
         ("context/after_comma", "shape/stops")),
        ("stops", ("full stops at the end of sentences", "periods", "the end-of-sentence dot"), punctuation("."),
         ("position/last_word", "shape/commas")),
        ("brackets", ("opening and closing parentheses", "the characters ( and )", "round brackets"),
         punctuation("()"), ("context/in_parentheses",)),
    ]
    rules = [Rule("shape", f"shape/{n}", p, f, m) for n, p, f, m in specs]
    rules += [
        Rule("position", "position/first_word", ("the first word of each sentence", "words that start a sentence",
                                                 "sentence-initial words"), first_word,
             ("position/second_word", "shape/capitalised")),
        Rule("position", "position/second_word", ("the second word of a sentence", "the word after a sentence's "
                                                  "first word", "words in second position in a sentence"),
             lambda tokens: nth_word_of_sentence(tokens, 2), ("position/first_word", "position/third_word")),
        Rule("position", "position/third_word", ("the third word of a sentence", "words in third position in a "
                                                 "sentence", "the word two after a sentence starts"),
             lambda tokens: nth_word_of_sentence(tokens, 3), ("position/second_word", "position/first_word")),
        Rule("position", "position/last_word", ("the last word of a sentence, before the full stop", "words right "
                                                "before a period", "sentence-final words"), last_before_stop,
             ("shape/stops", "position/first_word")),
    ]
    return rules


def _context_rules() -> list[Rule]:
    def after_mark(marks: str) -> Labels:
        return lambda tokens: [bool(p.strip()) and p.strip()[-1] in marks and bool(_WORD.match(t))
                               for t, p in zip(tokens, previous_tokens(tokens))]

    def repeated(tokens: Sequence[str]) -> list[bool]:
        seen, out = set(), []
        for t in tokens:
            key = word(t)
            out.append(len(key) >= 3 and key in seen)
            seen.add(key)
        return out

    def after_number(tokens: Sequence[str]) -> list[bool]:
        return [bool(DIGITS.match(p)) and bool(_WORD.match(t)) for t, p in zip(tokens, previous_tokens(tokens))]

    def after_capitalised(tokens: Sequence[str]) -> list[bool]:
        return [bool(re.match(r"^ [A-Z][a-z]", p)) and bool(re.match(r"^ [A-Z][a-z]", t))
                for t, p in zip(tokens, previous_tokens(tokens))]

    return [
        Rule("context", "context/after_comma", ("the word right after a comma", "words that follow a comma",
                                                "the first word after each comma"), after_mark(","),
             ("shape/commas", "position/first_word")),
        Rule("context", "context/after_colon", ("the word after a colon or semicolon", "words following : or ;",
                                                "what comes right after a colon"), after_mark(":;"),
             ("context/after_comma",)),
        Rule("context", "context/in_parentheses", ("words inside parentheses", "text between ( and )",
                                                   "the contents of round brackets"), lambda t: inside(t, "(", ")"),
             ("shape/brackets", "context/in_quotes")),
        Rule("context", "context/in_quotes", ("words inside quotation marks", "quoted speech between double quotes",
                                              "text within quotes"), lambda t: inside(t, '"', '"'),
             ("context/in_parentheses", "shape/capitalised")),
        Rule("context", "context/repeated", ("words that already appeared earlier in the text", "repeated words, "
                                             "on their second and later occurrence", "a word seen before in the "
                                             "passage"), repeated, ("word_list/articles", "shape/capitalised")),
        Rule("context", "context/after_number", ("the word right after a number", "units and nouns that follow a "
                                                 "number", "words preceded by digits"), after_number,
             ("shape/digits", "shape/counts")),
        Rule("context", "context/name_continuation", ("the second word of a multi-word name", "a capitalised word "
                                                      "right after another capitalised word", "surnames after first "
                                                      "names"), after_capitalised,
             ("shape/capitalised", "position/first_word")),
    ]


def all_rules() -> dict[str, Rule]:
    rules = [*_anchor_rules(), *_word_list_rules(), *_affix_rules(), *_shape_rules(), *_context_rules()]
    by_name = {r.name: r for r in rules}
    assert len(by_name) == len(rules), "rule names must be unique"
    for r in rules:
        unknown = [m for m in r.near_misses if m not in by_name]
        assert not unknown, f"{r.name}: unknown near-misses {unknown}"
    return by_name


# Families the judge never trains on: it is measured on them (and on eval/planted.py's contextual concepts).
HELD_OUT_FAMILIES = ("before_word", "prefix", "position")
# The planted concepts' exact rules stay out of training too, so that evaluation is on rules never seen.
PLANTED_RULES = ("after_word/of", "context/after_comma", "shape/capitalised", "context/in_parentheses",
                 "context/in_quotes", "shape/years", "shape/counts", "position/second_word")


def split_rules(rules: dict[str, Rule]) -> tuple[list[Rule], list[Rule]]:
    """(training rules, held-out rules)."""
    train = [r for r in rules.values() if r.family not in HELD_OUT_FAMILIES and r.name not in PLANTED_RULES]
    held_out = [r for r in rules.values() if r.family in HELD_OUT_FAMILIES]
    return train, held_out
