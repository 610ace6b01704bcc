"""DeepSeek-OCR grounding tags become located blocks; untagged or malformed output gets no box."""
from folioscan.workers.engines.grounding import parse, plain_text, to_lines

OUT = ("<|ref|>title<|/ref|><|det|>[[100, 50, 899, 90]]<|/det|>\n# CHAPTER I.\n\n"
       "<|ref|>text<|/ref|><|det|>[[100, 120, 899, 400]]<|/det|>\nIt was the best of times,\nit was the worst of times.\n"
       "<|ref|>image<|/ref|><|det|>[[100, 450, 500, 800], [520, 450, 899, 800]]<|/det|>\n"
       "<|ref|>text<|/ref|><|det|>[[oops]]<|/det|>\nCall me Ishmael.")


def test_grounded_blocks_get_pixel_boxes_from_the_models_own_coordinates():
    blocks = parse(OUT, width=1998, height=999)
    assert [b.kind for b in blocks] == ["title", "text", "image", "text"]
    assert blocks[0].box == (200, 50, 1798, 90) and blocks[0].text == "# CHAPTER I."
    assert blocks[1].text == "It was the best of times,\nit was the worst of times."
    assert blocks[2].box == (200, 450, 1798, 800) and blocks[2].text == ""  # two regions: their union
    assert blocks[3].box is None and blocks[3].text == "Call me Ishmael."  # malformed tag: text kept, no box
    lines = to_lines(blocks, 0.8)
    assert [l.box for l in lines] == [(200, 50, 1798, 90), (200, 120, 1798, 400), ()]
    assert plain_text(blocks).endswith("Call me Ishmael.")


def test_output_without_tags_is_page_text_without_boxes():
    [b] = parse("Free text, no grounding.", 100, 100)
    assert b.box is None and to_lines([b], 0.5)[0].box == ()
