"""A reward function with feedback, in TRL's signature: an existing TRL reward function works the same way.

`prompts`, `completions` and `completion_ids` are what TRL passes; every dataset column arrives as a keyword list
(here `answer`, `unit`, `tolerance`). Returning `(reward, feedback)` pairs instead of bare floats gives SDPO's and
PMD's teacher, and PMD's memory, a sentence about what went wrong. Start the feedback with the verdict: the memory
groups recurring failures by its first sentence, so keep problem-specific numbers out of it.
"""

from __future__ import annotations

import re

_ANSWER = re.compile(r"answer\s*:\s*(-?[\d,]*\.?\d+)", re.IGNORECASE)


def conversion_reward(prompts, completions, completion_ids, answer, unit, tolerance, **kwargs):
    out = []
    for completion, reference, unit_name, tol in zip(completions, answer, unit, tolerance):
        text = completion[0]["content"] if isinstance(completion, list) else completion
        found = _ANSWER.findall(text)
        if not found:
            out.append((0.0, "No answer line: finish with 'Answer: <number>' (a number, no unit)."))
            continue
        value, target = float(found[-1].replace(",", "")), float(reference)
        error = abs(value - target) / max(abs(target), 1e-9)
        if error == 0:
            out.append((1.0, "Correct."))
        elif error <= tol:
            out.append((0.5, f"Close but not exact: the value is off by {error:.1%}; multiply by the exact "
                             "conversion factor."))
        elif abs(value * 1000 - target) < 1e-9 or abs(value / 1000 - target) < 1e-9:
            out.append((0.0, f"Wrong scale: the value is off by a factor of 1000; check how many {unit_name} "
                             "make one of the original unit."))
        else:
            out.append((0.0, f"Wrong answer: the value is not the number of {unit_name}; multiply the given "
                             "quantity by the conversion factor."))
    return out
