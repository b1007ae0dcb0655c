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
    assert m["self_distillation/reprompt_sample_fraction"] == 0.5
    assert "self_distillation/teacher_active_fraction" not in m  # one value, one name (TRL's)
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


def test_feedback_only_without_solution_as_trl():
    """SDPO's `environment_feedback_only_without_solution`: feedback only where no demonstration is shown."""
    s = PlanSettings(group_size=2, success_threshold=1.0, feedback_only_without_solution=True)
    plans = plan_teachers([1.0, 0.0, 0.0, 0.0], ["ok", "Wrong.", "Wrong.", None], [""] * 4, s)
    assert [(p.demo, p.feedback, p.active) for p in plans] == [
        (None, "ok", True), (0, None, True), (None, "Wrong.", True), (None, None, False)]


# ------------------------------------------------------------------------------------------- fitting the limit

from pmd.teacher import TeacherParts, cut_plan, fit_teacher_prompt, shorten  # noqa: E402


def words(text):
    return text.split()


def render_words(problem):
    """A tiny 'tokenizer' (one token per word) and renderer: problem, memory, demo, feedback, an instruction."""
    def tokens_of(parts):
        text = " ".join(x for x in (problem, parts.memory, parts.demo or "", parts.feedback or "", "Solve it.") if x)
        return words(text)
    return tokens_of


def test_cut_plan_takes_memory_first_then_demo_then_feedback_then_the_problem():
    sizes = {"memory": 5, "demo": 4, "feedback": 3}
    assert cut_plan(0, sizes) == {"memory": 0, "demo": 0, "feedback": 0, "problem": 0}
    assert cut_plan(3, sizes) == {"memory": 3, "demo": 0, "feedback": 0, "problem": 0}
    assert cut_plan(7, sizes) == {"memory": 5, "demo": 2, "feedback": 0, "problem": 0}
    assert cut_plan(14, sizes) == {"memory": 5, "demo": 4, "feedback": 3, "problem": 2}


def test_shorten_memory_by_whole_lines_and_text_by_tokens():
    decode = " ".join
    assert shorten("a b\nc d\ne f", 2, words, decode, by_lines=True) == "a b\nc d"
    assert shorten("a b\nc d\ne f", 3, words, decode, by_lines=True) == "a b"  # no half line
    assert shorten("a b c d", 3, words, decode) == "a"
    assert shorten("a b", 5, words, decode) == ""


def test_fit_keeps_the_problem_and_cuts_memory_first():
    problem = "What is 9 - 2 ?"  # 6 tokens, + 2 for "Solve it."
    parts = TeacherParts(memory="Lesson: one\nLesson: two\nLesson: three", demo="Answer: 7 because", feedback="Wrong.")
    tokens_of = render_words(problem)
    assert len(tokens_of(parts)) == 6 + 6 + 3 + 1 + 2
    ids, cut = fit_teacher_prompt(parts, 16, tokens_of, words, " ".join)
    assert cut == {"memory"} and ids[:6] == words(problem) and len(ids) <= 16
    assert "two" in ids and "three" not in ids  # memory's last line went, whole
    ids, cut = fit_teacher_prompt(parts, 11, tokens_of, words, " ".join)
    assert cut == {"memory", "demo"} and ids[:6] == words(problem)
    assert "Lesson:" not in ids and ids[6:8] == ["Answer:", "7"]
    ids, cut = fit_teacher_prompt(parts, 4, tokens_of, words, " ".join)  # even the bare problem does not fit
    assert cut == {"memory", "demo", "feedback", "problem"} and ids == ["2", "?", "Solve", "it."]  # TRL's left cut
    ids, cut = fit_teacher_prompt(parts, 100, tokens_of, words, " ".join)
    assert cut == set() and ids == tokens_of(parts)


# ------------------------------------------------------------------------------------------- parity with TRL


def word_tokenizer():
    """A whitespace word-level tokenizer with a chat template, whose vocabulary holds <think> as one word."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from conftest import CHAT_TEMPLATE

    vocab = ["<unk>", "<pad>", "<|im_start|>", "<|im_end|>", "<think>", "</think>", "Answer:", "4", "5", "Wrong.",
             "Q1", "Q2", "Lesson:", "add", "Correct", "solution:", "hmm"]
    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="<|im_end|>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def fake_trainer(tok, **overrides):
    """What both builders read of an SDPOTrainer, on one process."""
    import dataclasses
    from types import SimpleNamespace

    import torch
    from trl.experimental.sdpo import SDPOConfig, SDPOTrainer

    defaults = {f.name: f.default for f in dataclasses.fields(SDPOConfig) if f.default is not dataclasses.MISSING}
    args = SimpleNamespace(**{**defaults, "success_reward_threshold": 1.0, **overrides})
    acc = SimpleNamespace(device=torch.device("cpu"), process_index=0, gather=lambda t: t,
                          pad_across_processes=lambda t, dim, pad_index: t)
    fake = SimpleNamespace(args=args, accelerator=acc, model=SimpleNamespace(training=True), num_generations=2,
                           state=SimpleNamespace(global_step=0), _tokenizer=tok, processing_class=tok,
                           chat_template_kwargs={})
    fake._tokenize_prompts_untruncated = lambda msgs: SDPOTrainer._tokenize_prompts_untruncated(fake, msgs)
    return fake


class FakeMemory:
    def __init__(self, texts):
        self.texts = texts

    def retrieve(self, uids, step):
        from pmd.memory.retrieve import RetrievedMemory

        return [RetrievedMemory(t, [], len(t.split()), False) for t in self.texts]

    def record(self, step, judged, retrieved):
        pass


def pmd_builder(trainer, memory, judged, demo_choice="best", algo="pmd"):
    """TRL's seam as PMD fills it: the step's teacher_context phase, on a step whose `score` gave `judged`
    (`algo` "sdpo": the same step with no memory phases, and `memory` None)."""
    from pmd.step import Phases, PMDStep, StepRecord
    from pmd.teacher import StepTeacherContext

    step = PMDStep(suite=None, phases=Phases.for_algo(algo), demo_choice=demo_choice).attach(trainer, memory)
    step.record = StepRecord(step=0, judged=judged)
    return StepTeacherContext(trainer, step)


def batch(tok):
    """Two groups of two: group Q1 has a success (with thinking) and a failure; group Q2 two failures."""
    from types import SimpleNamespace

    import torch

    ids = lambda text: tok(text, add_special_tokens=False)["input_ids"]
    rows = [ids("<think> hmm </think> Answer: 4"), ids("Answer: 5"), ids("Answer: 5 5"), ids("hmm")]
    width = max(map(len, rows))
    completion_ids = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in rows])
    output = {"completion_ids": completion_ids, "completion_mask": (completion_ids != tok.pad_token_id).long()}
    prompts = [[{"role": "user", "content": q}] for q in ("Q1", "Q1", "Q2", "Q2")]
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0])
    judged = [SimpleNamespace(problem=SimpleNamespace(uid=q), verdict=SimpleNamespace(passed=r == 1.0, reward=r,
                                                                                    feedback=f))
              for q, r, f in zip(("Q1", "Q1", "Q2", "Q2"), rewards.tolist(), ("ok", "Wrong.", "Wrong.", ""))]
    return output, prompts, rewards, judged


@pytest.mark.parametrize("overrides", [
    {},
    {"include_environment_feedback": True},
    {"include_environment_feedback": True, "environment_feedback_only_without_solution": True},
    {"include_environment_feedback": True, "remove_thinking_from_demonstration": True},
    {"include_environment_feedback": True, "reprompt_template": "Fix: {feedback}|{solution}|{prompt}"},
    {"use_successful_as_teacher": False, "include_environment_feedback": True},
])
def test_pmd_teacher_prompts_are_trls_when_memory_is_empty(overrides):
    """TRL's builder and PMD's, on the same batch and settings, memory empty: the same tensors, token for token.
    PMD's template is the same with a {memory} field (TRL's default: prompts.REPROMPT_TEMPLATE). Within
    max_reprompt_len only: over it, PMD cuts the demonstration and feedback before the problem, TRL the problem."""
    import torch
    from trl.experimental.sdpo.sdpo_trainer import SuccessfulRolloutTeacherContextBuilder

    from pmd.prompts import REPROMPT_TEMPLATE
    from pmd.rewards import failure_feedback

    tok = word_tokenizer()
    output, prompts, rewards, judged = batch(tok)
    trl_trainer = fake_trainer(tok, **overrides)
    template = overrides.get("reprompt_template")
    pmd_template = REPROMPT_TEMPLATE if template is None else template.replace("{prompt}", "{prompt}{memory}")
    pmd_trainer = fake_trainer(tok, **{**overrides, "reprompt_template": pmd_template})
    theirs = SuccessfulRolloutTeacherContextBuilder(trl_trainer).build(output, prompts, rewards,
                                                                        feedbacks=failure_feedback(judged, 1.0))
    builder = pmd_builder(pmd_trainer, FakeMemory([""] * 4), judged)
    ours = builder.build(output, prompts, rewards)
    for key in ("teacher_input_ids", "teacher_attention_mask", "self_distillation_mask"):
        assert torch.equal(ours[key], theirs[key]), key
    assert ours["self_distillation_mask"].sum() > 0  # something was reprompted in every case


def test_memory_lands_in_its_field_and_thinking_is_removed():
    from pmd.prompts import memory_block

    tok = word_tokenizer()
    output, prompts, rewards, judged = batch(tok)
    trainer = fake_trainer(tok, reprompt_template="{memory}|{prompt}|{solution}|{feedback}",
                           remove_thinking_from_demonstration=True, include_environment_feedback=True,
                           environment_feedback_only_without_solution=True)
    builder = pmd_builder(trainer, FakeMemory(["Lesson: add"] * 4), judged)
    plans = plan_teachers(rewards.tolist(), ["Wrong."] * 4, ["Lesson: add"] * 4,
                          PlanSettings.from_args(trainer.args, 2))
    render = builder.step.renderer
    text = render.prompt(prompts[1], render.parts(plans[1], output["completion_ids"]))[-1]["content"]
    solution = trainer.args.solution_template.format(successful_previous_attempt="Answer: 4")
    assert text == f"{memory_block('Lesson: add')}|Q1|{solution}|"  # no thinking; no feedback beside a solution
    result = builder.build(output, prompts, rewards)
    assert result["self_distillation_mask"].tolist() == [1.0] * 4  # memory alone activates Q2's teacher
    assert builder.last_metrics["pmd/teacher_memory_cut_fraction"] == 0.0


def test_an_over_long_teacher_prompt_loses_memory_not_the_problem():

    tok = word_tokenizer()
    output, prompts, rewards, judged = batch(tok)
    memory = "\n".join(["Lesson: add add add"] * 6)
    from pmd.prompts import REPROMPT_TEMPLATE

    trainer = fake_trainer(tok, max_reprompt_len=30, reprompt_template=REPROMPT_TEMPLATE)
    builder = pmd_builder(trainer, FakeMemory([memory] * 4), judged)
    result = builder.build(output, prompts, rewards)
    m = builder.last_metrics
    assert m["pmd/teacher_memory_cut_fraction"] == 1.0 and m["pmd/teacher_problem_cut_fraction"] == 0.0
    width = output["completion_ids"].shape[1]
    for row, q in zip(result["teacher_input_ids"], ("Q1", "Q1", "Q2", "Q2")):
        prompt = [t for t in row[:-width].tolist() if t != tok.pad_token_id]
        assert len(prompt) <= 30 and tok.convert_tokens_to_ids(q) in prompt


@pytest.mark.parametrize("algo, template, needle", [
    ("pmd", "{prompt}{solution}{feedback}", "has none; put {memory} where the notes should go"),
    ("sdpo", "{prompt}{memory}{solution}", "unknown field {memory}"),
    ("pmd", "{prompt}{memory}{answer}", "unknown field {answer}"),
    ("pmd", "{prompt{memory}", "not a valid format string"),
])
def test_reprompt_template_is_checked_when_the_config_loads(algo, template, needle):
    from pmd.config import load_config
    from pmd.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        load_config(None, [f"train.algo={algo}", f"train.trl={{reprompt_template: '{template}'}}"])
    assert needle in str(info.value) and "\n" not in str(info.value)



# ------------------------------------------------------------------------------------------- the placebo control


def memory_loop(store, **memory):
    """A real MemoryLoop over `store` on the `batch` problems (Q1, Q2), counting words as tokens."""
    from types import SimpleNamespace

    from pmd.config import MemoryConfig
    from pmd.envs.base import Problem
    from pmd.memory.loop import MemoryLoop

    suite = SimpleNamespace(problem=lambda uid: Problem(uid=uid, family=uid, question=uid),  # two unrelated families
                            format_prompt=lambda p: p.question)
    return MemoryLoop(store, MemoryConfig(**memory), suite, lambda text: len(words(text)), reflector=None)


def recording(prompt, texts: list):
    """`TeacherRenderer.prompt` that also keeps each teacher's user text, as rendered for tokenizing."""
    def wrapped(original, parts):
        out = prompt(original, parts)
        texts.append(out[-1]["content"])
        return out
    return wrapped


def test_placebo_teacher_is_active_on_pmds_rows_and_reads_none_of_the_retrieved_text(tmp_path):
    """pmd-placebo on the same batch and memory as pmd: the same self_distillation_mask (memory alone activates Q2's
    teacher in both), and every teacher prompt holds PLACEBO_MEMORY where pmd's holds the retrieved lines."""
    from pmd.memory.store import Experience, MemoryStore
    from pmd.prompts import PLACEBO_MEMORY

    tok = word_tokenizer()
    output, prompts, rewards, judged = batch(tok)
    with MemoryStore(tmp_path / "memory.db") as store:  # memory for Q2 only (a step after the one being trained)
        [fail] = store.add_experiences([Experience("Q2", "Q2", "Q2", "The sum is nine", 0.0, False,
                                                   "Wrong answer: nine.", 1, 0)])
        store.upsert_insight("Q2", "Q2", "lesson", "Carry the tens digit before adding.", "policy", [fail], 1)
        seen: dict[str, list] = {}
        results, metrics, retrieved = {}, {}, {}
        for content in ("retrieved", "placebo"):
            trainer = fake_trainer(tok, reprompt_template="{memory}|{prompt}|{solution}|{feedback}")
            builder = pmd_builder(trainer, memory_loop(store, content=content), judged)
            builder.step.renderer.prompt = recording(builder.step.renderer.prompt, seen.setdefault(content, []))
            results[content] = builder.build(output, prompts, rewards)
            metrics[content], retrieved[content] = builder.last_metrics, builder.step.record.retrieved
    real_lines = retrieved["retrieved"][2].text.split("\n")
    assert any("Carry the tens digit" in line for line in real_lines) and any("nine" in line for line in real_lines)
    mask = results["retrieved"]["self_distillation_mask"].tolist()
    assert mask == [0.0, 1.0, 1.0, 1.0]  # Q1: the failure has a demonstration; Q2: memory alone; row 0: nothing
    assert results["placebo"]["self_distillation_mask"].tolist() == mask
    for key in ("self_distillation/reprompt_sample_fraction", "pmd/memory_only_active_fraction",
                "pmd/memory_context_fraction"):
        assert metrics["placebo"][key] == metrics["retrieved"][key]
    assert metrics["placebo"]["pmd/memory_only_active_fraction"] == 0.5
    assert [m.text for m in retrieved["placebo"]] == ["", "", PLACEBO_MEMORY, PLACEBO_MEMORY]
    assert all(m.item_refs == [] for m in retrieved["placebo"])  # logged as seen: no stored item reached it
    for real, placebo in zip(seen["retrieved"], seen["placebo"], strict=True):
        assert not any(line in placebo for line in real_lines)
        assert ("|Q2|" in placebo) == (PLACEBO_MEMORY in placebo)  # Q2's teacher reads the note, Q1's nothing
        assert ("|Q2|" in real) == all(line in real for line in real_lines)

# ------------------------------------------------------------------------------------------- which sibling is shown
# Issue 25, finding 3: TRL shows the first sibling at or above the threshold; with graded rewards (lenient credit) that
# can be an unformatted right value while a strictly correct sibling exists. PMD shows the best (train.demo_choice).


def test_choose_demo_best_takes_the_strict_sibling_first_takes_trls():
    from pmd.teacher import choose_demo

    graded = [0.0, 0.5, 1.0, 0.5]  # 1: right value, no format (lenient credit); 2: strictly correct
    assert choose_demo(graded, [1, 2, 3], 0.5, "best") == 2
    assert choose_demo(graded, [1, 2, 3], 0.5, "first") == 1
    assert choose_demo(graded, [1, 3], 0.5, "best") == 1  # ties: the first, as TRL
    assert choose_demo(graded, [0], 0.5, "best") is None and choose_demo(graded, [0], 0.5, "first") is None
    binary = [0.0, 1.0, 1.0, 0.0]
    for candidates in ([0, 1, 2, 3], [1, 2], [2, 3], [0, 3]):
        assert choose_demo(binary, candidates, 1.0, "best") == choose_demo(binary, candidates, 1.0, "first")


def test_plan_shows_the_best_sibling_and_first_is_trls():
    graded = [0.0, 0.5, 1.0, 0.0]
    best = PlanSettings(group_size=4, success_threshold=0.5)
    first = PlanSettings(group_size=4, success_threshold=0.5, demo_choice="first")
    assert [p.demo for p in plan_teachers(graded, [None] * 4, [""] * 4, best)] == [2, 2, 1, 2]
    assert [p.demo for p in plan_teachers(graded, [None] * 4, [""] * 4, first)] == [1, 2, 1, 1]


def group_of_four(tok, rewards):
    """One group of four rollouts of Q1: nothing, a bare value, a strict answer, a wrong strict answer."""
    from types import SimpleNamespace

    import torch

    ids = lambda text: tok(text, add_special_tokens=False)["input_ids"]
    rows = [ids("hmm"), ids("4"), ids("Answer: 4"), ids("Answer: 5")]
    width = max(map(len, rows))
    completion_ids = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in rows])
    output = {"completion_ids": completion_ids, "completion_mask": (completion_ids != tok.pad_token_id).long()}
    prompts = [[{"role": "user", "content": "Q1"}]] * 4
    judged = [SimpleNamespace(problem=SimpleNamespace(uid="Q1"), verdict=SimpleNamespace(passed=r == 1.0, reward=r,
                                                                                        feedback="Wrong."))
              for r in rewards]
    return output, prompts, torch.tensor(rewards), judged


@pytest.mark.parametrize("rewards, threshold", [([0.0, 1.0, 1.0, 0.0], 1.0), ([1.0, 0.0, 1.0, 1.0], 1.0),
                                                ([0.0, 0.5, 1.0, 0.0], 0.5)])
@pytest.mark.parametrize("choice", ["best", "first"])
@pytest.mark.parametrize("algo", ["pmd", "sdpo"])
def test_demo_choice_against_trls_own_builder(rewards, threshold, choice, algo):
    """TRL's SuccessfulRolloutTeacherContextBuilder.build, run, against the step (PMD with memory empty, or SDPO) on
    one group of four: with binary rewards both choices give TRL's tensors token for token; with graded rewards
    "first" does, and "best" differs exactly where TRL shows the unformatted sibling while a strictly correct one
    exists. SDPO and PMD pick the same sibling, so a comparison's arms differ only in memory."""
    import torch
    from trl.experimental.sdpo.sdpo_trainer import SuccessfulRolloutTeacherContextBuilder

    tok = word_tokenizer()
    output, prompts, reward_t, judged = group_of_four(tok, rewards)
    args = {"success_reward_threshold": threshold, "num_generations": 4}
    trl_trainer, pmd_trainer = fake_trainer(tok, **args), fake_trainer(tok, **args)
    for t in (trl_trainer, pmd_trainer):
        t.num_generations = 4
    from pmd.rewards import failure_feedback

    trl_builder = SuccessfulRolloutTeacherContextBuilder(trl_trainer)
    theirs = trl_builder.build(output, prompts, reward_t, feedbacks=failure_feedback(judged, threshold))
    memory = FakeMemory([""] * 4) if algo == "pmd" else None
    context = pmd_builder(pmd_trainer, memory, judged, demo_choice=choice, algo=algo)
    ours = context.build(output, prompts, reward_t)
    if algo == "sdpo":  # no memory keys; TRL's own names for what TRL's builder also logs
        assert not any(k.startswith("pmd/memory") for k in context.last_metrics)
        for key in ("reprompt_sample_fraction", "success_sample_fraction", "success_group_fraction"):
            key = f"self_distillation/{key}"
            assert context.last_metrics[key] == pytest.approx(trl_builder.last_metrics[key])
    graded = len({r for r in rewards if r >= threshold}) > 1
    same = [torch.equal(ours["teacher_input_ids"][i], theirs["teacher_input_ids"][i]) for i in range(4)]
    assert torch.equal(ours["self_distillation_mask"], theirs["self_distillation_mask"])
    if choice == "first" or not graded:
        assert all(same)
    else:  # samples 0 and 3: TRL shows sibling 1 ("4", lenient), PMD sibling 2 ("Answer: 4")
        assert same == [False, True, True, False]
        text = tok.decode(ours["teacher_input_ids"][0], skip_special_tokens=True)
        assert "Answer: 4" in text


def test_demo_choice_is_a_config_option_with_best_by_default():
    from pmd.config import load_config
    from pmd.errors import ConfigError

    assert load_config(None).train.demo_choice == "best"
    assert load_config(None, ["train.demo_choice=first"]).train.demo_choice == "first"
    with pytest.raises(ConfigError, match="demo_choice"):
        load_config(None, ["train.demo_choice=worst"])
