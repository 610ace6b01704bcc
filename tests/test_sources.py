from folioscan.pipeline.sources import doc_id_for, group_documents, iter_documents
from folioscan.pipeline.storage import LocalStore
from folioscan.records import SourceObject


def obj(uri):
    return SourceObject(uri, 10, "etag:" + uri)


def test_images_group_per_folder_in_natural_order_while_streaming():
    keys = ["b/1.png", "b/10.png", "b/2.png", "b/c/x.pdf", "b/d.jpg", "book.pdf", "z/p1.tif"]
    docs = list(group_documents(obj(k) for k in sorted(keys)))
    kinds = {d.uri: (d.kind, [m.uri for m in d.members]) for d in docs}
    assert kinds["b"] == ("images", ["b/1.png", "b/2.png", "b/10.png", "b/d.jpg"])
    assert kinds["b/c/x.pdf"][0] == "pdf" and kinds["book.pdf"][0] == "pdf"
    assert kinds["z"] == ("images", ["z/p1.tif"])
    assert len(docs) == 4


def test_doc_id_is_stable_and_changes_with_content():
    assert doc_id_for("s3://b/k.pdf", "etag:1") == doc_id_for("s3://b/k.pdf", "etag:1")
    assert doc_id_for("s3://b/k.pdf", "etag:1") != doc_id_for("s3://b/k.pdf", "etag:2")
    assert doc_id_for("s3://b/k.pdf", "etag:1") != doc_id_for("s3://b/j.pdf", "etag:1")


def test_local_listing_and_manifest(library, tmp_path):
    store = LocalStore()
    docs = {d.uri.rsplit("/", 1)[-1]: d for d in iter_documents(store, str(library))}
    assert set(docs) == {"scan_book.pdf", "digital_book.pdf", "image_book", "empty.pdf", "truncated.pdf", "not_a_pdf.pdf", "locked.pdf"}
    manifest = tmp_path / "list.txt"
    manifest.write_text(f"# books\n{library}/scan_book.pdf\n{library}/missing.pdf\n")
    listed = list(iter_documents(store, str(manifest)))
    assert [d.uri.rsplit("/", 1)[-1] for d in listed] == ["missing.pdf", "scan_book.pdf"]
    assert listed[0].members[0].fingerprint == "missing"
    assert listed[1].doc_id == docs["scan_book.pdf"].doc_id


def test_a_csv_manifest_carries_metadata_columns_into_the_book(library, tmp_path):
    """A header row names the columns; a quoted field keeps its comma; empty values are left out;
    a page image's row gives its folder's book the values (the first page's win); a plain list
    or a CSV without a header row carries none, and the doc_id does not depend on metadata."""
    import json

    store = LocalStore()
    img = library / "image_book"
    manifest = tmp_path / "books.csv"
    manifest.write_text("# comment\nuri,title,identifier,shelfmark\n"
                        f'{library}/scan_book.pdf,"Mill, The",PPN1,\n'
                        f"{img}/page_1.png,Images,,S 1\n{img}/page_2.png,Other,,\n{img}/page_10.tiff,,,\n"
                        f"{library}/digital_book.pdf,,,\n")
    docs = {d.uri.rsplit("/", 1)[-1]: d for d in iter_documents(store, str(manifest))}
    assert json.loads(docs["scan_book.pdf"].metadata) == {"title": "Mill, The", "identifier": "PPN1"}
    assert json.loads(docs["image_book"].metadata) == {"title": "Images", "shelfmark": "S 1"}
    assert docs["digital_book.pdf"].metadata is None
    listed = {d.uri.rsplit("/", 1)[-1]: d for d in iter_documents(store, str(library))}
    assert docs["scan_book.pdf"].doc_id == listed["scan_book.pdf"].doc_id and listed["scan_book.pdf"].metadata is None
    bare = tmp_path / "bare.csv"
    bare.write_text(f"{library}/scan_book.pdf,Some title\n")
    assert [d.metadata for d in iter_documents(store, str(bare))] == [None]


def test_an_object_listed_twice_is_processed_once(library, tmp_path):
    import pyarrow.parquet as pq

    from folioscan.pipeline.config import JobConfig
    from folioscan.pipeline.job import run_job

    manifest = tmp_path / "twice.txt"
    manifest.write_text(f"{library}/scan_book.pdf\n{library}/scan_book.pdf\n")
    summary = run_job(JobConfig(source=str(manifest), output=str(tmp_path / "out"), executor="local", progress=False))
    assert summary.documents == 1 and summary.documents_skipped == 1
    assert pq.read_table(tmp_path / "out" / "pages").num_rows == 2
