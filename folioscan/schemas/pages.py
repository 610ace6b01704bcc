"""The `pages` table: one row per output page (a split spread gives two rows)."""
import pyarrow as pa

from folioscan.schemas.table import Table, col

BOX = pa.list_(pa.int32())  # [x0, y0, x1, y1] in pixels of the cleaned page image

LINE = pa.struct([("text", pa.string()), ("confidence", pa.float32()), ("box", BOX)])

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
    ]
)

PAGES = Table("pages", version=3, columns=[
    col("doc_id", pa.string(), "sha256 of the source URI and its content fingerprint"),
    col("source_uri", pa.string()),
    col("page_index", pa.int32(), "page in the source document, 0-based"),
    col("side", pa.string(), "null, or left/right for a split two-page spread"),
    col("status", pa.string(), "ok | blank | error"),
    col("error", pa.string(), "why the page failed: exception type and message, or the bad input named"),
    col("error_kind", pa.string(), "transient (worth retrying) | permanent (bad data); null when no error"),
    col("attempts_made", pa.int16(), "tries of the page's object read and OCR call, the most of either (1: no retry)"),
    # image
    col("image_origin", pa.string(), "embedded | rendered | image-file"),
    col("dpi", pa.float32()),
    col("source_width", pa.int32(), "of the page image as loaded"),
    col("source_height", pa.int32()),
    col("width", pa.int32(), "of the cleaned image the engine read"),
    col("height", pa.int32()),
    # cleaning and segmentation decisions
    col("orientation", pa.int16(), "degrees clockwise the page was turned to make it upright"),
    col("deskew_angle", pa.float32(), "measured tilt, degrees counter-clockwise"),
    col("crop_box", BOX, "x0, y0, x1, y1 of the crop in the loaded image"),
    col("illumination", pa.string()),
    col("ink_ratio", pa.float32()),
    col("n_columns", pa.int16()),
    col("n_lines", pa.int32()),
    col("blocks", pa.list_(BOX)),
    col("text_density", pa.float32(), "estimated characters per megapixel"),
    col("est_chars", pa.int32(), "estimated characters on the page"),
    # text
    col("text", pa.string(), "the page text as the engine read it"),
    col("confidence", pa.float32(), "page confidence, 0..1"),
    col("confidence_min", pa.float32(), "least confident line"),
    col("lines", pa.list_(LINE)),
    # engine
    col("engine", pa.string()),
    col("engine_version", pa.string()),
    col("budget", pa.string(), "budget of the accepted attempt (VLM engines)"),
    col("vision_tokens", pa.int32()),
    col("output_tokens", pa.int32()),
    col("compression_ratio", pa.float32(), "output text tokens per vision token"),
    col("attempts", pa.list_(ATTEMPT), "every read of the page"),
    # timings, milliseconds
    col("load_ms", pa.float32()),
    col("prep_ms", pa.float32()),
    col("ocr_ms", pa.float32()),
    col("run_id", pa.string()),
])

PAGES_SCHEMA, PAGES_VERSION = PAGES.schema, PAGES.version
