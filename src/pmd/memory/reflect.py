"""Insights by reflection: per problem, turn attempts and their judged outcomes into strategies and lessons.

Both sources implement one `Reflector` protocol (attempts by problem + questions in, drafts out), chosen by
`memory.reflector`:
- `FeedbackStatsReflector` (deterministic): reads the attempts' structured outcomes (`Experience.passed`,
  `failure_kind`, `answer`: what the environment judged, never re-parsed from the feedback prose): the failure
  most attempts share, a wrong answer given repeatedly, how the passing attempts gave their result. For models too
  small to reflect usefully, e.g. the 135M default.
- `ModelReflector`: a language model (the policy itself by default, or a separate reflector) reads its passing and
  failing attempts and writes `Strategy:` / `Lesson:` lines. Output is parsed strictly and unusable lines are
  dropped, content-free ones included (`is_content_free`); the acceptance rate is reported so a run shows whether
  reflection is doing anything.

Every insight carries a `tag`, the problem-independent behaviour key consolidation groups on:
- lessons: the failure kind (`pmd.memory.records.FAILURE_KINDS`): "wrong_value", "no_answer", "format",
  "wrong_answer_on_test", "runtime_error", "compile_error", "timeout", "other";
- strategies: how the passing attempts gave their result: "answer_line" (a final line 'Answer: <answer>'),
  "boxed" (\\boxed{}), "final_sentence" ('The answer is <answer>'), "code_block" (one fenced program),
  "worked_out" (none of these); and "short" (passing attempts at most half as long as failing ones);
- "" for a model-written strategy (no behaviour known).
`behaviour_text(kind, tag)` is the problem-independent sentence for a tag. An insight whose text is exactly that
sentence names nothing of its problem; other texts (a repeated wrong answer, the verifier's words for an
unclassified failure, a model-written line) may, and are meant for the problem they were written for.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from statistics import median
from typing import Protocol

from ..prompts import reflection_messages
from ..rewards import is_success
from .store import Experience
from .text import STOPWORDS, normalize_text, tokenize

MIN_WORDS, MAX_WORDS = 4, 60
COPY_OVERLAP = 0.8  # token-set Jaccard above which a line is considered copied from the problem or an attempt


@dataclass(frozen=True)
class InsightDraft:
    kind: str  # "strategy" | "lesson"
    text: str
    experience_ids: tuple[int, ...]
    tag: str = ""  # the behaviour key (see the module docstring); "" = none known


@dataclass
class ReflectionResult:
    insights: list[InsightDraft] = field(default_factory=list)
    proposed: int = 0  # lines the reflector produced
    accepted: int = 0  # lines that survived parsing and filtering
    rejected_reasons: Counter = field(default_factory=Counter)

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.proposed if self.proposed else 0.0


class Reflector(Protocol):
    """Turns each problem's recent attempts into insight drafts. `name` is stored as the insights' source."""

    name: str

    def reflect(self, attempts: Mapping[str, list[Experience]],
                questions: Mapping[str, str] | None = None) -> ReflectionResult:
        """`attempts` and `questions` are keyed by problem uid; a missing question falls back to the stored prompt."""
        ...


# ------------------------------------------------------------------------------------------- deterministic

# The behaviour each tag stands for, in words a teacher can act on. These texts name no problem's content, so an
# insight whose text is exactly `behaviour_text(kind, tag)` is problem-independent; any other text (a repeated wrong
# answer, the verifier's words for an unclassified failure, a model-written line) may carry its problem's content.
LESSON_TEXTS: dict[str, str] = {
    "wrong_value": "Most failed attempts stated a wrong value: redo the computation step by step and check it "
                   "before the final line.",
    "no_answer": "Most failed attempts ended without a gradable answer: finish with the result alone on a final line "
                 "'Answer: <answer>'.",
    # not "failed": with lenient credit at the success threshold these attempts are successes (pmd.rewards.is_success)
    "format": "The value was right but the reply had no final line 'Answer: <answer>': keep the value and state it "
              "alone on such a line.",
    "wrong_answer_on_test": "Most failed programs ran but gave a wrong result on a test: check edge cases and the "
                            "exact output format.",
    "runtime_error": "Most failed programs crashed at run time: check input parsing, indexes and empty inputs.",
    "compile_error": "Most failed attempts gave no runnable program: reply with one complete program in a single "
                     "```python block that parses.",
    "timeout": "Most failed programs ran out of time: use an algorithm of lower complexity.",
    "other": "Most failed attempts failed the task's own check.",
}
STRATEGY_TEXTS: dict[str, str] = {
    "answer_line": "Passing attempts ended with the result alone on a final line 'Answer: <answer>'.",
    "boxed": "Passing attempts put the final result in \\boxed{}.",
    "final_sentence": "Passing attempts ended with one sentence 'The answer is <answer>'.",
    "code_block": "Passing attempts gave one complete program in a single ```python block.",
    "worked_out": "Passing attempts worked the problem out and stated the result in the required format.",
    "short": "Passing attempts were short: they went straight to the result and stopped once it was stated.",
}
SHORT_RATIO = 0.5  # "short": passing attempts' median length at most this share of the failing attempts' median
_ANSWER_FORMS = frozenset({"answer_line", "boxed", "final_sentence"})  # `Extraction.how` values that are strict


def behaviour_text(kind: str, tag: str) -> str | None:
    """The problem-independent sentence for a (kind, tag) the feedback-stats reflector writes; None for others."""
    return (LESSON_TEXTS if kind == "lesson" else STRATEGY_TEXTS).get(tag)


def answer_form(response: str) -> str:
    """The strategy tag for how a passing response gave its result: the answer extraction that read it (the same
    `extract_answer` the text environments grade with), else a fenced program ("code_block"), else "worked_out"."""
    from ..envs.answer import extract_answer  # the environments' reading, not a second parser

    how = extract_answer(response).how
    if how in _ANSWER_FORMS:
        return how
    return "code_block" if "```" in response else "worked_out"


def _quote(answer: str, limit: int = 80) -> str:
    """An answer as the lesson names it: one line, clipped, in quotes that do not clash with its own."""
    text = " ".join(answer.split())
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f'"{text}"' if "'" in text else f"'{text}'"


class FeedbackStatsReflector:
    """Lessons and strategies from the attempts' structured outcomes (no generation, deterministic).

    Reads `Experience.passed`, `reward`, `failure_kind` and `answer` (what the environment judged), never the feedback
    prose. Failed means not a success (`pmd.rewards.is_success` with `success_threshold`, the run's
    train.success_reward_threshold): an attempt with the right value but not the format whose lenient credit reached
    the threshold was a sibling's demonstration, so it is not counted with the wrong values;
    - lesson, tag = the failure kind shared by at least half of the failed attempts (and at least two);
    - lesson, tag "format": two or more such successes with the right value and no strict format, in their own words
      ("the value was right but ...", never "failed"), whatever the failures' lesson;
    - lesson, tag "wrong_value": a wrong answer given twice or more, named (problem-specific);
    - strategy, tag = how the (strictly) passing attempts gave their result (`answer_form`: "answer_line", "boxed",
      "final_sentence", "code_block", "worked_out");
    - strategy, tag "short": passing attempts are at most half as long (median words) as the failing ones.
    The texts are `LESSON_TEXTS` / `STRATEGY_TEXTS`, so the same behaviour on different problems yields the same
    sentence, and the tag keys it for consolidation whatever the text.
    """

    name = "feedback-stats"

    def __init__(self, success_threshold: float = 1.0):
        self.success_threshold = success_threshold

    def reflect(self, attempts: Mapping[str, list[Experience]],
                questions: Mapping[str, str] | None = None) -> ReflectionResult:
        """Deterministic: reads only the attempts' structured outcomes (`questions` is not needed)."""
        result = ReflectionResult()
        for _, exps in sorted(attempts.items()):
            for draft in self._one(exps):
                result.proposed += 1
                result.accepted += 1
                result.insights.append(draft)
        return result

    def _one(self, exps: list[Experience]) -> list[InsightDraft]:
        drafts: list[InsightDraft] = []
        passed = [e for e in exps if e.passed]
        success = [is_success(e.reward, e.passed, self.success_threshold) for e in exps]
        failed = [e for e, ok in zip(exps, success) if not ok]
        right_unformatted = [e for e, ok in zip(exps, success) if ok and not e.passed and e.failure_kind == "format"]
        ids = lambda es: tuple(e.id for e in es if e.id is not None)  # noqa: E731
        kind_of = lambda e: e.failure_kind or "other"  # noqa: E731 - a failure without a kind is still a failure
        for kind, count in Counter(kind_of(e) for e in failed).most_common(1):
            if count >= 2 and count * 2 >= len(failed):
                of_kind = [e for e in failed if kind_of(e) == kind]
                text = LESSON_TEXTS.get(kind, LESSON_TEXTS["other"])
                if kind == "other" and of_kind[-1].feedback.strip():  # no kind to name: quote the verifier's verdict
                    text += " The verifier said: " + _quote(of_kind[-1].feedback.strip().splitlines()[0], 120)
                drafts.append(InsightDraft("lesson", text, ids(of_kind), tag=kind))
        if len(right_unformatted) >= 2 and not any(d.tag == "format" for d in drafts):
            drafts.append(InsightDraft("lesson", LESSON_TEXTS["format"], ids(right_unformatted), tag="format"))
        wrong = Counter(e.answer for e in failed if e.failure_kind == "wrong_value" and e.answer)
        for answer, count in wrong.most_common(1):
            if count >= 2:
                drafts.append(InsightDraft(
                    "lesson", f"The answer {_quote(answer)} was given repeatedly and is wrong; recheck the computation.",
                    ids([e for e in failed if e.answer == answer]), tag="wrong_value",
                ))
        if passed:
            forms = Counter(answer_form(e.response) for e in passed)
            form = max(forms, key=lambda f: (forms[f], f))
            drafts.append(InsightDraft("strategy", STRATEGY_TEXTS[form],
                                       ids([e for e in passed if answer_form(e.response) == form]), tag=form))
            words = lambda es: median(len(e.response.split()) for e in es)  # noqa: E731
            if failed and words(passed) <= SHORT_RATIO * words(failed):
                drafts.append(InsightDraft("strategy", STRATEGY_TEXTS["short"], ids(passed), tag="short"))
        return drafts


# ------------------------------------------------------------------------------------------- model-written

_LINE = re.compile(r"^\s*[-*\d.)]*\s*\**(strategy|lesson)\**\s*[:：]\s*(.+?)\s*$", re.IGNORECASE)

# Words that carry no action a teacher could take: the task's own vocabulary (answer, question, solve, correct,
# equation, calculate), exhortations (always, carefully, make sure, pay attention), meta words (lesson, strategy, key,
# approach, attempt, concept) and verbs of merely giving a result (find, get, give, write, state). A line made only of
# these (and stopwords) says "answer the question correctly" in some words. Operations (add, borrow, divide), checks
# (check, verify), formats (line, boxed) and quantities (sign, remainder, digit) are deliberately absent. Compared
# after `tokenize`, i.e. lower-cased and lightly stemmed.
GENERIC_WORDS = frozenset(tokenize("""
    answer answers question questions problem problems task tasks solution solutions solve solving solved result results
    correct correctly right wrong true accurate accurately exact exactly final finally
    equation equations expression expressions arithmetic math mathematics mathematical number numbers value values
    calculate calculating calculation calculations compute computing computation evaluate determine figure out
    operation operations perform concept concepts fundamental basic simple practice combination rely relies lies
    involve involves require requires incorrect not no crucial essential critical necessary original
    find finding found get getting give giving given provide providing make making sure ensure ensuring certain
    write writing state stating show showing
    always never just simply really also even still first next then again every each any all one thing things
    something everything way ways approach method lesson lessons strategy strategies advice tip tips key important
    main best better good well great general generally overall goal aim purpose order process work working
    understand understanding think thinking know knowing learn learning remember keep try trying need needs must
    should able possible careful carefully attention pay focus clear clearly proper properly step steps
    mistake mistakes error errors avoid avoiding use using time times attempt attempts passed failed failing
    feedback instruction instructions information following follow given provided above below help helps like
    """))
GOAL_WORDS = frozenset(tokenize("answer question problem task solution solve result correct find"))


_WORKED = re.compile(r"\d\s*[-+*/×÷x]\s*\(?-?\d[\d.]*\)?\s*=\s*-?\d")  # "8 * 0 = 0": one problem's computation
_DANGLING = frozenset(STOPWORDS | {"not", "since", "because", "than", "you're", "it's", "whether"})


def is_content_free(line: str, question: str) -> str | None:
    """Why a reflection line teaches nothing, or None when it names something to do. Rules, in order, over the
    line's content words (`tokenize`: stopwords removed, lightly stemmed):

    - "tautology": every word is generic (`GENERIC_WORDS`) and one of them names the goal itself (answer, solve,
      correct, ...): "The key lesson is to always find the answer to the question".
    - "generic": every word is generic: "Always be careful and pay attention".
    - "restates_task": the non-generic words all come from the question: "Calculate 5 + 3 correctly" for
      "Calculate 5 + 3.".
    - "only_values": what is left is numbers or single letters, not an operation: "The answer is 8".
    - "worked_example": it writes out one computation with its result ("8 * 0 = 0"): that problem's content, not a
      behaviour.
    - "unfinished": it stops on a function word without closing punctuation ("8 is a positive integer and"): the
      generation ran out of tokens mid-sentence.

    What passes names at least one word outside the generic list and the question: an operation ("add", "carry"),
    a check ("double-check the sign"), a format ("a final line 'Answer: <answer>'") or a quantity ("the remainder").
    """
    words = tokenize(line)
    specific = [w for w in words if w not in GENERIC_WORDS]
    if not specific:
        return "tautology" if any(w in GOAL_WORDS for w in words) else "generic"
    asked = set(tokenize(question))
    new = [w for w in specific if w not in asked]
    if not new:
        return "restates_task"
    if not any(sum(c.isalpha() for c in w) >= 2 for w in new):
        return "only_values"
    if _WORKED.search(line):
        return "worked_example"
    last = line.rstrip().split()[-1].lower() if line.strip() else ""
    if last and last[-1] not in ".!?)'\"`" and last.strip(",;:") in _DANGLING:
        return "unfinished"
    return None


def _states(body: str, answers: set[str]) -> bool:
    """Whether `body` contains one of `answers` as a whole word (so "8" matches "is 8." but not "18")."""
    norm = f" {normalize_text(body)} "
    return any(f" {a} " in norm for a in answers)


def parse_reflection(text: str, question: str, responses: list[str], passing_answers: Sequence[str] = (), *,
                     check_content: bool = True) -> tuple[list[tuple[str, str]], Counter]:
    """Strictly parse `Strategy:`/`Lesson:` lines; drop empty, too short/long, copied, content-free
    (`is_content_free`, unless `check_content` is off), answer-stating and duplicate lines.

    A line "states the answer" when it contains a passing attempt's extracted answer (`passing_answers`) that the
    question does not contain: a strategy must describe a behaviour, and an answer in an insight would reach the
    teacher of a similar problem. Returns the accepted (kind, text) pairs and a Counter of rejection reasons (one
    count per proposed line that was dropped, plus "no_lines" when nothing parseable was written).
    """
    accepted: list[tuple[str, str]] = []
    reasons: Counter = Counter()
    matches = [_LINE.match(line) for line in (text or "").splitlines()]
    matches = [m for m in matches if m]
    if not matches:
        reasons["no_lines"] += 1
        return accepted, reasons
    sources = [set(tokenize(question))] + [set(tokenize(r)) for r in responses]
    in_question = f" {normalize_text(question)} "
    answers = {a for a in (normalize_text(x) for x in passing_answers if x) if a and f" {a} " not in in_question}
    seen = set()
    for m in matches:
        kind, body = m.group(1).lower(), m.group(2).strip().strip('"').strip()
        words = body.split()
        tokens = set(tokenize(body))
        empty = is_content_free(body, question) if check_content else None
        if len(words) < MIN_WORDS:
            reasons["too_short"] += 1
        elif len(words) > MAX_WORDS:
            reasons["too_long"] += 1
        elif any(tokens and src and len(tokens & src) / len(tokens | src) >= COPY_OVERLAP for src in sources):
            reasons["copied"] += 1
        elif empty is not None:
            reasons[empty] += 1
        elif check_content and _states(body, answers):
            reasons["states_answer"] += 1
        elif normalize_text(body) in seen:
            reasons["duplicate"] += 1
        else:
            seen.add(normalize_text(body))
            accepted.append(("strategy" if kind == "strategy" else "lesson", body))
    return accepted, reasons


class ModelReflector:
    """Reflection written by a model: the policy itself, or a separate reflector model.

    Lines go through `parse_reflection` (content-free and answer-stating lines are dropped). A model-written lesson
    is tagged with the failure kind most of its problem's failed attempts had (what it was written about); a
    model-written strategy has no behaviour key (tag "").

    `generate(list_of_chat_prompts) -> list_of_texts` does the (batched) generation, so this class stays
    independent of how and where the model runs."""

    def __init__(self, generate: Callable[[list[list[dict]]], list[str]], system_prompt: str = "", name: str = "policy"):
        self.generate = generate
        self.system_prompt = system_prompt
        self.name = name

    def prompts(self, attempts: Mapping[str, list[Experience]], questions: Mapping[str, str]) -> list[list[dict]]:
        return [reflection_messages(questions.get(uid, exps[0].prompt), exps, self.system_prompt)
                for uid, exps in sorted(attempts.items())]

    def reflect(self, attempts: Mapping[str, list[Experience]],
                questions: Mapping[str, str] | None = None) -> ReflectionResult:
        questions = questions or {}
        uids = sorted(attempts)
        texts = self.generate(self.prompts(attempts, questions)) if uids else []
        result = ReflectionResult()
        for uid, text in zip(uids, texts, strict=True):
            exps = attempts[uid]
            accepted, reasons = parse_reflection(text, questions.get(uid, exps[0].prompt), [e.response for e in exps],
                                                 [e.answer for e in exps if e.passed and e.answer])
            proposed = len(accepted) + sum(v for k, v in reasons.items() if k != "no_lines") or 1
            result.proposed += proposed
            result.accepted += len(accepted)
            result.rejected_reasons.update(reasons)
            failures = Counter(e.failure_kind or "other" for e in exps if not e.passed)
            lesson_tag = max(failures, key=lambda k: (failures[k], k)) if failures else ""
            for kind, body in accepted:
                source = [e for e in exps if e.passed == (kind == "strategy")] or exps
                result.insights.append(InsightDraft(kind, body, tuple(e.id for e in source if e.id is not None),
                                                    tag=lesson_tag if kind == "lesson" else ""))
        return result
