"""The student's prompt: system message + the problem, nothing else (no memory, no feedback).

Training, evaluation and the teacher all start from this one function so the student's view cannot drift apart
between them.
"""

from __future__ import annotations


def student_messages(system_prompt: str, user_text: str) -> list[dict[str, str]]:
    """Conversational prompt for one problem; `user_text` is the environment's `format_prompt(problem)`."""
    messages = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    messages.append({"role": "user", "content": user_text})
    return messages
