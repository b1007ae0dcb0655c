from pmd.teacher import RateLimitedWarning, build_teacher_text


def test_exact_teacher_text_with_memory():
    text = build_teacher_text("Calculate 2 + 3.", "Strategy (seen 2x): add carefully.", "", "")
    assert text == (
        "Calculate 2 + 3.\nNotes from your earlier practice on this and similar problems:\n"
        "Strategy (seen 2x): add carefully.\n\n\nCorrectly solve the original question.\n"
    )


def test_teacher_text_without_memory_matches_sdpo_template():
    from trl.experimental.sdpo import SDPOConfig

    default = SDPOConfig.__dataclass_fields__["reprompt_template"].default
    assert build_teacher_text("Q", "", "S", "F") == default.format(prompt="Q", solution="S", feedback="F")


def test_rate_limited_warning(caplog):
    warn = RateLimitedWarning(interval=1000)
    assert warn("k", "first") is True
    assert warn("k", "second") is False
    assert warn("other", "third") is True
