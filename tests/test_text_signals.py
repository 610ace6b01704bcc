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


def _repetition_by_counting(text: str, n: int = 5) -> float:
    """The definition, spelt out: a counter of word n-gram tuples (repetition_score's form before issue 18)."""
    from collections import Counter

    ws = [w.lower() for w in text.split()]
    if len(ws) < 2 * n:
        return 0.0
    grams = [tuple(ws[i:i + n]) for i in range(len(ws) - n + 1)]
    counts = Counter(grams)
    covered = [False] * len(ws)
    for i, g in enumerate(grams):
        if counts[g] > 1:
            covered[i:i + n] = [True] * n
    return round(sum(covered) / len(ws), 4)


def test_repetition_score_is_the_share_of_words_in_repeated_n_grams():
    import random

    rng = random.Random(7)
    texts = ["", "a b c", ENGLISH, ENGLISH + " " + ENGLISH, "The the THE the the tHe the the the the"]
    for _ in range(400):
        vocab = [f"w{i}" for i in range(rng.choice([2, 3, 8, 50]))] + ["Über", "über", "ÜBER."]
        words = [rng.choice(vocab) for _ in range(rng.randint(0, 60))]
        if len(words) > 12 and rng.random() < 0.4:
            words += words[2:11]  # one passage repeated
        texts.append(rng.choice([" ", "\n", " \t "]).join(words))
    for n in (5, 2, 7):
        got = [repetition_score(t, n) for t in texts]
        assert got == [_repetition_by_counting(t, n) for t in texts]
    assert len({repetition_score(t) for t in texts}) > 20  # the cases are not all 0 or 1
