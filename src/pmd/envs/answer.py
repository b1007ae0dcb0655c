"""Answer extraction shared by text-answer environments.

Strict (the learnable format): the last line starting with `Answer:` (case-insensitive), the last `\\boxed{...}`,
or a last line that states "The (final) answer is X" (the phrasing small instruct models use on their own).
Lenient (recorded separately, never the default reward): the last number in the response, else its last
non-empty line. Keeping the two apart lets a run see whether the policy learned the format or only the content.

`answer_verdict` turns an extraction and its scores into the Verdict every text-answer environment gives, so that
reasoning-gym tasks and dataset tasks (`envs.verifiers`) word their feedback the same way. The outcome also travels
structured: `Verdict.extracted` (the strict answer) and `Verdict.failure_kind` (`answer_failure_kind`), which the
memory stores on each experience, so the reflector never re-reads the feedback prose.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from .base import Verdict

_ANSWER_LINE = re.compile(r"^\s*\**\s*(?:final\s+)?answer\s*\**\s*[:：]\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)
_FINAL_SENTENCE = re.compile(
    r"^\s*(?:so,?\s+|thus,?\s+|therefore,?\s+)?the\s+(?:final\s+)?(?:answer|result)\b[^.\n:]{0,60}?\bis\s*[:：]?\s*(.+?)\s*$",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"-?\d+(?:[.,]\d+)*(?:/\d+)?")

WRONG_ANSWER = "Wrong answer: the extracted answer is incorrect."
NO_ANSWER = "No gradable answer: the reply has no final line 'Answer: <answer>' and no \\boxed{}."


@dataclass(frozen=True)
class Extraction:
    strict: str | None
    lenient: str | None
    how: str  # "answer_line" | "boxed" | "last_number" | "last_line" | "none"


def _last_boxed(text: str) -> str | None:
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i, depth, out = start + len("\\boxed{"), 1, []
    while i < len(text):
        ch = text[i]
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return "".join(out).strip()
        out.append(ch)
        i += 1
    return None


def _clean(answer: str) -> str:
    answer = answer.strip().strip("*").strip()
    answer = re.sub(r"^\$+|\$+$", "", answer).strip()
    return answer.rstrip(".").strip()


def extract_answer(response: str) -> Extraction:
    """Extract the final answer from free text; never raises."""
    text = response or ""
    matches = _ANSWER_LINE.findall(text)
    if matches:
        value = _clean(matches[-1])
        boxed = _last_boxed(value)
        return Extraction(strict=boxed or value, lenient=boxed or value, how="answer_line")
    boxed = _last_boxed(text)
    if boxed is not None:
        return Extraction(strict=_clean(boxed), lenient=_clean(boxed), how="boxed")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    final = _FINAL_SENTENCE.match(lines[-1]) if lines else None
    if final:
        value = _clean(final.group(1))
        return Extraction(strict=value, lenient=value, how="final_sentence")
    numbers = _NUMBER.findall(text)
    if numbers:
        return Extraction(strict=None, lenient=numbers[-1], how="last_number")
    if lines:
        return Extraction(strict=None, lenient=_clean(lines[-1]), how="last_line")
    return Extraction(strict=None, lenient=None, how="none")


def answer_failure_kind(passed: bool, strict: str | None, lenient_correct: bool, fault: bool = False) -> str:
    """Why a text answer failed, as one of `pmd.memory.records.FAILURE_KINDS` ("" when it passed).

    A row that cannot be graded is "other" (the reply is not at fault); a strictly extracted answer that is wrong is
    "wrong_value"; with no strict answer, a correct value read only leniently is "format" (the right value without
    the required format), anything else "no_answer" (nothing gradable was given).
    """
    if passed:
        return ""
    if fault:
        return "other"
    if strict is not None:
        return "wrong_value"
    return "format" if lenient_correct else "no_answer"


def truncate(text: str, limit: int = 200) -> str:
    """Shorten text for feedback so one runaway response cannot flood the teacher prompt."""
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def answer_verdict(
    ext: Extraction,
    strict_score: float,
    lenient_score: float,
    reference: str | None,
    reveal: bool,
    lenient_credit: float,
    *,
    wrong: str = WRONG_ANSWER,
    fault: str | None = None,
) -> Verdict:
    """The Verdict for an answer read by `extract_answer` and scored (in [0, 1]) on its strict and lenient readings,
    with its `failure_kind` (`answer_failure_kind`).

    Reward is the strict score when the format was followed, else `lenient_credit` times the lenient score, so the
    policy is paid for the format and a run still sees (in `details["lenient_correct"]`) when only the format was
    missed. `passed` needs a strict score of 1. The feedback leads with the verdict ("Correct." / `wrong` / "No
    gradable answer: ...") because the teacher reads it first; a wrong-but-formatted answer must not open with
    "Format: followed". `reference` is named only when `reveal` is on and the answer was not correct (it leaks the
    label). `fault` (a full sentence) marks a row that cannot be graded (a broken reference): it replaces the verdict
    headline, scores 0 for every reply, and reveals nothing.
    """
    if fault is not None:
        strict_score = lenient_score = 0.0
    passed = fault is None and strict_score >= 1.0
    reward = strict_score if ext.strict is not None else lenient_credit * lenient_score
    if ext.strict is not None:
        how = f"Format: followed (found the final answer via {ext.how.replace('_', ' ')})."
        answer = f"Extracted answer: {truncate(ext.strict, 80)!r}."
        head = fault or ("Correct." if passed else wrong)
        parts = [head, answer, how]
    else:
        parts = [fault or NO_ANSWER]
        if ext.lenient is not None:
            parts.append(f"The last value in the reply was {truncate(ext.lenient, 80)!r}.")
    if reveal and not passed and fault is None and reference is not None:
        parts.append(f"The correct answer is {reference}.")
    details = {"how": ext.how, "lenient": ext.lenient, "lenient_correct": lenient_score >= 1.0}
    if fault is not None:
        details["fault"] = fault
    return Verdict(
        reward=float(reward),
        passed=passed,
        feedback=" ".join(parts),
        extracted=ext.strict,
        format_ok=ext.strict is not None,
        details=details,
        failure_kind=answer_failure_kind(passed, ext.strict, lenient_score >= 1.0, fault is not None),
    )


_QUOTE_PAIRS = {'"': '"', "'": "'", "`": "`", "\u201c": "\u201d", "\u2018": "\u2019", "\u00ab": "\u00bb"}


def normalise_answer(text: str, case_sensitive: bool = False) -> str:
    """`text` as the `exact` verifier compares it: Unicode NFKC (full-width letters, ligatures), whitespace runs
    collapsed, surrounding quotes, `$` signs and final periods stripped (repeatedly, so '"Paris".' -> Paris), and
    casefolded unless `case_sensitive` (casefold, not lower: 'STRASSE' == 'straße')."""
    text = " ".join(unicodedata.normalize("NFKC", text).split())
    while True:
        before = text
        text = text.strip().rstrip(".").strip().strip("$").strip()
        if len(text) >= 2 and _QUOTE_PAIRS.get(text[0]) == text[-1]:
            text = text[1:-1]
        if text == before:
            break
    return text if case_sensitive else text.casefold()
