"""PDF/A-2b copies of the searchable PDF, written by Ghostscript's pdfwrite (`gs`, not a Python package).

`folioscan export OUT DEST --format pdfa` (or `run --also pdfa`) writes DEST/pdfa/<book>.pdf: the
book's searchable PDF (folioscan/export/pdf.py) passed through `gs -dPDFA=2`, which rewrites the
whole file: an sRGB output intent, XMP metadata declaring PDF/A-2b, every font embedded, and what
PDF/A forbids (encryption, JavaScript, ...) left out. Images keep their pixels (JPEG and JPEG 2000
passed through, others re-compressed losslessly: Flate, bilevel scans CCITT G4; nothing
downsampled); colours stay in their device spaces (gray scans stay gray). Nothing here validates
the result (no veraPDF or other PDF/A validator runs here): it is what Ghostscript writes, and
Ghostscript stops when it cannot make a file conform (PDFACompatibilityPolicy=2; the book then
fails with its message). docs/exports.md says the same.

Without `gs` on PATH the format is refused before any work (format_function calls `preflight`).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from typing import Iterator

from folioscan.export.dataset import Book, ExportContext

TIMEOUT_S = 600  # one book


class GhostscriptMissing(ValueError):
    pass


def ghostscript() -> str:
    gs = shutil.which("gs")
    if not gs:
        raise GhostscriptMissing("the pdfa format needs Ghostscript (`gs` on PATH; e.g. apt-get install ghostscript); "
                                 "the plain searchable PDF is --format pdf")
    return gs


def preflight() -> None:
    ghostscript()


def write_book(book: Book, ctx: ExportContext) -> Iterator[tuple[str, bytes]]:
    from folioscan.export.pdf import book_pdf

    if not book.pages:
        return
    yield f"{book.name}.pdf", to_pdfa(book_pdf(book, ctx))


write_book.preflight = preflight  # type: ignore[attr-defined]


def _srgb_profile() -> bytes:
    """Ghostscript's own sRGB profile where it is installed beside it, else the one littleCMS makes."""
    out = subprocess.run([ghostscript(), "-h"], capture_output=True, text=True).stdout
    for part in out.replace("\n", " ").split(":"):
        lib = part.strip()
        if lib.endswith("/lib") or lib.endswith("/Resource/Init"):
            root = lib.rsplit("/", 2 if lib.endswith("/Init") else 1)[0]
            for name in ("iccprofiles/srgb.icc", "iccprofiles/default_rgb.icc"):
                if os.path.isfile(os.path.join(root, name)):
                    with open(os.path.join(root, name), "rb") as f:
                        return f.read()
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


_DEF = """%!
/ICCProfile ({icc}) def
[/_objdef {{icc_PDFA}} /type /stream /OBJ pdfmark
[{{icc_PDFA}} << /N 3 >> /PUT pdfmark
[{{icc_PDFA}} ICCProfile (r) file /PUT pdfmark
[/_objdef {{OutputIntent_PDFA}} /type /dict /OBJ pdfmark
[{{OutputIntent_PDFA}} << /Type /OutputIntent /S /GTS_PDFA1 /DestOutputProfile {{icc_PDFA}}
  /OutputConditionIdentifier (sRGB) /Info (sRGB IEC61966-2.1) >> /PUT pdfmark
[{{Catalog}} << /OutputIntents [ {{OutputIntent_PDFA}} ] >> /PUT pdfmark
"""


def to_pdfa(data: bytes) -> bytes:
    """`data` (a PDF) as Ghostscript's PDF/A-2b; ValueError with Ghostscript's words when it fails."""
    gs = ghostscript()
    with tempfile.TemporaryDirectory(prefix="folioscan-pdfa-") as tmp:
        src, dst, icc, defs = (os.path.join(tmp, n) for n in ("in.pdf", "out.pdf", "srgb.icc", "pdfa_def.ps"))
        with open(src, "wb") as f:
            f.write(data)
        with open(icc, "wb") as f:
            f.write(_srgb_profile())
        with open(defs, "w") as f:
            f.write(_DEF.format(icc=icc))
        cmd = [gs, "-q", "-dBATCH", "-dNOPAUSE", "-dSAFER", f"--permit-file-read={tmp}/", "-sDEVICE=pdfwrite",
               "-dPDFA=2", "-dPDFACompatibilityPolicy=2", "-sColorConversionStrategy=LeaveColorUnchanged",
               "-dAutoRotatePages=/None", "-dDownsampleColorImages=false", "-dDownsampleGrayImages=false",
               "-dDownsampleMonoImages=false", "-dAutoFilterColorImages=false", "-dAutoFilterGrayImages=false",
               "-dColorImageFilter=/FlateEncode", "-dGrayImageFilter=/FlateEncode", "-dPassThroughJPEGImages=true",
               "-dPassThroughJPXImages=true", f"-sOutputFile={dst}", defs, src]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
        if proc.returncode != 0 or not os.path.exists(dst) or not os.path.getsize(dst):
            msg = " ".join((proc.stderr or proc.stdout or "").split())[:500]
            raise ValueError(f"Ghostscript could not write PDF/A-2b (exit {proc.returncode}): {msg}")
        with open(dst, "rb") as f:
            return f.read()
