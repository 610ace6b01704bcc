"""The `pages` table: one row per output page (a split spread gives two rows)."""
import pyarrow as pa

PAGES_VERSION = 1

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

PAGES_SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("source_uri", pa.string()),
        ("page_index", pa.int32()),  # page in the source document, 0-based
        ("side", pa.string()),  # null, or "left"/"right" for a split two-page spread
        ("status", pa.string()),  # "ok" | "blank" | "error"
        ("error", pa.string()),
        # image
        ("image_origin", pa.string()),  # "embedded" | "rendered" | "image-file"
        ("dpi", pa.float32()),
        ("source_width", pa.int32()),
        ("source_height", pa.int32()),
        ("width", pa.int32()),  # of the cleaned image the engine read
        ("height", pa.int32()),
        # cleaning and segmentation decisions
        ("orientation", pa.int16()),
        ("deskew_angle", pa.float32()),
        ("crop_box", BOX),
        ("illumination", pa.string()),
        ("ink_ratio", pa.float32()),
        ("n_columns", pa.int16()),
        ("n_lines", pa.int32()),
        ("blocks", pa.list_(BOX)),
        ("text_density", pa.float32()),
        ("est_chars", pa.int32()),
        # text
        ("text", pa.string()),
        ("confidence", pa.float32()),
        ("confidence_min", pa.float32()),
        ("lines", pa.list_(LINE)),
        # engine
        ("engine", pa.string()),
        ("engine_version", pa.string()),
        ("budget", pa.string()),  # budget of the accepted attempt (VLM engines)
        ("vision_tokens", pa.int32()),
        ("output_tokens", pa.int32()),
        ("compression_ratio", pa.float32()),  # output text tokens per vision token
        ("attempts", pa.list_(ATTEMPT)),
        # timings, milliseconds
        ("load_ms", pa.float32()),
        ("prep_ms", pa.float32()),
        ("ocr_ms", pa.float32()),
        ("run_id", pa.string()),
    ]
)
