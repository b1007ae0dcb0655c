"""Finding the code in a model's reply, and the source that gets judged (nothing here runs it).

Extraction is lenient on purpose (a fenced block of another tag, a block cut off mid-generation, a bare program),
while `format_ok` in the verdict records whether the asked-for ```python fence was used.
"""

from __future__ import annotations

import ast
import re
import textwrap

__all__ = ["compile_error", "extract_code", "humaneval_source"]

_FENCE_RE = re.compile(r"^[ \t]*```[ \t]*([\w+.#-]*)[^\n]*\n(.*?)^[ \t]*```", re.S | re.M)
_OPEN_FENCE_RE = re.compile(r"^[ \t]*```[ \t]*([\w+.#-]*)[^\n]*\n(.*)\Z", re.S | re.M)
_PYTHON_TAGS = {"python", "py", "python3", "py3"}


def extract_code(response: str, prefix: str = "") -> tuple[str | None, str]:
    """The code in a response and how it was found: ("python_fence" | "fence" | "open_fence" | "raw" | "none").

    Last ```python block, else the last untagged block, else the last block of any language, else an unterminated
    trailing fence (a generation cut off mid-block), else the whole response when it parses as Python on its own or
    after `prefix` (HumanEval: a bare function body continues the prompt).
    """
    if not isinstance(response, str):
        return None, "none"
    blocks = [(tag.lower(), body) for tag, body in _FENCE_RE.findall(response) if body.strip()]
    python = [body for tag, body in blocks if tag in _PYTHON_TAGS]
    if python:
        return python[-1], "python_fence"
    untagged = [body for tag, body in blocks if not tag]
    if untagged or blocks:
        return (untagged or [body for _, body in blocks])[-1], "fence"
    if response.count("```") % 2 == 1:  # an unterminated fence: generation cut off inside the block
        opened = _OPEN_FENCE_RE.search(response)
        if opened and (opened.group(1).lower() in _PYTHON_TAGS | {""}) and opened.group(2).strip():
            return opened.group(2), "open_fence"
    text = response.strip("\n")
    if text.strip() and "```" not in text and (_looks_like_code(textwrap.dedent(text)) or
                                                (prefix and _looks_like_code(prefix + text, strict=False))):
        return text + "\n", "raw"
    return None, "none"


def _looks_like_code(text: str, strict: bool = True) -> bool:
    """Parses as Python and is more than a bare name/constant (prose like "42" or "yes" is not code)."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    if not strict:
        return True
    return any(not isinstance(node, ast.Expr) or isinstance(node.value, ast.Call) for node in tree.body)


def humaneval_source(prompt: str, code: str, entry_point: str) -> str:
    """Prompt + completion. A completion that defines the entry point replaces the prompt's stub (the prompt stays
    first for its imports and helpers); anything else is taken as the function body."""
    try:
        tree = ast.parse(textwrap.dedent(code))
        defines = any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == entry_point
                      for n in tree.body)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        defines = False
    if defines:
        return prompt + "\n\n" + textwrap.dedent(code)
    return prompt + textwrap.indent(textwrap.dedent(code), "    ")


def compile_error(source: str) -> str | None:
    """Syntax check in this process (compiling runs nothing); the message names the line and shows it."""
    try:
        compile(source, "solution.py", "exec", dont_inherit=True)
    except SyntaxError as e:
        text = (e.text or "").rstrip("\n")
        return f"{type(e).__name__}: {e.msg} (line {e.lineno})" + (f"\n    {text.strip()}" if text.strip() else "")
    except (ValueError, RecursionError, MemoryError) as e:
        return f"{type(e).__name__}: {e}"
    return None
