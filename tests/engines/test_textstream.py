from llmhost.engines.textstream import StopStringMatcher


def feed(matcher: StopStringMatcher, pieces: list[bytes]) -> str:
    return "".join(matcher.push(p) for p in pieces)


def test_no_stop_passes_text_through():
    m = StopStringMatcher(())
    assert feed(m, [b"Hel", b"lo"]) + m.flush() == "Hello"


def test_holds_a_possible_stop_prefix_then_releases_it():
    m = StopStringMatcher(["STOP"])
    assert m.push(b"abc S") == "abc "
    assert m.push(b"T") == ""
    assert m.push(b"ay") == "STay"
    assert m.stopped_by is None


def test_stop_split_across_tokens_is_cut():
    m = StopStringMatcher(["</python>"])
    out = feed(m, [b"print(1)</py", b"tho", b"n> more"])
    assert out == "print(1)"
    assert m.stopped_by == "</python>"
    assert m.push(b"later") == "" and m.flush() == ""


def test_include_stop_and_earliest_stop_wins():
    m = StopStringMatcher(["bb", "a"], include_stop=True)
    assert feed(m, [b"xxbba"]) == "xxbb"
    assert m.stopped_by == "bb"


def test_utf8_split_across_tokens():
    data = "héllo 世界".encode()
    m = StopStringMatcher(())
    out = feed(m, [data[i : i + 1] for i in range(len(data))]) + m.flush()
    assert out == "héllo 世界"


def test_flush_releases_held_text_at_the_end():
    m = StopStringMatcher(["STOP"])
    assert m.push(b"the ST") == "the "
    assert m.flush() == "ST"
