"""CodeEnvironment: HumanEval and LiveCodeBench-format problems judged through the sandbox."""

from __future__ import annotations

import base64
import json
import os
import pickle
import zlib
from pathlib import Path

import pytest

from pmd.envs.base import Environment
from pmd.envs.code import CodeEnvironment, extract_code
from pmd.errors import ConfigError, DatasetError
from pmd.envs.code.sandbox import SandboxLimits

pytestmark = pytest.mark.timeout(120)

FAST = SandboxLimits(cpu_seconds=1, wall_seconds=2)


@pytest.fixture(scope="module")
def humaneval() -> CodeEnvironment:
    return CodeEnvironment(source="humaneval", limits=FAST)


def _all(env: CodeEnvironment):
    return env.problems("train") + env.problems("eval")


def _by_task(env: CodeEnvironment, task_id: str):
    return next(p for p in _all(env) if p.metadata["task_id"] == task_id)


def _compress(tests: list[dict]) -> str:
    """LiveCodeBench's private-test encoding: base64(zlib(pickle(json string)))."""
    return base64.b64encode(zlib.compress(pickle.dumps(json.dumps(tests)))).decode("ascii")


def _stdin_row(**overrides) -> dict:
    row = {
        "question_title": "A+B",
        "question_content": "Read two integers A and B and print A+B.",
        "platform": "atcoder",
        "question_id": "abc000_a",
        "starter_code": "",
        "difficulty": "easy",
        "public_test_cases": json.dumps([{"input": "1 2\n", "output": "3\n", "testtype": "stdin"}]),
        "private_test_cases": _compress([
            {"input": "10 20\n", "output": "30\n", "testtype": "stdin"},
            {"input": "-5 5\n", "output": "0\n", "testtype": "stdin"},
        ]),
        "metadata": "{}",
    }
    row.update(overrides)
    return row


def _functional_row(**overrides) -> dict:
    row = {
        "question_title": "Two Sum",
        "question_content": "Return indices of the two numbers that add up to target.",
        "platform": "leetcode",
        "question_id": "1",
        "starter_code": "class Solution:\n    def twoSum(self, nums: List[int], target: int) -> List[int]:\n        ",
        "difficulty": "easy",
        "public_test_cases": json.dumps([
            {"input": "[2, 7, 11, 15]\n9", "output": "[0, 1]", "testtype": "functional"},
            {"input": "[3, 2, 4]\n6", "output": "[1, 2]", "testtype": "functional"},
        ]),
        "private_test_cases": json.dumps([{"input": "[3, 3]\n6", "output": "[0, 1]", "testtype": "functional"}]),
        "metadata": json.dumps({"func_name": "twoSum"}),
    }
    row.update(overrides)
    return row


def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def _lcb_env(tmp_path: Path, rows: list[dict], **kwargs) -> CodeEnvironment:
    kwargs.setdefault("limits", FAST)
    return CodeEnvironment(source=_write_jsonl(tmp_path / "lcb.jsonl", rows), **kwargs)


def _fenced(code: str) -> str:
    return f"Here is my solution.\n\n```python\n{code}\n```\n"


ADD = "a, b = map(int, input().split())\nprint(a + b)"
TWO_SUM = """
class Solution:
    def twoSum(self, nums: List[int], target: int) -> List[int]:
        seen = {}
        for i, x in enumerate(nums):
            if target - x in seen:
                return [seen[target - x], i]
            seen[x] = i
"""


# ---- HumanEval ----

def test_humaneval_loads_offline_and_implements_the_protocol(humaneval):
    assert isinstance(humaneval, Environment)
    train, eval_ = humaneval.problems("train"), humaneval.problems("eval")
    assert len(train) + len(eval_) == 164 and len(eval_) == round(164 * 0.2)
    assert not {p.metadata["task_id"] for p in train} & {p.metadata["task_id"] for p in eval_}
    assert len({p.uid for p in train + eval_}) == 164
    prompt = humaneval.format_prompt(train[0])
    assert train[0].metadata["prompt"] in prompt and "```python" in prompt


@pytest.mark.slow  # a sample of HumanEval solutions, sandboxed: ~4 s
def test_humaneval_sample_of_canonical_solutions_pass(humaneval):
    for problem in _all(humaneval)[::16]:  # 11 problems spread over the set
        body = problem.metadata["canonical_solution"]
        as_body = humaneval.verify(problem, body)  # raw, indented function body
        full = humaneval.verify(problem, _fenced(problem.metadata["prompt"] + body))  # whole function, fenced
        assert as_body.passed and as_body.reward == 1.0, (problem.metadata["task_id"], as_body.feedback)
        assert full.passed and full.format_ok, (problem.metadata["task_id"], full.feedback)


@pytest.mark.slow  # every HumanEval solution through two sandboxes: ~40 s
def test_all_164_canonical_solutions_pass():
    env = CodeEnvironment(source="humaneval")  # default limits
    failures = [(p.metadata["task_id"], v.feedback) for p in _all(env)
                if not (v := env.verify(p, p.metadata["canonical_solution"])).passed]
    assert failures == []  # ~20 s on 2 idle cores: two sandboxes per problem (candidate and check() apart)


def test_humaneval_wrong_return_shows_expected_and_actual(humaneval):
    problem = _by_task(humaneval, "HumanEval/0")
    verdict = humaneval.verify(problem, _fenced("def has_close_elements(numbers, threshold):\n    return 42"))
    assert verdict.reward == 0.0 and not verdict.passed and verdict.details["status"] == "wrong_answer"
    assert "assert candidate(" in verdict.feedback
    assert "Expected: True" in verdict.feedback and "Your result: 42" in verdict.feedback


def test_humaneval_syntax_error_is_a_compile_error(humaneval):
    broken = _fenced("def has_close_elements(numbers, threshold:\n    pass")
    verdict = humaneval.verify(_by_task(humaneval, "HumanEval/0"), broken)
    assert verdict.details["status"] == "compile_error" and verdict.reward == 0.0
    assert verdict.feedback.startswith("Compile error: SyntaxError")


def test_humaneval_exception_shows_traceback_tail(humaneval):
    verdict = humaneval.verify(_by_task(humaneval, "HumanEval/0"), _fenced("    raise KeyError('boom')"))
    assert verdict.details["status"] == "runtime_error"
    assert "KeyError: 'boom'" in verdict.feedback and 'File "solution.py"' in verdict.feedback
    assert "main.py" not in verdict.feedback  # harness frames are hidden


def test_humaneval_infinite_loop_is_a_time_limit(humaneval):
    verdict = humaneval.verify(_by_task(humaneval, "HumanEval/0"), _fenced("    while True:\n        pass"))
    assert verdict.details["status"] == "time_limit" and "Time limit exceeded" in verdict.feedback


def test_humaneval_early_exit_is_not_a_pass(humaneval):
    verdict = humaneval.verify(_by_task(humaneval, "HumanEval/0"), _fenced("import sys\nsys.exit(0)"))
    assert not verdict.passed and verdict.details["status"] == "runtime_error"


def test_humaneval_verdict_cannot_be_forged_from_the_source_file(humaneval):
    forge = """
import os, re
def has_close_elements(numbers, threshold):
    for token in set(re.findall(r"[0-9a-f]{16}", open("main.py").read())):
        print(f"\\n{token} PASSED", flush=True)
    os._exit(0)
"""
    verdict = humaneval.verify(_by_task(humaneval, "HumanEval/0"), _fenced(forge))
    assert not verdict.passed and verdict.reward == 0.0


def test_humaneval_checker_has_the_prompt_helpers(humaneval):
    """check() runs without candidate code, so helpers it calls (poly, encode_cyclic) come from the prompt."""
    for task in ("HumanEval/32", "HumanEval/38"):
        problem = _by_task(humaneval, task)
        verdict = humaneval.verify(problem, problem.metadata["canonical_solution"])
        assert verdict.passed, (task, verdict.feedback)


def test_humaneval_non_literal_return_is_a_wrong_answer(humaneval):
    code = "def has_close_elements(numbers, threshold):\n    return (x for x in [True])"
    verdict = humaneval.verify(_by_task(humaneval, "HumanEval/0"), _fenced(code))
    assert verdict.details["status"] == "wrong_answer" and "not a plain Python value" in verdict.feedback


def test_humaneval_judging_leaves_no_descriptor_open(humaneval):
    before = len(os.listdir("/proc/self/fd"))
    for code in ("    return True", "    raise KeyError(1)", "import os\nos._exit(0)"):
        humaneval.verify(_by_task(humaneval, "HumanEval/0"), _fenced(code))
    assert len(os.listdir("/proc/self/fd")) == before


def test_literal_decoder_rebuilds_plain_values_only():
    from pmd.envs.code import harness

    scope: dict = {}
    exec(harness._PROTOCOL, scope)
    literal = scope["_pmd_literal"]
    values = [1, -2.5, "a'b\n", b"x", None, True, [1, (2, 3)], {"k": {1, 2}}, set(), frozenset({1}), (1,), 1 - 2j,
              float("inf"), -float("inf"), {(1, 2): [None]}]
    for value in values:
        assert literal(repr(value)) == value and type(literal(repr(value))) is type(value)
    assert literal(repr(float("nan"))) != literal(repr(float("nan")))  # nan comes back as nan
    for hostile in ("__import__('os')", "x", "(lambda: 1)()", "[].__class__", "open('f')", "1 if 1 else 2",
                    "<__main__.X object at 0x7f>", "[" * 300 + "]" * 300):
        with pytest.raises((ValueError, SyntaxError, RecursionError, MemoryError)):
            literal(hostile)


def test_humaneval_missing_entry_point(humaneval):
    problem = _by_task(humaneval, "HumanEval/0")
    verdict = humaneval.verify(problem, "Let me explain in words instead. The answer is to compare pairs.")
    assert verdict.details["status"] == "no_code" and verdict.extracted is None
    assert "No code found" in verdict.feedback


# ---- LiveCodeBench format ----

def test_stdin_problem_passes_with_compressed_private_tests(tmp_path):
    env = _lcb_env(tmp_path, [_stdin_row(), _stdin_row(question_id="x", question_content="Print A+B again, please.")])
    problem = _all(env)[0]
    assert len(problem.metadata["tests"]) == 3  # 1 public + 2 decoded private
    verdict = env.verify(problem, _fenced(ADD))
    assert verdict.passed and verdict.reward == 1.0 and verdict.format_ok
    assert verdict.details["passed_tests"] == 3 and "all 3 tests passed" in verdict.feedback
    assert "Read the inputs from stdin" in env.format_prompt(problem)


def test_stdin_wrong_answer_feedback_and_rewards(tmp_path):
    rows = [_stdin_row(), _stdin_row(question_id="x", question_content="Print A+B again, please.")]
    wrong = _fenced("a, b = map(int, input().split())\nprint(a + b if a > 0 else 999)")  # fails only the -5 5 case
    strict = _lcb_env(tmp_path, rows, reward="all")
    verdict = strict.verify(_all(strict)[0], wrong)
    assert verdict.reward == 0.0 and not verdict.passed and verdict.details["status"] == "wrong_answer"
    assert "Wrong answer on test 3/3" in verdict.feedback
    assert "Input:\n-5 5" in verdict.feedback and "Expected output:\n0" in verdict.feedback
    assert "Your output:\n999" in verdict.feedback

    fraction = _lcb_env(tmp_path, rows, reward="fraction")
    verdict = fraction.verify(_all(fraction)[0], wrong)
    assert verdict.reward == pytest.approx(2 / 3) and not verdict.passed
    assert verdict.feedback.startswith("Wrong answer on test 3/3") and verdict.feedback.endswith("(Passed 2/3 tests.)")


def test_stdin_runtime_error_stops_early_in_all_mode(tmp_path):
    env = _lcb_env(tmp_path, [_stdin_row(), _stdin_row(question_id="x", question_content="Another one.")])
    verdict = env.verify(_all(env)[0], _fenced("x = int(input())"))
    assert verdict.details["status"] == "runtime_error" and verdict.details["failed_test"] == 0
    assert "ValueError" in verdict.feedback and "Runtime error on test 1/3" in verdict.feedback


def test_stdin_output_comparison_is_judge_like(tmp_path):
    row = _stdin_row(public_test_cases=json.dumps([{"input": "", "output": "0.5 2\nyes", "testtype": "stdin"}]),
                     private_test_cases="")
    env = _lcb_env(tmp_path, [row, _stdin_row(question_id="x", question_content="Other.")])
    problem = next(p for p in _all(env) if len(p.metadata["tests"]) == 1)
    assert env.verify(problem, _fenced("print('0.5000000 2   ')\nprint('yes')\n\n")).passed
    assert not env.verify(problem, _fenced("print('0.6 2')\nprint('yes')")).passed
    assert not env.verify(problem, _fenced("print('0.5 2 yes')")).passed


def test_functional_problem(tmp_path):
    env = _lcb_env(tmp_path, [_functional_row(), _stdin_row()])
    problem = next(p for p in _all(env) if p.metadata["kind"] == "functional")
    assert "class Solution" in env.format_prompt(problem)
    assert env.verify(problem, _fenced(TWO_SUM)).passed

    wrong = env.verify(problem, _fenced("class Solution:\n    def twoSum(self, nums, target):\n        return [0, 1]"))
    assert wrong.details["status"] == "wrong_answer" and wrong.details["failed_test"] == 1
    assert "Input:\n[3, 2, 4]\n6" in wrong.feedback and "Expected: [1, 2]" in wrong.feedback
    assert "Your result: [0, 1]" in wrong.feedback

    crash = env.verify(problem, _fenced("class Solution:\n    def twoSum(self, nums, t):\n        return nums[99]"))
    assert crash.details["status"] == "runtime_error" and "IndexError" in crash.feedback

    missing = env.verify(problem, _fenced("class Solution:\n    def other(self):\n        pass"))
    assert missing.details["status"] == "runtime_error" and "twoSum" in missing.feedback

    plain_function = ("def twoSum(nums, target):\n"
                      "    return next([i, j] for j in range(len(nums)) for i in range(j)\n"
                      "                if nums[i] + nums[j] == target)")
    assert env.verify(problem, _fenced(plain_function)).passed  # a top-level function is accepted too


def test_functional_timeout_names_the_test(tmp_path):
    env = _lcb_env(tmp_path, [_functional_row(), _stdin_row()], reward="fraction")
    problem = next(p for p in _all(env) if p.metadata["kind"] == "functional")
    code = ("class Solution:\n    def twoSum(self, nums, t):\n"
            "        while t == 6:\n            pass\n        return [0, 1]")
    verdict = env.verify(problem, _fenced(code))
    assert verdict.reward == pytest.approx(1 / 3)
    assert "Time limit exceeded on test 2/3" in verdict.feedback


def test_restricted_unpickler_refuses_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    payload = base64.b64encode(zlib.compress(pickle.dumps(Evil()))).decode()
    with pytest.raises(DatasetError, match=r"lcb\.jsonl: row 1: private_test_cases .*forbidden pickle global"):
        _lcb_env(tmp_path, [_stdin_row(private_test_cases=payload)])
    assert not (tmp_path / "pwned").exists()


def test_parquet_and_directory_sources(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = tmp_path / "data"
    data.mkdir()
    pq.write_table(pa.Table.from_pylist([_stdin_row(), _functional_row()]), data / "part.parquet")
    _write_jsonl(data / "more.jsonl", [_stdin_row(question_id="y", question_content="Third question.")])
    env = CodeEnvironment(source=data, limits=FAST, eval_fraction=0.34)
    assert len(_all(env)) == 3
    problem = next(p for p in _all(env) if p.metadata["task_id"] == "abc000_a")
    assert env.verify(problem, _fenced(ADD)).passed


# ---- extraction ----

@pytest.mark.parametrize(
    ("response", "code", "how"),
    [
        ("```python\nprint(1)\n```\ntext\n```python\nprint(2)\n```", "print(2)\n", "python_fence"),
        ("```python\nprint(1)\n```\n```text\nexample output\n```", "print(1)\n", "python_fence"),
        ("Try:\n```\nprint(3)\n```", "print(3)\n", "fence"),
        ("```js\nconsole.log(1)\n```", "console.log(1)\n", "fence"),
        ("Answer:\n```python\nprint(4)\nprint(5)", "print(4)\nprint(5)", "open_fence"),
        ("import sys\nprint(sys.argv)", "import sys\nprint(sys.argv)\n", "raw"),
        ("The answer is to use a heap.", None, "none"),
        ("42", None, "none"),
        ("", None, "none"),
        ("```python\n```", None, "none"),
    ],
)
def test_extract_code(response, code, how):
    assert extract_code(response) == (code, how)


def test_extract_humaneval_body_after_prompt():
    prompt = "def f(x):\n    \"\"\"Double x.\"\"\"\n"
    assert extract_code("    return x * 2", prefix=prompt) == ("    return x * 2\n", "raw")
    assert extract_code("    return x * 2")[0] is not None  # also parses once dedented


# ---- loading errors, options, split ----

def test_malformed_rows_name_file_and_row(tmp_path):
    path = tmp_path / "lcb.jsonl"
    cases = [
        (["{not json"], r"lcb\.jsonl: row 1: invalid JSON"),
        ([_stdin_row(), "[1, 2]"], r"row 2: a row must be a JSON object"),
        ([_stdin_row(question_content="")], r"row 1: missing or empty 'question_content'"),
        ([_stdin_row(public_test_cases="[]", private_test_cases="")], r"row 1: no tests"),
        ([_stdin_row(public_test_cases="not json, not base64 !!")], r"row 1: public_test_cases is neither JSON"),
        ([_stdin_row(public_test_cases=json.dumps([{"input": 1}]))], r"public_test_cases\[0\] must be an object"),
        ([_functional_row(metadata="{}")], r"row 1: functional tests need metadata.func_name"),
        ([_stdin_row(metadata="{bad")], r"row 1: 'metadata' is not valid JSON"),
    ]
    for rows, pattern in cases:
        _write_jsonl(path, rows)
        with pytest.raises(DatasetError, match=pattern):
            CodeEnvironment(source=path)
    path.write_bytes(b'{"question_content": "caf\xe9"}\n')
    with pytest.raises(DatasetError, match=r"lcb\.jsonl: not valid UTF-8"):
        CodeEnvironment(source=path)
    with pytest.raises(DatasetError, match="does not exist"):
        CodeEnvironment(source=tmp_path / "missing.jsonl")


def test_bad_options_are_config_errors(tmp_path):
    for kwargs, pattern in [
        ({"eval_fraction": 0}, "eval_fraction"),
        ({"eval_fraction": 1.5}, "eval_fraction"),
        ({"reward": "partial"}, "reward"),
        ({"seed": "1"}, "seed"),
        ({"max_problems": 0}, "max_problems"),
        ({"limits": {"cpu": 1}}, "limits"),
        ({"limits": "fast"}, "limits"),
        ({"limits": {"cpu_seconds": -1}}, "cpu_seconds"),
    ]:
        with pytest.raises(ConfigError, match=pattern):
            CodeEnvironment(**kwargs)
    with pytest.raises(TypeError):
        CodeEnvironment("humaneval")  # keyword arguments only
    assert CodeEnvironment(limits={"cpu_seconds": 3}).limits == SandboxLimits(cpu_seconds=3)  # YAML-style mapping
    with pytest.raises(ConfigError, match="split"):
        CodeEnvironment().problems("test")


def test_split_is_deterministic_disjoint_and_deduplicated(tmp_path):
    rows = [_stdin_row(question_id=str(i), question_content=f"Problem number {i}.") for i in range(20)]
    rows.append(_stdin_row(question_id="dup", question_content="  problem   NUMBER 3. "))  # same question again
    env_a = _lcb_env(tmp_path, rows, seed=7, eval_fraction=0.25)
    env_b = _lcb_env(tmp_path, rows, seed=7, eval_fraction=0.25)
    assert env_a.duplicates_dropped == 1
    train, eval_ = env_a.problems("train"), env_a.problems("eval")
    assert len(train) == 15 and len(eval_) == 5
    assert [p.question for p in train] == [p.question for p in env_b.problems("train")]
    assert not {p.question for p in train} & {p.question for p in eval_}
    other_seed = _lcb_env(tmp_path, rows, seed=8, eval_fraction=0.25)
    assert {p.question for p in other_seed.problems("eval")} != {p.question for p in eval_}
    capped = _lcb_env(tmp_path, rows, seed=7, eval_fraction=0.25, max_problems=3)
    assert [p.question for p in capped.problems("eval")] == [p.question for p in eval_][:3]
    assert [p.uid for p in eval_] == [f"livecodebench/eval/7/{i}" for i in range(5)]
    named = _lcb_env(tmp_path, rows, name="lcb-v5")
    assert named.name == "lcb-v5" and all(p.family == "lcb-v5" for p in _all(named))


# ---- structured outcome ----

@pytest.mark.parametrize("passed, status, kind", [
    (True, "passed", ""), (False, "wrong_answer", "wrong_answer_on_test"), (False, "runtime_error", "runtime_error"),
    (False, "time_limit", "timeout"), (False, "memory_limit", "runtime_error"), (False, "compile_error", "compile_error"),
    (False, "no_code", "compile_error"), (False, "not_run", "other"), (False, "something new", "other"),
])
def test_code_failure_kind(passed, status, kind):
    from pmd.envs.code.environment import code_failure_kind
    from pmd.memory.records import FAILURE_KINDS

    assert code_failure_kind(passed, status) == kind and kind in FAILURE_KINDS


def test_code_verdicts_carry_a_failure_kind(humaneval):
    problem = _by_task(humaneval, "HumanEval/0")
    cases = {"no code at all": "compile_error", _fenced("def has_close_elements(numbers, threshold:\n    pass"):
             "compile_error", _fenced("def has_close_elements(numbers, threshold):\n    return 42"):
             "wrong_answer_on_test", _fenced("    raise KeyError('boom')"): "runtime_error",
             problem.metadata["canonical_solution"]: ""}
    assert {r: humaneval.verify(problem, r).failure_kind for r in cases} == cases


# ---- numeric comparison (issue 27): integers exact, floats relative; nothing the program prints can raise ----

@pytest.mark.parametrize("actual, expected, ok", [
    ("854567678675.6", "854567251392", False), ("19.000018", "19", False), ("19.0", "19", True), ("1.9e1", "19", True),
    ("19", "19.000018", True), ("19.00002", "19.000000", False), ("0.5000000", "0.5", True), ("1e-9", "0.0", False),
    ("sNaN", "19", False), ("-sNaN", "sNaN", False), ("snan", "1.5", False), ("1_9", "19", False),
    ("\u0661\u0669", "19", False), ("1e" + "9" * 5000, "1.5", False), ("9" * 5000, "9" * 5000, True),
])
def test_tokens_match_integers_exactly_and_floats_relatively(actual, expected, ok):
    from pmd.envs.code.compare import tokens_match

    assert tokens_match(actual, expected) is ok


@pytest.mark.parametrize("actual, expected, ok", [
    (19.000018, 19, False), (854567678675.6, 854567251392, False), (19.0, 19, True), (19, 19.0000001, True),
    ([1, [2.0000001]], [1, [2.0]], True), ([1, 2.5], [1, 3], False), (True, 1, False), (10 ** 400, 1.5, False),
    ({"a": 1.0}, {"a": 1}, True), (None, 0, False),
])
def test_values_match_integers_exactly_and_floats_relatively(actual, expected, ok):
    from pmd.envs.code.compare import values_match

    assert values_match(actual, expected) is ok


def test_values_match_survives_nesting_beyond_the_recursion_limit():
    from pmd.envs.code.compare import values_match

    deep_a, deep_b = [], []
    for _ in range(100_000):
        deep_a, deep_b = [deep_a], [deep_b]
    assert values_match(deep_a, deep_b)


def test_stdin_near_integer_and_snan_score_zero_without_raising(tmp_path):
    tests = [{"input": "", "output": "854567251392\n19\n", "testtype": "stdin"}]
    env = _lcb_env(tmp_path, [_stdin_row(public_test_cases=json.dumps(tests), private_test_cases=""),
                              _stdin_row(question_id="x", question_content="Other.")])
    problem = next(p for p in _all(env) if len(p.metadata["tests"]) == 1)
    assert env.verify(problem, _fenced("print(854567251392)\nprint(19)")).passed
    for printed in ("854567678675.6\n19", "854567251392\n19.000018", "sNaN\n19", "-sNaN\nsnan"):
        verdict = env.verify(problem, _fenced(f"print({printed!r})"))
        assert verdict.reward == 0.0 and verdict.failure_kind == "wrong_answer_on_test", printed


def test_functional_float_near_an_expected_int_scores_zero(tmp_path):
    tests = [{"input": "3\n4", "output": "19", "testtype": "functional"}]
    row = _functional_row(public_test_cases=json.dumps(tests), private_test_cases="[]",
                          metadata=json.dumps({"func_name": "twoSum"}))
    env = _lcb_env(tmp_path, [row, _stdin_row()])
    problem = next(p for p in _all(env) if p.metadata["kind"] == "functional")
    near = env.verify(problem, _fenced("class Solution:\n    def twoSum(self, a, b):\n        return a * b + 7.000018"))
    assert near.reward == 0.0 and near.failure_kind == "wrong_answer_on_test"
    assert env.verify(problem, _fenced("class Solution:\n    def twoSum(self, a, b):\n        return a * b + 7")).passed


@pytest.mark.slow  # a deep forged result through the sandbox: ~6 s
def test_forged_deep_result_and_judge_exceptions_score_zero(tmp_path, monkeypatch):
    env = _lcb_env(tmp_path, [_functional_row(), _stdin_row()])
    problem = next(p for p in _all(env) if p.metadata["kind"] == "functional")
    forged = """
import gc, json, os
nonce = next(c.cell_contents for f in gc.get_objects() if callable(f) and getattr(f, "__closure__", None)
             for c in f.__closure__ if isinstance(c.cell_contents, str) and len(c.cell_contents) == 16)
for i in range(3):
    print(f"\\n{nonce} RESULT {i} " + '{"json": ' + "[" * 60000 + "]" * 60000 + "}", flush=True)
os._exit(0)
"""
    verdict = env.verify(problem, _fenced(forged))
    assert verdict.reward == 0.0 and verdict.failure_kind != ""

    from pmd.envs.code import judge

    def boom(*args, **kwargs):
        raise RecursionError("on purpose")

    monkeypatch.setattr(judge, "values_match", boom)
    crashed = env.verify(problem, _fenced(TWO_SUM))
    assert crashed.reward == 0.0 and crashed.details["status"] in ("judge_error", "wrong_answer")
    monkeypatch.setattr(judge.Judge, "run", boom)
    crashed = env.verify(problem, _fenced(TWO_SUM))
    assert crashed.reward == 0.0 and crashed.details["status"] == "judge_error" and crashed.failure_kind == "other"
    assert env.judge_errors["RecursionError"] == 1

    # the count reaches every step's log row (metrics.jsonl and trackers; and the summary), so a crashing judge is
    # visible, not silent zeros
    from pmd.envs import EnvironmentSuite
    from pmd.step import Phases, PMDStep

    suite = EnvironmentSuite([env])
    assert suite.judge_errors() == {"RecursionError": 1}
    row = PMDStep(suite, Phases.for_algo("grpo")).log({"loss": 0.5})
    assert row["loss"] == 0.5 and row["env/judge_errors_total"] == 1.0
