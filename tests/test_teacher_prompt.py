"""The teacher's prompt text and PMD's activation plan, tested as pure functions (no trainer)."""

import pytest

from pmd.prompts import student_text_with_memory, teacher_text
from pmd.teacher import PlanSettings, TeacherPlan, plan_metrics, plan_teachers, remove_thinking


def test_exact_teacher_text_with_memory():
    text = teacher_text("Calculate 2 + 3.", "Strategy (seen 2x): add carefully.", "", "")
    assert text == (
        "Calculate 2 + 3.\nNotes from your earlier practice on this and similar problems:\n"
        "Strategy (seen 2x): add carefully.\n\n\nCorrectly solve the original question.\n"
    )


def test_teacher_text_without_memory_matches_sdpo_template():
    from trl.experimental.sdpo import SDPOConfig

    default = SDPOConfig.__dataclass_fields__["reprompt_template"].default
    assert teacher_text("Q", "", "S", "F") == default.format(prompt="Q", solution="S", feedback="F")


def test_memory_at_inference_uses_the_teachers_memory_block():
    assert student_text_with_memory("Q", "") == "Q"
    assert student_text_with_memory("Q", "Lesson: x.") == teacher_text("Q", "Lesson: x.", "", "").split("\n\nCorrectly")[0]


SDPO = PlanSettings(group_size=2, success_threshold=1.0)


def test_memory_alone_activates_the_teacher():
    """No success, no feedback: SDPO's rule is idle; PMD's teacher is active where memory holds something."""
    plans = plan_teachers([0.0, 0.0, 0.0, 0.0], [None] * 4, ["", "", "Lesson: a", "Lesson: a"], SDPO)
    assert [p.active for p in plans] == [False, False, True, True]
    assert plans[2] == TeacherPlan(active=True, demo=None, feedback=None, memory="Lesson: a")
    m = plan_metrics(plans, [0.0] * 4, SDPO)
    assert m["self_distillation/teacher_active_fraction"] == 0.5
    assert m["pmd/sdpo_teacher_active_fraction"] == 0.0
    assert m["pmd/memory_only_active_fraction"] == 0.5
    assert m["pmd/memory_context_fraction"] == 0.5


def test_sibling_demonstration_is_the_first_successful_other_rollout():
    plans = plan_teachers([1.0, 0.0, 1.0, 1.0], [None, "Wrong answer.", None, None], [""] * 4, SDPO)
    assert [p.demo for p in plans] == [None, 0, 3, 2]  # never its own demonstration; groups are [0,1] and [2,3]
    assert [p.active for p in plans] == [False, True, True, True]
    assert plans[1].feedback == "Wrong answer."
    m = plan_metrics(plans, [1.0, 0.0, 1.0, 1.0], SDPO)
    assert m["self_distillation/success_group_fraction"] == 1.0
    assert m["self_distillation/success_sample_fraction"] == 0.75
    assert m["self_distillation/feedback_used_fraction"] == 0.25


def test_self_demonstration_when_allowed_and_threshold():
    s = PlanSettings(group_size=2, success_threshold=0.5, dont_reprompt_on_self_success=False)
    plans = plan_teachers([0.5, 0.4], [None, None], ["", ""], s)
    assert [p.demo for p in plans] == [0, 0]


def test_feedback_switches_and_blank_feedback():
    off = PlanSettings(group_size=2, success_threshold=1.0, include_feedback=False)
    assert not any(p.active for p in plan_teachers([0.0, 0.0], ["Wrong.", "Wrong."], ["", ""], off))
    plans = plan_teachers([0.0, 0.0], ["  ", "Wrong."], ["", ""], SDPO)
    assert [p.feedback for p in plans] == [None, "Wrong."]
    no_demo = PlanSettings(group_size=2, success_threshold=1.0, use_successful_as_teacher=False)
    assert [p.demo for p in plan_teachers([1.0, 1.0], [None, None], ["", ""], no_demo)] == [None, None]


def test_plan_rejects_misaligned_inputs():
    with pytest.raises(ValueError, match="3 rewards, 2 feedbacks"):
        plan_teachers([0.0, 0.0, 0.0], [None, None], ["", ""], SDPO)


def test_remove_thinking():
    assert remove_thinking("<think>scratch\nwork</think> Answer: 4") == "Answer: 4"
