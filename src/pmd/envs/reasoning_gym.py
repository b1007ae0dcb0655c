"""reasoning-gym task families as an Environment: procedural problems with exact verifiers, fully offline.

Train and held-out problems come from different generator seeds, and held-out questions that also occur in the
training set are dropped (small generators repeat), so evaluation never scores a memorised question.
"""

from __future__ import annotations

import hashlib
from typing import Any

from ..errors import ConfigError
from .answer import extract_answer, truncate
from .base import Problem, Verdict

SPLITS = ("train", "eval")


def _split_seed(seed: int, family: str, split: str) -> int:
    digest = hashlib.sha256(f"{seed}:{family}:{split}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


class ReasoningGymEnvironment:
    """One reasoning-gym dataset (`family`) with its generator `params`.

    Reward is the generator's own `score_answer` on the strictly extracted answer (1.0 = correct); an answer found
    only by the lenient fallback earns `lenient_credit` (default 0) and is recorded in `Verdict.details`.
    """

    def __init__(
        self,
        family: str,
        params: dict[str, Any] | None = None,
        train_size: int = 64,
        eval_size: int = 32,
        seed: int = 0,
        reveal_answer_in_feedback: bool = False,
        lenient_credit: float = 0.0,
        answer_instruction: str = "",
    ):
        import reasoning_gym
        from reasoning_gym.factory import DATASETS

        if family not in DATASETS:
            raise ConfigError(f"unknown reasoning-gym task '{family}' (e.g. basic_arithmetic, leg_counting, chain_sum)")
        self.name = family
        self.params = dict(params or {})
        self.lenient_credit = float(self.params.pop("lenient_credit", lenient_credit))
        self.reveal_answer_in_feedback = reveal_answer_in_feedback
        self.answer_instruction = answer_instruction
        self._sizes = {"train": train_size, "eval": eval_size}
        self._seed = seed
        self._datasets: dict[str, Any] = {}
        self._problems: dict[str, list[Problem]] = {}
        self._entries: dict[str, tuple[Any, dict[str, Any]]] = {}
        try:
            for split in SPLITS:
                # Over-generate eval so that dropping train duplicates still leaves eval_size problems.
                size = self._sizes[split] * (3 if split == "eval" else 1)
                self._datasets[split] = reasoning_gym.create_dataset(
                    family, size=size, seed=_split_seed(seed, family, split), **self.params
                )
        except (TypeError, ValueError, AssertionError) as exc:
            raise ConfigError(f"task {family}: invalid generator params {self.params}: {exc}") from None
        self._materialise()

    def _materialise(self) -> None:
        seen: set[str] = set()
        for split in SPLITS:
            dataset, out = self._datasets[split], []
            for index in range(len(dataset)):
                entry = dataset[index]
                question = str(entry["question"])
                if question in seen:
                    continue
                seen.add(question)
                uid = f"{self.name}/{split}/{self._seed}/{index}"
                out.append(Problem(uid=uid, family=self.name, question=question, answer=str(entry["answer"])))
                self._entries[uid] = (dataset, entry)
                if len(out) == self._sizes[split]:
                    break
            self._problems[split] = out

    def problems(self, split: str) -> list[Problem]:
        if split not in SPLITS:
            raise ConfigError(f"unknown split '{split}' (expected one of {SPLITS})")
        return list(self._problems[split])

    def format_prompt(self, problem: Problem) -> str:
        """The question, then the answer-format instruction (the strict format is what gets graded)."""
        return f"{problem.question}\n{self.answer_instruction}" if self.answer_instruction else problem.question

    def verify(self, problem: Problem, response: str) -> Verdict:
        dataset, entry = self._entries[problem.uid]
        ext = extract_answer(response)
        strict_score = self._score(dataset, entry, ext.strict)
        lenient_score = self._score(dataset, entry, ext.lenient)
        passed = strict_score >= 1.0
        reward = strict_score if ext.strict is not None else self.lenient_credit * lenient_score
        # The failure comes first: SDPO's teacher reads this text and the memory's reflector keys lessons on its
        # first sentence, so a wrong-but-formatted answer must not open with "Format: followed".
        if ext.strict is not None:
            how = f"Format: followed (found the final answer via {ext.how.replace('_', ' ')})."
            answer = f"Extracted answer: {truncate(ext.strict, 80)!r}."
            head = "Correct." if passed else "Wrong answer: the extracted answer is incorrect."
            parts = [head, answer, how]
        else:
            parts = ["No gradable answer: the reply has no final line 'Answer: <answer>' and no \\boxed{}."]
            if ext.lenient is not None:
                parts.append(f"The last value in the reply was {truncate(ext.lenient, 80)!r}.")
        if self.reveal_answer_in_feedback and not passed:
            parts.append(f"The correct answer is {problem.answer}.")
        return Verdict(
            reward=float(reward),
            passed=passed,
            feedback=" ".join(parts),
            extracted=ext.strict,
            format_ok=ext.strict is not None,
            details={"how": ext.how, "lenient": ext.lenient, "lenient_correct": lenient_score >= 1.0},
        )

    @staticmethod
    def _score(dataset: Any, entry: dict[str, Any], answer: str | None) -> float:
        if answer is None:
            return 0.0
        try:
            return float(dataset.score_answer(answer, entry) or 0.0)
        except Exception:  # a generator's scorer must not crash training on odd model text
            return 0.0
