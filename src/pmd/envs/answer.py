"""Answer extraction shared by text-answer environments.

Strict (the learnable format): the last line starting with `Answer:` (case-insensitive), the last `\\boxed{...}`,
or a last line that states "The (final) answer is X" (the phrasing small instruct models use on their own).
Lenient (recorded separately, never the default reward): the last number in the response, else its last
non-empty line. Keeping the two apart lets a run see whether the policy learned the format or only the content.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_ANSWER_LINE = re.compile(r"^\s*\**\s*(?:final\s+)?answer\s*\**\s*[:：]\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)
_FINAL_SENTENCE = re.compile(
    r"^\s*(?:so,?\s+|thus,?\s+|therefore,?\s+)?the\s+(?:final\s+)?(?:answer|result)\b[^.\n:]{0,60}?\bis\s*[:：]?\s*(.+?)\s*$",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"-?\d+(?:[.,]\d+)*(?:/\d+)?")


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


def truncate(text: str, limit: int = 200) -> str:
    """Shorten text for feedback so one runaway response cannot flood the teacher prompt."""
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."
