"""Turn a SOURCE (folder, s3:// prefix or manifest) into a stream of SourceDocuments.

A PDF is a document. Page images (TIFF, PNG, JPEG) are grouped per parent folder into one
document, pages in natural file-name order. Grouping works on the sorted stream, so only
the folders still open at the current key are held in memory.
"""
from __future__ import annotations

import hashlib
import logging
import re
from typing import Callable, Iterable, Iterator, Optional

from folioscan.pipeline.storage import Store, is_s3, split_s3
from folioscan.records import SourceDocument, SourceObject

log = logging.getLogger(__name__)

PDF_EXT = (".pdf",)
IMAGE_EXT = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".jp2", ".webp", ".bmp")
MANIFEST_EXT = (".txt", ".lst", ".manifest", ".csv")


def doc_id_for(uri: str, fingerprint: str) -> str:
    return hashlib.sha256(f"{uri}\n{fingerprint}".encode()).hexdigest()[:32]


def _natural_key(uri: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", uri.rsplit("/", 1)[-1])]


def _parent(uri: str) -> str:
    return uri.rsplit("/", 1)[0] if "/" in uri else "."


def pdf_document(obj: SourceObject) -> SourceDocument:
    return SourceDocument(doc_id_for(obj.uri, obj.fingerprint), obj.uri, "pdf", (obj,), obj.fingerprint)


def image_document(folder: str, members: list[SourceObject]) -> SourceDocument:
    members = sorted(members, key=lambda m: _natural_key(m.uri))
    combined = "sha256:" + hashlib.sha256("\n".join(f"{m.uri}\t{m.fingerprint}" for m in members).encode()).hexdigest()
    return SourceDocument(doc_id_for(folder, combined), folder, "images", tuple(members), combined)


def group_documents(objects: Iterable[SourceObject], on_skip: Optional[Callable[[str], None]] = None,
                    log_skips: bool = True) -> Iterator[SourceDocument]:
    """`log_skips=False`: objects that are neither PDF nor page image are not logged (a second pass
    over the same listing, as the progress line's count, says nothing twice)."""
    open_folders: dict[str, list[SourceObject]] = {}
    for obj in objects:
        lower = obj.uri.lower()
        if lower.endswith(PDF_EXT):
            yield pdf_document(obj)
        elif lower.endswith(IMAGE_EXT):
            open_folders.setdefault(_parent(obj.uri), []).append(obj)
        else:
            if log_skips:
                log.info("skipping %s: not a PDF or page image", obj.uri)
            if on_skip:
                on_skip(obj.uri)
        # a folder is complete once the sorted listing has moved past its prefix
        for folder in [f for f in open_folders if not obj.uri.startswith(f + "/")]:
            yield image_document(folder, open_folders.pop(folder))
    for folder, members in open_folders.items():
        yield image_document(folder, members)


def is_manifest(source: str) -> bool:
    return source.lower().endswith(MANIFEST_EXT)


def read_manifest(store: Store, source: str) -> Iterator[str]:
    text = store.read(source).decode("utf-8")
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        uri = line.split(",")[0].strip()
        if uri.lower() in ("uri", "url", "path"):  # a CSV header
            continue
        yield uri


def _manifest_objects(store: Store, source: str) -> Iterator[SourceObject]:
    for uri in read_manifest(store, source):
        found = None
        try:
            found = next((o for o in store.list(uri) if o.uri == uri or not is_s3(uri)), None)
        except Exception as e:  # a missing object becomes an error row when it is loaded
            log.info("manifest entry %s: %s", uri, e)
        yield found or SourceObject(uri=uri, size=0, fingerprint="missing")


def iter_documents(store: Store, source: str, on_skip: Optional[Callable[[str], None]] = None,
                   log_skips: bool = True) -> Iterator[SourceDocument]:
    if is_manifest(source):
        objects = sorted(_manifest_objects(store, source), key=lambda o: o.uri)
    else:
        if is_s3(source):
            bucket, prefix = split_s3(source)
            source = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}/"
        objects = store.list(source)
    return group_documents(objects, on_skip, log_skips)
