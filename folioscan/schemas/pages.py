"""The `pages` table: one row per output page (a split spread gives two rows)."""
import pyarrow as pa

from folioscan.schemas.table import Table, col

BOX = pa.list_(pa.int32())  # [x0, y0, x1, y1] in pixels of the cleaned page image (box) or of the loaded one (box_source)

WORD = pa.struct([("text", pa.string()), ("confidence", pa.float32()), ("box", BOX), ("box_source", BOX)])

LINE = pa.struct([("text", pa.string()), ("confidence", pa.float32()), ("box", BOX), ("box_source", BOX),
                  ("block", pa.int16()), ("paragraph", pa.int16()), ("words", pa.list_(WORD))])

ATTEMPT = pa.struct(
    [
        ("budget", pa.string()),
        ("vision_tokens", pa.int32()),
        ("output_tokens", pa.int32()),
        ("confidence", pa.float32()),
        ("repetition", pa.bool_()),
        ("hit_token_cap", pa.bool_()),
        ("reason", pa.string()),
        ("ms", pa.float32()),
        ("accepted", pa.bool_()),
        ("max_new_tokens", pa.int32()),
        ("cap_clamped", pa.bool_()),
    ]
)

BOX_ALIGNMENT = pa.struct([("engine", pa.string()), ("words", pa.int32()), ("lines", pa.int32()), ("none", pa.int32()),
                           ("error", pa.string()), ("tesseract_ms", pa.float32()), ("align_ms", pa.float32())])

READING = pa.struct([("engine", pa.string()), ("engine_version", pa.string()), ("status", pa.string()),
                     ("confidence", pa.float32()), ("confidence_raw", pa.float32()), ("chars", pa.int32()),
                     ("chosen", pa.bool_()), ("reason", pa.string())])

PAGES = Table("pages", version=8, columns=[
    col("doc_id", pa.string(), "sha256 of the source URI and its content fingerprint"),
    col("source_uri", pa.string(), "the book's URI, as in `documents`: the PDF, or the folder of page images"),
    col("page_index", pa.int32(), "page in the source document, 0-based"),
    col("side", pa.string(), "null, or left/right for a split two-page spread"),
    col("status", pa.string(), "ok | blank | error"),
    col("error", pa.string(), "why the page failed: exception type and message, or the bad input named"),
    col("error_kind", pa.string(), "transient (worth retrying) | permanent (bad data); null when no error"),
    col("attempts_made", pa.int16(), "tries of the page's object read and OCR call, the most of either (1: no retry)"),
    # image
    col("image_origin", pa.string(), "embedded | rendered | image-file"),
    col("dpi", pa.float32(), "of the page image as loaded: the embedded scan's, the render's, or the image file's own; null when unknown"),
    col("source_width", pa.int32(), "of the page image as loaded"),
    col("source_height", pa.int32(), "of the page image as loaded"),
    col("width", pa.int32(), "of the cleaned image the engine read"),
    col("height", pa.int32(), "of the cleaned image the engine read"),
    col("pdf_transform", pa.list_(pa.float64()),
        "a, b, tx, c, d, ty: loaded-image pixels -> PDF points of the source page (unrotated page space); null for image files"),
    # cleaning and segmentation decisions
    col("orientation", pa.int16(), "degrees clockwise the page was turned to make it upright"),
    col("orientation_confidence", pa.float32(), "0..1, decided per page after a spread split; the page is turned only when confident"),
    col("deskew_angle", pa.float32(), "measured tilt, degrees counter-clockwise"),
    col("crop_box", BOX, "x0, y0, x1, y1 of the crop in the loaded image"),
    col("illumination", pa.string(), "flattened (uneven lighting evened out) | even | none (not measured: step off, blank or failed page)"),
    col("ink_ratio", pa.float32(), "share of the cleaned page that is ink, 0..1 (measured on a downscaled copy); 0 when not measured"),
    col("n_columns", pa.int16(), "text columns found by segmentation; 0 when the step is off"),
    col("n_lines", pa.int32(), "text lines found by segmentation; 0 when the step is off"),
    col("blocks", pa.list_(BOX), "text blocks found by segmentation, x0, y0, x1, y1 in the cleaned image, reading order"),
    col("text_density", pa.float32(), "estimated characters per megapixel"),
    col("est_chars", pa.int32(), "estimated characters on the page"),
    col("curvature", pa.float32(), "largest departure of the text lines from straight, in x-heights, before dewarping"),
    col("dewarped", pa.bool_(), "the page was flattened (curvature over the threshold)"),
    col("x_height", pa.float32(), "median x-height of the text in pixels of the scan; null when no text line was found"),
    col("upscale", pa.float32(), "factor the page was enlarged by before OCR (text too small for the engine); 1 if not"),
    col("transforms", pa.string(), "JSON list of the cleaning steps' transforms, loaded image -> cleaned image (workers/prep/transform.py)"),
    # text
    col("text", pa.string(), "the page text as the engine read it"),
    col("confidence", pa.float32(), "page confidence, 0..1: for Tesseract the probability that the page is good (CER <= 3%), calibrated; else the engine's own"),
    col("confidence_raw", pa.float32(), "the engine's own page confidence (mean of line confidences weighted by length)"),
    col("confidence_min", pa.float32(), "least confident line"),
    col("lines", pa.list_(LINE), "box: cleaned page; box_source: the loaded page image; words: [] when the engine locates none"),
    col("box_level", pa.string(), "words | lines | none: the finest level the page's text is located at; none = page text without boxes"),
    col("box_alignment", BOX_ALIGNMENT,
        "text-only engines with `boxes: tesseract` (else null): the engine that located the words; how many of the "
        "engine's words got a measured word box (words), only their line's box (lines), no box (none); error: why "
        "the page has no boxes (Tesseract failed on it), null when placed; Tesseract's and the alignment's ms"),

    # book text (folioscan/text): furniture found across the book, kept here, out of documents.text
    col("header", pa.string(), "running header line(s) of the page, removed from the book's reading text"),
    col("footer", pa.string(), "running footer, bottom page number or signature mark, removed from the reading text"),
    col("printed_page_number", pa.string(), "page number as printed (\"35\", \"xiv\"); null when none was found"),
    col("language", pa.string(), "ISO 639-1 of the page's body text"),
    col("language_share", pa.float32(), "share of the body text's letters in that language"),
    col("lexicon_fraction", pa.float32(), "share of the body's words in the book language's word list"),
    col("repetition", pa.float32(), "share of words inside a repeated word 5-gram (0 none, 1 a loop)"),
    col("ocr_quality", pa.float32(), "0..1 from lexicon_fraction, confidence and repetition (folioscan/text/signals.py)"),
    col("matter", pa.list_(pa.string()), "front/back matter flags: title, copyright, contents, index, advertisement"),
    # engine
    col("engine", pa.string(), "OCR engine name: tesseract, rapidocr, or the VLM kind; with routing, the engine whose "
                               "reading the row keeps (`routed` pages: the first or the second, see `readings`)"),
    col("engine_version", pa.string(), "engine version with its language data or model (Tesseract: `<version> <lang>:<variant "
                                       "or folder>`); with routing, the kept reading's"),
    col("budget", pa.string(), "budget of the accepted attempt (VLM engines)"),
    col("vision_tokens", pa.int32(), "vision tokens of the accepted attempt (VLM engines)"),
    col("output_tokens", pa.int32(), "text tokens generated by the accepted attempt (VLM engines)"),
    col("compression_ratio", pa.float32(), "output text tokens per vision token"),
    col("attempts", pa.list_(ATTEMPT), "every read of the page (routed: the chosen engine's reads)"),
    # routing to a second engine (docs/routing.md); `engine`, `text`, `confidence` are the chosen reading's
    col("routed", pa.bool_(), "the first engine's reading sent the page to the second engine (`route.then`); false without routing"),
    col("route_reason", pa.string(), "why it was routed: `confidence 0.41 < 0.8`, `empty`, `repetition 0.62`, "
                                     "`lexicon 0.31 < 0.5`, `error`; null when not routed"),
    col("readings", pa.list_(READING),
        "routed pages: the first engine's reading, then the second's: engine, engine_version, status, confidence, "
        "confidence_raw, chars, chosen (the one the row keeps), reason (the second reading's: the reverse guard's "
        "finding, e.g. `repetition`, `token-cap`, `error: ...`, `short: 40 chars of ~2000 estimated`, which sent the "
        "row back to the first reading unless the first is worse by that measure (failed, empty, or shorter): then "
        "the second stays chosen with its reason; null when the guard found nothing, and always null on the first "
        "reading, whose reason is `route_reason`); null when not routed"),
    col("unchosen_text", pa.string(), "routed pages: the text of the reading not kept; null when not routed"),
    # timings, milliseconds
    col("load_ms", pa.float32(), "reading, decoding or rendering the page (ms)"),
    col("prep_ms", pa.float32(), "cleaning and segmenting the page (ms)"),
    col("ocr_ms", pa.float32(), "OCR time of the page: its batch's time shared over the batch's pages, or its own when read alone (ms)"),
    col("completed_at", pa.timestamp("us", tz="UTC"),
        "when the page's result was made (its OCR call ended, or its error was recorded), the worker's clock; "
        "the summary's and the report's pages/s come from it"),
    col("run_id", pa.string(), "the run that committed the row (OUTPUT/_runs/<run_id>.json holds its config)"),
])

PAGES_SCHEMA, PAGES_VERSION = PAGES.schema, PAGES.version
