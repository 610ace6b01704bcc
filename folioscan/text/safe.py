"""File names and OCR text made safe for what carries them, in one place.

Both come from outside: a file name may hold any byte but `/` and NUL, and an engine (a VLM above
all) may emit any character. Two rules, one per kind of reader:

**XML and HTML files** (ALTO, hOCR, the report): XML 1.0 allows only
`#x9 | #xA | #xD | [#x20-#xD7FF] | [#xE000-#xFFFD] | [#x10000-#x10FFFF]`. Any other character (C0
controls but tab, line feed and carriage return; lone surrogates, which a file name that is not
UTF-8 decodes to; U+FFFE, U+FFFF) cannot appear in a document at all, not even as a character
reference: lxml refuses to write it and a parser stops at it. `XmlText` **replaces** each one with
U+FFFD REPLACEMENT CHARACTER rather than removing it: the text keeps its length and its word
boundaries (`ctl\\x07name` does not silently become `ctlname`, the name of another file), and a
reader sees that something was there, which is what U+FFFD is for. It counts what it replaced,
and each format records the count in its output (ALTO: a `processingStepDescription`; hOCR: a
`folioscan-replaced-characters` meta) and logs it, so a consumer knows the text is not verbatim.

**Terminal and report lines for people** (`folioscan show`, the report's names and errors):
`visible` writes every control character (C0, DEL, C1), lone surrogate, U+FFFE/U+FFFF and the
bidirectional overrides and isolates (which reorder what follows them: "Trojan source") as a
Python-style escape (`\\x07`, `\\x1b`, `\\u202e`), so nothing reaches the terminal as a command and
the name printed is the name on disk, spelled out. A backslash is left as it is: a name that
literally contains `\\x07` reads the same as one holding BEL (names like that are rare; `show` is
for reading, the Parquet keeps the exact name).
"""
from __future__ import annotations

import logging
import re
from html import escape

log = logging.getLogger(__name__)

REPLACEMENT = "\ufffd"
# every character XML 1.0 does not allow (the complement of its Char production)
NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# what `visible` spells out: C0, DEL and C1 controls, surrogates, U+FFFE/U+FFFF, bidi overrides and isolates
_INVISIBLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff\u202a-\u202e\u2066-\u2069]")
_INVISIBLE_KEEP_LINES = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff\u202a-\u202e\u2066-\u2069]")


def xml_text(value) -> tuple[str, int]:
    """`value` as text XML 1.0 can hold, and how many characters were replaced by U+FFFD."""
    s = value if isinstance(value, str) else str(value)
    if NOT_XML.search(s) is None:
        return s, 0
    return NOT_XML.subn(REPLACEMENT, s)


class XmlText:
    """`xml_text` that keeps the count over one document: call it on every string the document takes."""

    def __init__(self) -> None:
        self.replaced = 0

    def __call__(self, value) -> str:
        s, n = xml_text(value)
        self.replaced += n
        return s

    def escape(self, value, quote: bool = True) -> str:
        """For documents written as strings (hOCR): safe characters, then markup escaped."""
        return escape(self(value), quote=quote)

    @property
    def note(self) -> str:
        """What a document says about its replaced characters ("" when none were)."""
        if not self.replaced:
            return ""
        return (f"{self.replaced} characters not allowed in XML 1.0 replaced by U+FFFD "
                f"(file names or OCR text with control characters; folioscan.text.safe)")

    def log(self, what: str) -> None:
        if self.replaced:
            log.warning("%s: %s", visible(what), self.note)


def _spell(m: re.Match) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def visible(value, keep_newlines: bool = False) -> str:
    """`value` with every character a terminal would act on (or hide) written as a visible escape."""
    s = value if isinstance(value, str) else str(value)
    return (_INVISIBLE_KEEP_LINES if keep_newlines else _INVISIBLE).sub(_spell, s)


def html(value, keep_newlines: bool = False) -> str:
    """Text for an HTML page a person reads (the report): visible escapes, then markup escaped.
    Everything `visible` leaves is also allowed in XML, so the page stays well-formed as well."""
    return escape(visible(value, keep_newlines))
