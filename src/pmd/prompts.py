"""The student's prompt: system message + the problem, nothing else (no memory, no feedback).

Training, evaluation and the teacher all start from this one function so the student's view cannot drift apart
between them.
"""

from __future__ import annotations


def student_messages(system_prompt: str, question: str, instruction: str = "") -> list[dict[str, str]]:
    """Conversational prompt for one problem; `instruction` (the answer format) follows the question."""
    messages = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    content = f"{question}\n{instruction}" if instruction else question
    messages.append({"role": "user", "content": content})
    return messages
