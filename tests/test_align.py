"""The word-box alignment (folioscan/workers/engines/align.py): a VLM's text on Tesseract's word boxes."""
import time

from folioscan.workers.engines.align import LINE, NONE, WORD, TessWord, align, normalise

PRINTED = ["It was the best of", "times, it was the exam-", "ple of all the ages."]


def tesseract(lines, dy=40):
    """Tesseract-like words: each printed line at its own height, words 12 px a character apart."""
    out = []
    for k, line in enumerate(lines):
        x = 10
        for t in line.split():
            out.append(TessWord(t, (x, 20 + k * dy, x + 12 * len(t), 50 + k * dy), 0.9, k))
            x += 12 * len(t) + 15
    return out


def by_text(result):
    return {w.text: w for w in result.words}


def test_every_word_of_an_identical_reading_gets_its_own_box_and_lines_follow_the_print():
    tess = tesseract(PRINTED)
    result = align(PRINTED, tess)
    assert result.counts() == {WORD: 15, LINE: 0, NONE: 0}
    assert [p.box for w in result.words for p in w.parts] == [t.box for t in tess]
    assert [l.text for l in result.lines] == PRINTED
    # a line's box is the union of its words' measured boxes
    assert result.lines[0].box == (tess[0].box[0], tess[0].box[1], tess[4].box[2], tess[4].box[3])


def test_a_hyphen_split_across_lines_gives_two_boxed_parts_in_print_order():
    tess = tesseract(PRINTED)
    # the VLM writes one paragraph line and the joined word
    result = align(["It was the best of times, it was the example of all the ages."], tess)
    example = by_text(result)["example"]
    assert example.kind == WORD and [(p.text, p.box) for p in example.parts] == [("exam-", tess[9].box), ("ple", tess[10].box)]
    # the paragraph is cut back into the printed lines
    assert [l.text for l in result.lines] == PRINTED
    assert result.counts()[WORD] == 14


def test_a_misread_word_is_matched_by_character_similarity():
    tess = tesseract(["It wus tbe best of"])
    result = align(["It was the best of"], tess)
    assert result.counts() == {WORD: 5, LINE: 0, NONE: 0}
    assert by_text(result)["was"].parts[0].box == tess[1].box and by_text(result)["the"].parts[0].box == tess[2].box


def test_a_word_read_differently_keeps_its_line_box_only():
    tess = tesseract(["It was the best of"])
    result = align(["It was zzq best of"], tess)
    zzq = by_text(result)["zzq"]
    assert zzq.kind == LINE and zzq.parts[0].box is None
    assert result.lines[0].box == (tess[0].box[0], tess[0].box[1], tess[4].box[2], tess[4].box[3])


def test_a_line_tesseract_missed_has_no_boxes_and_the_rest_is_placed():
    tess = tesseract([PRINTED[0], PRINTED[2]])
    result = align(PRINTED, tess)
    kinds = [w.kind for w in result.words]
    assert kinds[:5] == [WORD] * 5 and kinds[-4:] == [WORD] * 4
    missing = [w for w in result.words if w.vlm_line == 1]
    assert all(w.kind == NONE for w in missing[:-1])  # "exam-" could only match "ple" by chance: it does not
    assert sum(1 for l in result.lines if l.box is None) == 1


def test_words_of_a_missed_line_inside_a_paragraph_are_not_put_on_a_neighbouring_line():
    tess = tesseract([PRINTED[0], PRINTED[2]])
    result = align([" ".join(PRINTED[:2]) + " " + PRINTED[2]], tess)  # one paragraph line, Tesseract missed line 2
    placed = by_text(result)
    assert [placed[w].kind for w in ("times,", "it", "exam-")] == [NONE] * 3
    assert placed["best"].kind == WORD and placed["ages."].kind == WORD
    unboxed = [l for l in result.lines if l.box is None]
    assert [l.text for l in unboxed] == [PRINTED[1]]


def test_a_line_the_vlm_left_out_costs_only_its_words():
    tess = tesseract(PRINTED)
    result = align([PRINTED[0], PRINTED[2]], tess)
    assert result.counts() == {WORD: 10, LINE: 0, NONE: 0}
    assert by_text(result)["ages."].parts[0].box == tess[-1].box


def test_an_extra_line_of_the_vlm_gets_no_invented_box():
    tess = tesseract(PRINTED)
    result = align([PRINTED[0], "Plate XIV facing page", *PRINTED[1:]], tess)
    assert result.counts() == {WORD: 15, LINE: 0, NONE: 4}
    extra = [l for l in result.lines if l.vlm_line == 1]
    assert len(extra) == 1 and extra[0].box is None and all(b is None for _, b in extra[0].words)


def test_blocks_read_in_another_order_are_still_placed():
    left = ["Call me Ishmael. Some years", "ago, never mind how long", "precisely, having little"]
    right = ["or no money in my purse,", "and nothing particular to", "interest me on shore"]
    tess = tesseract(left + right)
    result = align(right + left, tess)  # the VLM read the second block first
    assert result.counts() == {WORD: 27, LINE: 0, NONE: 0}
    assert by_text(result)["Ishmael."].parts[0].box == tess[2].box
    assert by_text(result)["shore"].parts[0].box == tess[-1].box


def test_whitespace_and_punctuation_differences_do_not_matter():
    tess = tesseract(["\u201cWhat will Christendom do", "even now?\u201d asked he."])
    result = align(['  "What   will Christendom', "do even now ?\" asked he"], tess)
    placed = by_text(result)
    assert all(placed[w].kind == WORD for w in ['"What', "will", "Christendom", "do", "even", "asked", "he"])
    assert placed["do"].parts[0].box == tess[3].box
    assert normalise("\u201cWhat") == normalise('"what') == "what" and normalise("?") == "?"


def test_chance_matches_in_tesseracts_noise_place_nothing():
    # old_books e011 as Tesseract reads it upside down: "of"/"Ao", "to"/"to", "any"/"Avy" match by chance
    tess = tesseract(["\u201cAep oy JO Uorysey Ao", "pue ajse} to Sursuvyo-19Ad", "oY} Avy JOISTUIUI"])
    result = align(["writing in praise of the moderate use", "of every-day life to be omitted from any volume"], tess)
    assert result.counts() == {WORD: 0, LINE: 0, NONE: 16}
    assert all(l.box is None for l in result.lines)
    # and the VLM's lines stay as it wrote them: no line breaks taken from a reading that did not match
    assert [l.text for l in result.lines] == ["writing in praise of the moderate use", "of every-day life to be omitted from any volume"]


def test_no_tesseract_words_means_no_boxes():
    result = align(PRINTED, [])
    assert result.counts() == {WORD: 0, LINE: 0, NONE: 15}
    assert [l.text for l in result.lines] == PRINTED and all(l.box is None for l in result.lines)
    assert align([], tesseract(PRINTED)).words == []


def test_a_long_page_aligns_in_well_under_a_second():
    printed = [" ".join(f"word{(k * 13 + i) % 97}x" for i in range(12)) for k in range(60)]  # 720 words
    tess = tesseract(printed)
    t0 = time.perf_counter()
    result = align([" ".join(printed)], tess)
    assert time.perf_counter() - t0 < 2.0  # generous for a loaded CI machine (a 450-word page: ~0.1 s wall here)
    assert result.counts()[WORD] == 720
