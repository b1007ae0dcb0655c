"""reasoning-gym task families as an Environment: procedural problems with exact verifiers, fully offline.

Train and held-out problems come from different generator seeds, and held-out questions that also occur in the
training set are dropped (small generators repeat), so evaluation never scores a memorised question.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any

from ..config_fields import _f, build_dataclass, known_hint
from ..errors import ConfigError
from .answer import answer_verdict, extract_answer
from .base import Problem, Verdict

SPLITS = ("train", "eval")
# The generator config keys pmd sets itself, per split: a task cannot set them.
_SET_BY_PMD = ("seed", "size")


@dataclass(frozen=True)
class ReasoningGymParams:
    """A reasoning_gym task's `params` (YAML `env.tasks[i].params`, one flat mapping): the keys pmd reads, typed
    here, and `generator`, every other key, passed through to reasoning-gym's generator config unchanged.

    Why a pass-through: each of reasoning-gym's ~100 generators has its own config dataclass, with annotations the
    config machinery does not type (tuples, dates, enums, nested configs), and coercing values (an int into a float)
    could change the generated text. So generator keys are validated, not typed: a key the generator does not know
    is an unknown key under `env.tasks[i].params`, and the values must pass the generator's own `validate()`; both
    are checked when the config is loaded, and create_dataset checks the values again when the environment is built.
    """

    lenient_credit: float = _f(0.0, "Reward, in [0, 1], for a correct answer found only by the lenient fallback "
                                    "(format missed).", ge=0, le=1)
    generator: dict[str, Any] = _f({}, "The generator's own config keys (written flat next to lenient_credit).")


def reasoning_gym_params(family: str, params: dict[str, Any], path: str, family_path: str) -> ReasoningGymParams:
    """The flat `params` of a task on generator `family`, split into pmd's typed keys and the validated
    generator keys; errors name `path.<key>`, or `family_path` for an unknown family."""
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: expected a mapping, got {type(params).__name__}")
    own = {f.name for f in dataclasses.fields(ReasoningGymParams)} - {"generator"}
    typed = build_dataclass(ReasoningGymParams, {k: v for k, v in params.items() if k in own}, path)
    generator = {k: v for k, v in params.items() if k not in own}
    _check_generator(_generator_config(family, family_path), generator, path, own)
    return dataclasses.replace(typed, generator=generator)


def _generator_config(family: str, where: str) -> type:
    """reasoning-gym's config dataclass for generator `family`."""
    from reasoning_gym.factory import DATASETS

    if family not in DATASETS:
        raise ConfigError(f"{where}: unknown reasoning-gym task '{family}' (e.g. basic_arithmetic, leg_counting, "
                          "chain_sum)")
    return DATASETS[family][1]


def _check_generator(config_cls: type, generator: dict[str, Any], path: str, own: set[str]) -> None:
    """Keys against the generator's config dataclass, values by its own validate() (as create_dataset would)."""
    known = {f.name for f in dataclasses.fields(config_cls)} - set(_SET_BY_PMD)
    unknown = sorted(set(generator) - known)
    if unknown:
        raise ConfigError(f"unknown config key {path}.{unknown[0]} ({known_hint(unknown[0], known | own, f'{path}.')})")
    try:
        config = config_cls(**generator)
        if hasattr(config, "validate"):
            config.validate()
    except (TypeError, ValueError, AssertionError) as exc:
        raise ConfigError(f"{path}: invalid generator params {generator}: {exc}") from None


def _split_seed(seed: int, family: str, split: str) -> int:
    digest = hashlib.sha256(f"{seed}:{family}:{split}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


class ReasoningGymEnvironment:
    """One reasoning-gym dataset (`family`) with its `params` (typed, or the flat mapping a task config holds).

    Reward is the generator's own `score_answer` on the strictly extracted answer (1.0 = correct); an answer found
    only by the lenient fallback earns `lenient_credit` (default 0; a mapping's own key wins) and is recorded in
    `Verdict.details`.
    """

    def __init__(
        self,
        family: str,
        params: ReasoningGymParams | dict[str, Any] | None = None,
        train_size: int = 64,
        eval_size: int = 32,
        seed: int = 0,
        reveal_answer_in_feedback: bool = False,
        lenient_credit: float = 0.0,
        answer_instruction: str = "",
    ):
        import reasoning_gym

        if not isinstance(params, ReasoningGymParams):
            raw = {"lenient_credit": lenient_credit, **(params or {})}
            params = reasoning_gym_params(family, raw, "reasoning_gym.params", "reasoning_gym.name")
        self.name = family
        self.params = params
        self.lenient_credit = params.lenient_credit
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
                    family, size=size, seed=_split_seed(seed, family, split), **params.generator
                )
        except (TypeError, ValueError, AssertionError) as exc:
            raise ConfigError(f"task {family}: invalid generator params {params.generator}: {exc}") from None
        try:
            self._materialise()
        except Exception as exc:  # reasoning-gym's own generator code failing on these params/sizes: name it, once
            raise ConfigError(f"task {family}: the reasoning-gym generator raised {type(exc).__name__} "
                              f"({str(exc)[:200]}) with params {params.generator}, train_size {train_size}, "
                              f"eval_size {eval_size}, seed {seed}; try other sizes or params") from None

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
        return answer_verdict(ext, strict_score, lenient_score, problem.answer, self.reveal_answer_in_feedback,
                              self.lenient_credit)

    @staticmethod
    def _score(dataset: Any, entry: dict[str, Any], answer: str | None) -> float:
        if answer is None:
            return 0.0
        try:
            return float(dataset.score_answer(answer, entry) or 0.0)
        except Exception:  # a generator's scorer must not crash training on odd model text
            return 0.0
