"""Turn a SOURCE (folder, s3:// prefix or manifest) into a stream of SourceDocuments.

A PDF is a document. Page images (TIFF, PNG, JPEG) are grouped per parent folder into one
document, pages in natural file-name order. Grouping works on the sorted stream, so only
the folders still open at the current key are held in memory.

A manifest lists object URIs, one a line. A CSV manifest whose header row starts with `uri` (or
`url`, `path`) may carry more columns (`uri,title,identifier,...`): each row's non-empty values
become the book's `documents.metadata` (a JSON object, column -> value), which the METS export
reads (docs/exports.md#mets). A page image's row gives its folder's book the metadata.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import logging
import os
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
    for uri, _ in read_manifest_rows(store, source):
        yield uri


_URI_HEADERS = ("uri", "url", "path")


def read_manifest_rows(store: Store, source: str) -> Iterator[tuple[str, dict[str, str]]]:
    """(uri, metadata) per entry: metadata are a CSV manifest's other columns, by their header
    name, empty values left out ({} for a plain list or a CSV without a header row). A local entry
    is made absolute (relative to the working folder), as a folder's listing names its files, so a
    book has one URI whichever way it was listed."""
    text = store.read(source).decode("utf-8")
    lines = [line for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    header: list[str] = []
    for row in csv.reader(io.StringIO("\n".join(lines))):
        if not row or not row[0].strip():
            continue
        uri = row[0].strip()
        if not header and uri.lower() in _URI_HEADERS:  # a CSV header: its names key the other columns
            header = [h.strip() for h in row]
            continue
        meta = {name: value.strip() for name, value in zip(header[1:], row[1:]) if name and value.strip()}
        yield (uri if is_s3(uri) else os.path.abspath(uri)), meta


def _manifest_objects(store: Store, source: str, metadata: dict[str, dict]) -> Iterator[SourceObject]:
    for uri, meta in read_manifest_rows(store, source):
        found = None
        try:
            found = next((o for o in store.list(uri) if o.uri == uri or not is_s3(uri)), None)
        except Exception as e:  # a missing object becomes an error row when it is loaded
            log.info("manifest entry %s: %s", uri, e)
        obj = found or SourceObject(uri=uri, size=0, fingerprint="missing")
        if meta:
            metadata[obj.uri] = meta
        yield obj


def _with_metadata(docs: Iterator[SourceDocument], metadata: dict[str, dict]) -> Iterator[SourceDocument]:
    """Each book with its manifest row's columns: the PDF's row, or its page images' rows merged
    in page order (the first image's value wins for a column two rows give)."""
    for doc in docs:
        meta: dict[str, str] = {}
        for uri in (doc.uri, *(m.uri for m in doc.members)):
            meta = {**metadata.get(uri, {}), **meta}
        yield dataclasses.replace(doc, metadata=json.dumps(meta, ensure_ascii=False, sort_keys=True)) if meta else doc


def iter_documents(store: Store, source: str, on_skip: Optional[Callable[[str], None]] = None,
                   log_skips: bool = True) -> Iterator[SourceDocument]:
    if is_manifest(source):
        metadata: dict[str, dict] = {}
        objects = sorted(_manifest_objects(store, source, metadata), key=lambda o: o.uri)
        return _with_metadata(group_documents(objects, on_skip, log_skips), metadata)
    if is_s3(source):
        bucket, prefix = split_s3(source)
        source = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}/"
    return group_documents(store.list(source), on_skip, log_skips)
