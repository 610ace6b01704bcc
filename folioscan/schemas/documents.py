"""The `documents` table: one row per book; its presence commits the book's pages."""
import pyarrow as pa

from folioscan.schemas.table import Table, col

DOCUMENTS = Table("documents", version=5, columns=[
    col("doc_id", pa.string(), "sha256 of the source URI and its content fingerprint"),
    col("source_uri", pa.string(), "the book as listed: the PDF's URI, or the folder of its page images"),
    col("kind", pa.string(), "pdf | images"),
    col("fingerprint", pa.string(), "content fingerprint the doc_id was derived from"),
    col("metadata", pa.string(), "JSON object of the book's row in a CSV manifest, column -> value (`uri,title,identifier,...`; "
                                 "empty values left out); null when none. The METS export's MODS reads it"),
    col("content_sha256", pa.string(), "sha256 of the source bytes, hashed as the loader reads them: the PDF's "
                                       "bytes, or for page images sha256 over each file's sha256 in page order; "
                                       "null when the source could not be read"),
    col("duplicate_of", pa.string(), "doc_id of the first copy of the same bytes (committed, or in flight "
                                     "when this one was read), whose pages and text stand for this book; null "
                                     "unless status is duplicate"),
    col("size_bytes", pa.int64(), "bytes of the source: the PDF, or the sum of its page images"),
    col("page_count", pa.int32(), "pages in the source"),
    col("pages_out", pa.int32(), "rows in `pages` (a split spread counts twice)"),
    col("pages_ok", pa.int32(), "rows in `pages` with status ok"),
    col("pages_blank", pa.int32(), "rows in `pages` with status blank (no text to read)"),
    col("pages_failed", pa.int32(), "rows in `pages` with status error"),
    col("status", pa.string(), "ok | partial | error | duplicate (the same bytes as book `duplicate_of`: not read again, "
                               "no pages rows; docs/duplicates.md)"),
    col("error", pa.string(), "why the book failed or is partial: its own error, else its first failed page's; null when ok"),
    col("error_kind", pa.string(), "transient | permanent; null when no error"),
    col("attempts_made", pa.int32(), "runs that processed this book, this one included (a retried book counts up)"),
    col("mean_confidence", pa.float32(), "over OCR'd pages, weighted by characters"),
    col("text", pa.string(), "reading text: headers, footers, page numbers out; words whole; paragraphs "
                             "joined, a blank line between them (the pages table keeps the raw text)"),
    col("page_spans", pa.list_(pa.int32()), "offset in `text` where each row of `pages` starts, in page order"),
    col("page_numbers_consistent", pa.bool_(), "printed page numbers rise along the book; null with fewer than two"),
    col("language", pa.string(), "ISO 639-1 of the reading text"),
    col("language_share", pa.float32(), "share of the reading text's letters in that language"),
    col("lexicon_fraction", pa.float32(), "share of words in the language's word list"),
    col("repetition", pa.float32(), "share of words inside a repeated word 5-gram"),
    col("ocr_quality", pa.float32(), "0..1 from lexicon_fraction, confidence and repetition (folioscan/text/signals.py)"),
    col("engine", pa.string(), "OCR engine that read the pages (the `engine` of its first page row); null with no page"),
    col("run_id", pa.string(), "the run that committed the row (OUTPUT/_runs/<run_id>.json holds its config)"),
    col("processed_at", pa.timestamp("ms", tz="UTC"), "when the driver assembled the book's rows for commit"),
])

DOCUMENTS_SCHEMA, DOCUMENTS_VERSION = DOCUMENTS.schema, DOCUMENTS.version
