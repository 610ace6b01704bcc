"""A font for invisible text: every character one empty glyph half an em wide, and its Unicode kept.

The searchable PDF's text layer is never drawn (text render mode 3), so its font needs no glyph
shapes, only widths a reader can scale and a map back to Unicode. This is the font Tesseract and
OCRmyPDF put under their text layers, written here from the PDF and TrueType specifications:

- a Type0 font, encoding Identity-H: a shown string is 2-byte codes, and the code of a character is
  its UTF-16 code unit (characters past U+FFFF become U+FFFD: one code cannot hold them);
- its CIDFontType2 maps every code to glyph 1 (CIDToGIDMap) and gives every code the same width
  (DW 500, half an em), so a word's natural width is 0.5 x size x its length and `Tz` stretches it
  to its box; glyph 0 (.notdef) is never shown, as PDF/A wants;
- the ToUnicode CMap maps each code shown back to itself, so any script the OCR read comes back
  out of the PDF as it was recorded (a real font would lose what it has no glyph for);
- the embedded TrueType program (built below, about 500 bytes) has the two glyphs, an ascent of
  0.8 em and a descent of 0.2 em, the same as the font descriptor says.
"""
from __future__ import annotations

import struct
from functools import lru_cache
from typing import Iterable

NAME = "FolioGlyphless"
UNITS = 1000
ASCENT, DESCENT = 800, -200  # font units; readers take a word's height from these
WIDTH = 500  # every glyph's advance
ADVANCE = WIDTH / UNITS  # in ems
CREATED = 3_850_070_400  # 2026-01-01, seconds since 1904 (TrueType's epoch): the bytes never change


def encode(text: str) -> bytes:
    """The string a text-showing operator gets: one 2-byte code (the UTF-16 unit) per character."""
    return "".join(c if ord(c) <= 0xFFFF and not 0xD800 <= ord(c) <= 0xDFFF else "\ufffd" for c in text).encode("utf-16-be")


def width(text: str, size: float) -> float:
    """The natural advance of `text` at `size`, in text space units."""
    return len(encode(text)) // 2 * ADVANCE * size


def _checksum(data: bytes) -> int:
    data += b"\0" * (-len(data) % 4)
    return sum(struct.unpack(f">{len(data) // 4}I", data)) & 0xFFFFFFFF


@lru_cache(maxsize=1)
def truetype() -> bytes:
    """The font program: TrueType outlines, glyph 0 a box (.notdef), glyph 1 empty."""
    notdef = struct.pack(">hhhhh", 1, 50, 0, 450, 700) + struct.pack(">HH", 3, 0) + bytes([1, 1, 1, 1]) \
        + struct.pack(">hhhh", 50, 0, 400, 0) + struct.pack(">hhhh", 0, 700, 0, -700)
    notdef += b"\0" * (-len(notdef) % 4)
    glyf = notdef  # glyph 1 has no outline: its loca entry is empty
    loca = struct.pack(">HHH", 0, len(notdef) // 2, len(notdef) // 2)
    head = struct.pack(">IIIIHHqqhhhhHHhhh", 0x00010000, 0x00010000, 0, 0x5F0F3CF5, 0x000B, UNITS, CREATED, CREATED,
                       0, DESCENT, WIDTH, ASCENT, 0, 3, 2, 0, 0)
    hhea = struct.pack(">IhhhHhhhhhhhhhhhH", 0x00010000, ASCENT, DESCENT, 0, WIDTH, 0, 0, WIDTH, 1, 0, 0,
                       0, 0, 0, 0, 0, 2)
    maxp = struct.pack(">IHHHHHHHHHHHHHH", 0x00010000, 2, 4, 1, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0)
    hmtx = struct.pack(">HhHh", WIDTH, 50, WIDTH, 0)
    # cmap: one Windows Unicode subtable (format 4) mapping the space to glyph 1; a CID font ignores it
    seg = struct.pack(">HHHHHHH", 4, 32, 0, 4, 4, 1, 0) + struct.pack(">HH", 0x20, 0xFFFF) + b"\0\0" \
        + struct.pack(">HH", 0x20, 0xFFFF) + struct.pack(">hh", 1 - 0x20, 1) + struct.pack(">HH", 0, 0)
    cmap = struct.pack(">HHHHI", 0, 1, 3, 1, 12) + seg
    post = struct.pack(">IIhhIIIII", 0x00030000, 0, -100, 50, 0, 0, 0, 0, 0)
    strings = [(1, NAME), (2, "Regular"), (4, NAME), (6, NAME)]
    records, blob = b"", b""
    for name_id, s in strings:
        data = s.encode("utf-16-be")
        records += struct.pack(">HHHHHH", 3, 1, 0x409, name_id, len(data), len(blob))
        blob += data
    name = struct.pack(">HHH", 0, len(strings), 6 + len(records)) + records + blob
    tables = {b"cmap": cmap, b"glyf": glyf, b"head": head, b"hhea": hhea, b"hmtx": hmtx, b"loca": loca,
              b"maxp": maxp, b"name": name, b"post": post}
    n = len(tables)
    power = 1 << (n.bit_length() - 1)
    header = struct.pack(">IHHHH", 0x00010000, n, power * 16, power.bit_length() - 1, n * 16 - power * 16)
    offset = len(header) + 16 * n
    directory, body, at = b"", b"", 0
    for tag in sorted(tables):
        data = tables[tag]
        if tag == b"head":
            at = offset + len(body) + 8  # head.checkSumAdjustment
        directory += struct.pack(">4sIII", tag, _checksum(data), offset + len(body), len(data))
        body += data + b"\0" * (-len(data) % 4)
    font = bytearray(header + directory + body)
    adjust = (0xB1B0AFBA - _checksum(bytes(font))) & 0xFFFFFFFF
    font[at:at + 4] = struct.pack(">I", adjust)
    return bytes(font)


def to_unicode_cmap(text: Iterable[str] = ()) -> bytes:
    """Each code of `text` back to its character, one `bfchar` entry a code. Not ranges: the one
    `bfrange` of the whole BMP (<2000> <20FF> <2000>, ...) is what the specification allows, but
    Ghostscript 10.0 rewrites such a range wrongly (U+2019 came out of its PDF/A as "9")."""
    codes = sorted({c for c in encode("".join(text)).decode("utf-16-be")} | {" "})
    entries = [f"<{ord(c):04X}> <{ord(c):04X}>" for c in codes]
    out = ["/CIDInit /ProcSet findresource begin", "12 dict begin", "begincmap",
           "/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def",
           f"/CMapName /{NAME}-UCS def", "/CMapType 2 def",
           "1 begincodespacerange", "<0000> <FFFF>", "endcodespacerange"]
    for i in range(0, len(entries), 100):  # at most 100 entries a block
        chunk = entries[i:i + 100]
        out += [f"{len(chunk)} beginbfchar", *chunk, "endbfchar"]
    out += ["endcmap", "CMapName currentdict /CMap defineresource pop", "end", "end"]
    return "\n".join(out).encode("ascii")


def map_unicode(doc, font: int, text: Iterable[str]) -> None:
    """Give the font (add_to's xref) the ToUnicode CMap of every character shown with it."""
    kind, ref = doc.xref_get_key(font, "ToUnicode")
    doc.update_stream(int(ref.split()[0]), to_unicode_cmap(text), compress=True)


def add_to(doc) -> int:
    """Write the font's objects into a PyMuPDF document; returns the xref of its Type0 font dict.
    Its ToUnicode maps only the space until `map_unicode` is given the text."""

    def stream(data: bytes, extra: str = "") -> int:
        xref = doc.get_new_xref()
        doc.update_object(xref, f"<<{extra}>>")
        doc.update_stream(xref, data, compress=True)
        return xref

    program = truetype()
    file_ = stream(program, f"/Length1 {len(program)}")
    descriptor = doc.get_new_xref()
    doc.update_object(descriptor, f"<</Type/FontDescriptor/FontName/{NAME}/Flags 4/FontBBox[0 {DESCENT} {WIDTH} {ASCENT}]"
                                  f"/ItalicAngle 0/Ascent {ASCENT}/Descent {DESCENT}/CapHeight {ASCENT}/StemV 80"
                                  f"/FontFile2 {file_} 0 R>>")
    cid_to_gid = stream(b"\x00\x01" * 65536)
    cid_font = doc.get_new_xref()
    doc.update_object(cid_font, f"<</Type/Font/Subtype/CIDFontType2/BaseFont/{NAME}"
                                f"/CIDSystemInfo<</Registry(Adobe)/Ordering(Identity)/Supplement 0>>"
                                f"/FontDescriptor {descriptor} 0 R/DW {WIDTH}/CIDToGIDMap {cid_to_gid} 0 R>>")
    unicode_ = stream(to_unicode_cmap())
    font = doc.get_new_xref()
    doc.update_object(font, f"<</Type/Font/Subtype/Type0/BaseFont/{NAME}/Encoding/Identity-H"
                            f"/DescendantFonts[{cid_font} 0 R]/ToUnicode {unicode_} 0 R>>")
    return font
