import pytest

from pmd.config import EnvConfig, TaskConfig
from pmd.envs import EnvironmentSuite
from pmd.envs.reasoning_gym import ReasoningGymEnvironment
from pmd.errors import ConfigError

PARAMS = dict(min_terms=2, max_terms=2, min_digits=1, max_digits=1)


@pytest.fixture(scope="module")
def env():
    return ReasoningGymEnvironment("basic_arithmetic", PARAMS, train_size=40, eval_size=20, seed=0)


def test_splits_are_disjoint_and_sized(env):
    train, held = env.problems("train"), env.problems("eval")
    assert len(train) == 40 and len(held) == 20
    assert not {p.question for p in train} & {p.question for p in held}
    assert len({p.uid for p in train + held}) == 60


def test_deterministic(env):
    again = ReasoningGymEnvironment("basic_arithmetic", PARAMS, train_size=40, eval_size=20, seed=0)
    assert [p.question for p in again.problems("eval")] == [p.question for p in env.problems("eval")]
    other = ReasoningGymEnvironment("basic_arithmetic", PARAMS, train_size=40, eval_size=20, seed=1)
    assert [p.question for p in other.problems("eval")] != [p.question for p in env.problems("eval")]


def test_verify_correct_wrong_and_unformatted(env):
    p = env.problems("train")[0]
    right = env.verify(p, f"Let me compute.\nAnswer: {p.answer}")
    assert right.passed and right.reward == 1.0 and right.format_ok
    assert right.feedback.startswith("Correct.")

    wrong = env.verify(p, "Answer: 99999")
    assert not wrong.passed and wrong.reward == 0.0 and wrong.format_ok
    assert "'99999'" in wrong.feedback and wrong.feedback.startswith("Wrong answer:")

    loose = env.verify(p, f"I computed {p.answer} here.\nDone")
    assert not loose.passed and loose.reward == 0.0 and not loose.format_ok
    assert loose.details["lenient_correct"] is True
    assert loose.feedback.startswith("No gradable answer:")


def test_feedback_never_leaks_gold_answer_unless_asked():
    env = ReasoningGymEnvironment("basic_arithmetic", PARAMS, train_size=30, eval_size=5)
    for p in env.problems("train"):
        v = env.verify(p, "Answer: 77777")
        assert "correct answer" not in v.feedback
    leaky = ReasoningGymEnvironment("basic_arithmetic", PARAMS, train_size=5, eval_size=5, reveal_answer_in_feedback=True)
    p = leaky.problems("train")[0]
    assert f"The correct answer is {p.answer}" in leaky.verify(p, "Answer: 77777").feedback


def test_lenient_credit_is_configurable():
    env = ReasoningGymEnvironment("basic_arithmetic", {**PARAMS, "lenient_credit": 0.5}, train_size=5, eval_size=5)
    p = env.problems("train")[0]
    v = env.verify(p, f"it is {p.answer}")
    assert v.reward == 0.5 and not v.passed


def test_verify_never_raises_on_garbage(env):
    p = env.problems("train")[0]
    for text in ["", "\x00\x01", "Answer:", "\\boxed{", "Answer: " + "9" * 5000]:
        verdict = env.verify(p, text)
        assert verdict.reward == 0 and not verdict.passed, (text[:20], verdict)


def test_unknown_family_and_bad_params():
    with pytest.raises(ConfigError, match="unknown reasoning-gym task 'nope'"):
        ReasoningGymEnvironment("nope")
    with pytest.raises(ConfigError, match="invalid generator params"):
        ReasoningGymEnvironment("basic_arithmetic", {"min_terms": "x"}, train_size=2, eval_size=2)


def test_suite_routes_by_problem():
    cfg = EnvConfig(tasks=[TaskConfig(name="basic_arithmetic", params=PARAMS),
                           TaskConfig(name="chain_sum", params=PARAMS)], train_size=5, eval_size=5)
    suite = EnvironmentSuite.from_config(cfg)
    fams = {p.family for p in suite.problems("eval")}
    assert fams == {"basic_arithmetic", "chain_sum"}
    for p in suite.problems("train"):
        assert suite.verify(p, f"Answer: {p.answer}").passed


def test_bad_params_for_other_kinds_name_the_task():
    with pytest.raises(ConfigError, match=r"bad params \['colour'\]"):
        EnvironmentSuite.from_config(EnvConfig(tasks=[TaskConfig(kind="code", name="he", params={"colour": "red"})]))
    with pytest.raises(ConfigError, match="needs a name"):
        EnvironmentSuite.from_config(EnvConfig(tasks=[TaskConfig(kind="reasoning_gym")]))


def test_verdicts_carry_the_extracted_answer_and_failure_kind(env):
    p = env.problems("train")[0]
    assert (env.verify(p, f"Answer: {p.answer}").failure_kind, env.verify(p, f"Answer: {p.answer}").extracted) == \
        ("", p.answer)
    wrong = env.verify(p, "Work.\nAnswer: 99999")
    assert (wrong.failure_kind, wrong.extracted) == ("wrong_value", "99999")
    loose = env.verify(p, f"I computed {p.answer} here.\nDone")
    assert (loose.failure_kind, loose.extracted) == ("format", None)
    nothing = env.verify(p, "I do not know.")
    assert (nothing.failure_kind, nothing.extracted) == ("no_answer", None)


def test_wrong_formatted_answers_give_a_lesson_that_names_the_failure(env):
    """Regression: feedback used to open with "Format: followed", so repeated wrong answers became that 'lesson'.
    The lesson now comes from the structured failure kind, identical across problems."""
    from pmd.memory.reflect import LESSON_TEXTS, FeedbackStatsReflector
    from pmd.memory.store import Experience

    lessons = set()
    for p in env.problems("train")[:2]:
        exps = []
        for i, reply in enumerate(["Answer: 99999", "So the answer is \\boxed{88888}", "Answer: 77777"]):
            v = env.verify(p, reply)
            exps.append(Experience(problem_uid=p.uid, family=p.family, prompt=p.question, response=reply,
                                   reward=v.reward, passed=v.passed, feedback=v.feedback, step=0,
                                   sample_index=i, answer=v.extracted, failure_kind=v.failure_kind, id=i))
        drafts = FeedbackStatsReflector().reflect({p.uid: exps}).insights
        lessons |= {(d.tag, d.text) for d in drafts if d.kind == "lesson"}
    assert lessons == {("wrong_value", LESSON_TEXTS["wrong_value"])}
