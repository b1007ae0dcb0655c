"""Every prompt and template a model reads, in one place.

- the student's prompt (system message + the problem, nothing else): training, evaluation and the teacher all
  start from `student_messages`, so the student's view cannot drift apart between them;
- how each task kind states its problem (`Environment.format_prompt`): the answer-format instruction of
  reasoning-gym tasks, SciKnowEval's multiple-choice question, HumanEval's and LiveCodeBench's code questions;
- the teacher's reprompt: the problem + the memory block + SDPO's demonstration and feedback (TRL's
  `solution_template` / `feedback_template` fill those two slots, as in SDPO);
- the memory block and the labels of its lines (what retrieval packs for the teacher);
- memory at inference (an evaluation-only comparison: the student sees the same memory block the teacher saw);
- the reflection prompt for a model-written reflector, and how attempts are shown to it;
- the texts of cross-problem patterns (deterministic consolidation) and the prompt a model answers when it writes
  one (`memory.consolidation.mode: model`).

Keep the wording here: a template changed in one place and not another is a silent train/eval mismatch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

# ------------------------------------------------------------------------------------------- student


def student_messages(system_prompt: str, user_text: str) -> list[dict[str, str]]:
    """Conversational prompt for one problem; `user_text` is the environment's `format_prompt(problem)`."""
    messages = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    messages.append({"role": "user", "content": user_text})
    return messages


# ------------------------------------------------------------------------------------------- task questions

ANSWER_INSTRUCTION = "Give the final result on a line 'Answer: <answer>'."  # reasoning-gym default (env config)
MCQ_BY_WORD = "Finish with a final line of the form 'Answer: X' where X is {choices}."
MCQ_BY_LETTER = "Finish with a final line of the form 'Answer: X' where X is the letter of the correct option."


def mcq_question(question: str, labels: Sequence[str], texts: Sequence[str]) -> str:
    """A multiple-choice question; options listed by letter, or answered by word (true/false) when the labels
    are the options themselves."""
    if list(labels) == list(texts):
        return f"{question}\n\n{MCQ_BY_WORD.format(choices=' or '.join(labels))}"
    listed = "\n".join(f"{label}. {text}" for label, text in zip(labels, texts))
    return f"{question}\n\nOptions:\n{listed}\n\n{MCQ_BY_LETTER}"


def humaneval_question(function_prompt: str) -> str:
    """HumanEval: complete a function given its signature and docstring."""
    return (
        "Complete the following Python function.\n\n"
        f"```python\n{function_prompt}```\n\n"
        "Reply with the complete function (signature included) in a single ```python code block."
    )


def livecodebench_question(question: str, title: str = "", starter_code: str = "") -> str:
    """LiveCodeBench's own prompt wording: functional problems with starter code, else stdin/stdout programs."""
    title = f"{title}\n\n" if title else ""
    if starter_code:
        fmt = ("You will use the following starter code to write the solution to the problem and enclose your "
               f"code within delimiters.\n```python\n{starter_code}\n```")
    else:
        fmt = ("Read the inputs from stdin, solve the problem and write the answer to stdout (do not directly test "
               "on the sample inputs). Enclose your code within delimiters as follows.\n"
               "```python\n# YOUR CODE HERE\n```")
    return (f"### Question:\n{title}{question}\n\n### Format: {fmt}\n\n"
            "### Answer: (use the provided format with backticks)\n")


# ------------------------------------------------------------------------------------------- teacher

MEMORY_BLOCK = "\nNotes from your earlier practice on this and similar problems:\n{memory}\n"
# TRL's default SDPO `reprompt_template` with one more named field, {memory}, between the problem and the
# demonstration; with no memory it is TRL's template exactly (tests/test_teacher_prompt.py checks this). PMD passes
# it to TRL as `reprompt_template`; `train.trl.reprompt_template` replaces it and must then place {memory} itself
# (pmd.trl_args.check_reprompt_template refuses one without it at config load, rather than guess where notes go).
REPROMPT_TEMPLATE = "{prompt}{memory}{solution}{feedback}\n\nCorrectly solve the original question.\n"
REPROMPT_FIELDS = ("prompt", "solution", "feedback")  # SDPO's (TRL's and the reference's) fields
MEMORY_FIELD = "memory"  # PMD's one more field


# a memory block that carries no information (issue 25's placebo control)
PLACEBO_MEMORY = "Notes from earlier practice:\n- Read the problem carefully.\n- Work through it step by step.\n- Check the reply before giving it."


def memory_block(memory: str) -> str:
    """The memory as the teacher reads it ('' when there is none, so no empty heading appears)."""
    return MEMORY_BLOCK.format(memory=memory) if memory else ""


def teacher_text(prompt: str, memory: str, solution: str, feedback: str, template: str = REPROMPT_TEMPLATE) -> str:
    """The exact user text the PMD teacher sees: `template` (the run's `reprompt_template`) with SDPO's fields
    filled as TRL fills them and {memory} with `memory_block(memory)`. `solution` and `feedback` come already
    filled into TRL's `solution_template` / `feedback_template` ('' when absent)."""
    return template.format(prompt=prompt, memory=memory_block(memory), solution=solution, feedback=feedback)


def student_text_with_memory(question: str, memory: str) -> str:
    """Memory at inference (`eval.memory_at_inference`, a comparison only): the problem followed by the same
    memory block the teacher reads, so the comparison measures the memory and not a different wording."""
    return question + memory_block(memory)


# ------------------------------------------------------------------------------------------- memory lines
# One labelled line per retrieved item. The labels tell the teacher where a line comes from and how often it held.

PASSED_ATTEMPT = "A past attempt that passed: "
FAILED_ATTEMPT = "A past attempt that failed (feedback: {feedback}): "
# A success for the teacher (`pmd.rewards.is_success`: reward at the run's success threshold) that the verifier did
# not pass: with the right value but not the required format (failure kind "format"), or otherwise short of a pass.
UNFORMATTED_ATTEMPT = "A past attempt with the right value but not the required answer format: "
SUCCEEDED_ATTEMPT = "A past attempt that succeeded: "


def success_label(passed: bool, failure_kind: str) -> str:
    """The label of a retrieved attempt that is a success for the teacher: 'passed' only when the verifier passed
    it, and a right value without the format named as such, never as a failure."""
    if passed:
        return PASSED_ATTEMPT
    return UNFORMATTED_ATTEMPT if failure_kind == "format" else SUCCEEDED_ATTEMPT
INSIGHT_LINE = "{label}{where}{seen}: {text}"
PATTERN_LINE = "Pattern across problems ({n} problems): {text}"
ELLIPSIS = "[...]"  # marks the elided middle of a shortened attempt


def insight_line(kind: str, text: str, support: int, similar: bool) -> str:
    """'Strategy (seen 2x): …' or 'Lesson from a similar problem: …'."""
    return INSIGHT_LINE.format(
        label="Strategy" if kind == "strategy" else "Lesson",
        where=" from a similar problem" if similar else "",
        seen=f" (seen {support}x)" if support > 1 else "",
        text=text,
    )


def pattern_line(text: str, support_problems: int) -> str:
    return PATTERN_LINE.format(n=support_problems, text=text)


# ------------------------------------------------------------------------------------------- reflection

REFLECTION_PROMPT = """You practised the problem below several times. Study what passed and what failed.

Problem:
{question}

{attempts}
Write at most two short lines, each starting with 'Strategy:' (what led to a correct answer) or 'Lesson:' \
(a recurring mistake to avoid). Write general advice, not the answer itself."""


class Attempt(Protocol):
    """What the reflection prompt shows of one stored attempt (a memory `Experience` has these fields)."""

    passed: bool
    response: str
    feedback: str
    failure_kind: str  # "format": the right value without the required format, shown apart from failures


def format_attempts(attempts: Sequence[Attempt], max_chars: int = 300) -> str:
    """Attempts numbered with their verdict and feedback; long responses are clipped to `max_chars`."""
    lines = []
    for i, e in enumerate(attempts, 1):
        verdict = "PASSED" if e.passed else ("RIGHT VALUE, FORMAT MISSING" if e.failure_kind == "format" else "FAILED")
        response = e.response.strip().replace("\n", " ")
        if len(response) > max_chars:
            response = response[: max_chars - 3] + "..."
        lines.append(f"Attempt {i} ({verdict}): {response}\nFeedback: {e.feedback}\n")
    return "\n".join(lines)


def reflection_messages(question: str, attempts: Sequence[Attempt], system_prompt: str = "") -> list[dict[str, str]]:
    """The chat a model-written reflector answers for one problem."""
    content = REFLECTION_PROMPT.format(question=question, attempts=format_attempts(attempts))
    return student_messages(system_prompt, content)


# ------------------------------------------------------------------------------------------- patterns
# A pattern states a BEHAVIOUR that recurred across problems, never one problem's content (its answer, its numbers,
# a quoted reply). Deterministic consolidation writes a pattern from these templates, keyed by the insights' tag:
# lessons by failure kind (`pmd.memory.records.FAILURE_KINDS`), named with their family; strategies by behaviour
# key, across families. A tag with no template here (e.g. the unspecific lesson "other") becomes a pattern only when
# a model writes it (mode: model).
# Keep these free of digits and of quotes without a <placeholder>: the leak guard (memory/patterns.py) rejects both.

LESSON_PATTERNS = {
    "wrong_value": "In {family} problems, a wrong value is a common failure: recompute the result before answering.",
    "no_answer": "In {family} problems, a missing final answer is a common failure: always end with the answer line "
                 "the problem asks for.",
    # not "failure": the value was right, and under lenient credit at the threshold such replies are successes
    "format": "In {family} problems, the value is often right but not in the requested format: keep the value and "
              "write the answer exactly in the requested format.",
    "wrong_answer_on_test": "In {family} problems, code that runs but fails a test is a common failure: trace the "
                            "examples and the edge cases through the code before answering.",
    "runtime_error": "In {family} problems, code that raises an error is a common failure: check indices, types and "
                     "empty inputs.",
    "compile_error": "In {family} problems, code that does not parse or is missing is a common failure: reply with "
                     "one complete Python code block.",
    "timeout": "In {family} problems, code that is too slow is a common failure: avoid repeated work over large "
               "inputs.",
}
STRATEGY_PATTERNS = {  # keys: the feedback-stats reflector's strategy tags (how passing attempts gave the result)
    "answer_line": "State the final result on its own line as 'Answer: <answer>'.",
    "boxed": "Put the final result in \\boxed{} at the end of the reply.",
    "final_sentence": "End the reply with one sentence 'The answer is <answer>'.",
    "code_block": "Reply with one complete program in a single Python code block.",
    "worked_out": "Work the problem out step by step, then state the result in the required format.",
    "short": "Keep the reply short: go straight to the result and stop once it is stated.",
}


def pattern_template(kind: str, tag: str, family: str = "") -> str | None:
    """The deterministic text of the pattern for insights of `kind` and `tag` (`family`: the lessons' family), or
    None when no template states that behaviour."""
    if kind == "lesson":
        template = LESSON_PATTERNS.get(tag)
        return template.format(family=family or "these") if template else None
    return STRATEGY_PATTERNS.get(tag)


CONSOLIDATION_PROMPT = """Below are notes from practising {n} different problems{scope}. Each note comes from a \
different problem; its numbers and quoted values are hidden as N and '...'. They all describe {what}.

{notes}

Write ONE line starting with 'Pattern:' that states the behaviour these notes share, as advice for any such \
problem. Do not mention a specific problem, number, answer or quote."""
CONSOLIDATION_WHAT = {"strategy": "what led to a correct answer", "lesson": "the same kind of mistake"}


def consolidation_messages(kind: str, family: str, notes: Sequence[str],
                           system_prompt: str = "") -> list[dict[str, str]]:
    """The chat a model answers to write one pattern from a cluster of insights of several problems (`notes`,
    already masked by the caller). `family` is '' for a cluster across families."""
    content = CONSOLIDATION_PROMPT.format(
        n=len(notes), scope=f" of the family {family}" if family else "", what=CONSOLIDATION_WHAT[kind],
        notes="\n".join(f"- {note}" for note in notes),
    )
    return student_messages(system_prompt, content)


# ------------------------------------------------------------------------------------------- teacher-gap probe
# `pmd probe` (probe.py) shows the teacher the same problem's reference answer as a worked, formatted reply, as
# SDPO's successful sibling would be: the calculation when the question states one, then the answer in the strict
# form the student's prompt asks for (the first form when it names none).

WORKED_STEP = "{expression} = {answer}"
WORKED_ANSWER = {"answer_line": "Answer: {answer}", "boxed": "\\boxed{{{answer}}}",
                 "final_sentence": "The answer is {answer}."}
