from folioscan.text.signals import language, lexicon_fraction, ocr_quality, repetition_score, signals

ENGLISH = ("The trouble began in the town. An armed mob fell in overwhelming numbers upon the unarmed "
           "villagers, and the quarter near the river was burned before the soldiers arrived from the coast.")
GERMAN = "Der Hund läuft schnell über die Straße und die Katze schläft im Garten neben dem alten Haus."


def test_language_and_share():
    assert language(ENGLISH) == ("en", 1.0)
    assert language(GERMAN)[0] == "de"
    lang, share = language((ENGLISH + "\n") * 3 + GERMAN * 2)
    assert lang == "en" and 0.5 < share < 1.0
    assert language("12 34") == (None, 0.0)


def test_lexicon_fraction_counts_garbage():
    assert lexicon_fraction("the quick brown fox", "en") == 1.0
    assert lexicon_fraction("the qxzv brown fxqj", "en") == 0.5
    assert lexicon_fraction("the fox", "xx") is None


def test_repetition_and_quality():
    assert repetition_score(ENGLISH) == 0.0
    loop = " ".join(["and then he said"] * 20)
    assert repetition_score(loop) > 0.95
    assert ocr_quality(1.0, 1.0, 0.0) == 1.0
    assert ocr_quality(0.5, None, 0.0) == 0.5
    assert ocr_quality(None, None, 0.0) is None
    good, bad = signals(ENGLISH, 0.9), signals(loop, 0.9)
    assert good.ocr_quality > 0.9 > 0.1 > bad.ocr_quality
