from pipeline.text import shown


def test_printable_names_are_unchanged() -> None:
    assert shown("Björk – Jóga.flac") == "Björk – Jóga.flac"
    assert shown("<script>alert(1)</script>.wav") == "<script>alert(1)</script>.wav"


def test_control_characters_are_escaped() -> None:
    assert shown("a\nERROR forged.wav") == "a\\nERROR forged.wav"
    assert shown("\x1b]0;owned\x07x.wav") == "\\x1b]0;owned\\x07x.wav"
    assert "\n" not in shown("x\r\n\t\x00\u2028.ogg") and "\x1b" not in shown("\x1b[2J")
