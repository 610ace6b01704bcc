"""Words split at a line end (or a page end) made whole again: does the hyphen go or stay?

The book's own vocabulary decides first ("to-day" printed whole mid-line keeps its hyphen),
then the language's word list ("Jona-than" -> "Jonathan" because "jonathan" is a word;
"great-grandfather" keeps it because "greatgrandfather" is not, while both halves are).
A hyphen that stays is printed with no space around it ("well-known").
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Iterable, Optional

from folioscan.text.lexicon import has_lexicon, zipf

# a letter, then a hyphen (ASCII, soft, Unicode hyphen or the not-sign some fonts use) ending the line
_BROKEN = re.compile(r"([^\W\d_]+)[-\u00ad\u2010\u00ac]$")
_HEAD = re.compile(r"^([^\W\d_]+)")
_TOKEN = re.compile(r"[^\W\d_]+(?:-[^\W\d_]+)*")
JOIN_MIN_ZIPF = 2.0  # the joined word is a word of the language
PART_MIN_ZIPF = 3.0  # both halves are common words on their own: a compound
PART_MARGIN = 3.0  # ... and far commoner than the joined form ("var-lets" joins, "well-known" stays)


def vocabulary(lines: Iterable[str]) -> Counter:
    """Lower-cased words and hyphenated compounds as printed inside lines (line ends left out)."""
    tokens: list[str] = []
    for line in lines:
        body = line[:-1] if _BROKEN.search(line) else line
        tokens += _TOKEN.findall(body)
    # lower-cased all at once (a newline between tokens: each is lower-cased as on its own), counted in one go
    return Counter("\n".join(tokens).lower().split("\n")) if tokens else Counter()


def broken_word(line: str, next_line: str) -> Optional[tuple[str, str]]:
    """(head, tail) when `line` ends in a hyphenated word that `next_line` continues."""
    m, n = _BROKEN.search(line.rstrip()), _HEAD.match(next_line.lstrip())
    if not m or not n or line.rstrip().endswith("--"):
        return None
    return m.group(1), n.group(1)


def keep_hyphen(head: str, tail: str, vocab: Counter, lang: Optional[str]) -> bool:
    if tail[:1].isupper() and not head.isupper():  # "Anglo-Saxon", "Franco-Prussian"; not "INTRODUC-TION"
        return True
    joined, hyphenated = (head + tail).lower(), f"{head}-{tail}".lower()
    if vocab[hyphenated] != vocab[joined]:
        return vocab[hyphenated] > vocab[joined]
    if not has_lexicon(lang):
        return False
    whole, parts = zipf(joined, lang), min(zipf(head, lang), zipf(tail, lang))
    if whole >= JOIN_MIN_ZIPF or min(len(head), len(tail)) < 2:
        return False
    # two common words whose run-together form is absent or far rarer ("wellknown" is a typo): a compound
    return parts >= PART_MIN_ZIPF and parts - whole >= PART_MARGIN


def join_broken(line: str, next_line: str, vocab: Counter, lang: Optional[str]) -> Optional[str]:
    """What to put between `line` minus its hyphen and `next_line`: "" or "-"; None when no word is broken."""
    parts = broken_word(line, next_line)
    if parts is None:
        return None
    return "-" if keep_hyphen(*parts, vocab, lang) else ""


_SPACED = re.compile(r"([^\W\d_]+)-\s+([^\W\d_]+)")


def join_spaced(line: str, vocab: Counter, lang: Optional[str]) -> str:
    """A hyphen the engine read with a space after it inside a line ("close- fitting"), decided the same way."""
    return _SPACED.sub(lambda m: m.group(1) + ("-" if keep_hyphen(m.group(1), m.group(2), vocab, lang) else "") + m.group(2),
                       line)
