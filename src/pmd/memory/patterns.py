"""Cross-problem consolidation: a behaviour that recurs across problems becomes a pattern; a pattern whose evidence
stops holding is retired, so memory forgets what the current policy no longer does.

A pattern states a BEHAVIOUR ("state the final result on its own line as 'Answer: <answer>'"), never one problem's
content (its answer, its numbers, a quoted reply): patterns are shown to the teacher of *other* problems. Grouping
insights by text similarity broke that rule (issue 12, case 1): "A short attempt that passed: The answer is 12." and
"…is 0." shared their template words, merged, and "…is 12" was shown for "What is 9 - 2?". So patterns are built
from structured keys, and every text passes a leak guard before anyone reads it.

The algorithm, run on a schedule by the memory loop (`consolidate(store, step)`):

1. Cluster by behaviour key (`cluster_key`): active lessons by (failure kind, family), active strategies by their
   behaviour key across families. The key is the insight's `tag`, set by the reflector from structured outcomes.
   Untagged insights are never consolidated: without a key, shared template words look like a shared behaviour.
   An existing pattern belongs to the key most of its insights (of any status) have, so it keeps its id and text.
2. A cluster's evidence holds when at least `min_problems` distinct problems confirmed it (updated_step) within
   `stale_after_steps` of `step`. A cluster whose insights all retired (memory/ageing.py) has no evidence.
3. Text: a pattern keeps its text once written. A new pattern's text comes from the writer: a template keyed by the
   tag (`prompts.pattern_template`, mode deterministic) or a model that summarises the cluster's insights (mode
   model; the template is the fallback). Every candidate text must pass `leak_reasons` against the content of the
   cluster's problems and `content_free`; an existing text is re-checked against each problem that newly joins it.
   A cluster with no acceptable text is not promoted (or is retired).
4. Among clusters whose evidence holds and that have a text, the `max_active` best (most supporting problems, then
   most fresh problems, then most total support; existing patterns win ties) are active: new ones are promoted,
   retired ones re-activated, active ones updated when their insights/support changed. Every other pattern is
   retired, as is a pattern no key claims (e.g. one written before tags existed).

`plan` is pure (insights, patterns, the problems' content and a writer in; actions out); `consolidate` applies a
plan in one transaction.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pmd.config import ConsolidationConfig
from pmd.memory.store import Insight, MemoryStore, Pattern
from pmd.memory.text import jaccard, normalize_text, tokenize
from pmd.prompts import consolidation_messages, pattern_template

ClusterKey = tuple[str, str, str]  # (kind, tag, family; "" = across families)


@dataclass(frozen=True)
class ConsolidationReport:
    """What one consolidation changed (for logs)."""

    promoted: int = 0  # new active patterns
    updated: int = 0  # active patterns whose insights/support/text changed
    retired: int = 0  # active -> retired (stale evidence, over max_active, no acceptable text, no key)
    reactivated: int = 0  # retired -> active (evidence returned)
    rejected: int = 0  # candidate texts refused by the leak guard, the content-free check or as duplicates


@dataclass(frozen=True)
class PatternAction:
    """One change to apply: `pattern_id` None means create."""

    pattern_id: int | None
    kind: str
    text: str
    status: str
    support_problems: int
    insight_ids: tuple[int, ...]
    counted_as: str | None  # "promoted" | "updated" | "retired" | "reactivated" | None (silent bookkeeping)


# ------------------------------------------------------------------------------------------- leak guard

_DIGIT = re.compile(r"\d")
# A quoted span: straight quotes that open after a non-word character and close before one (so "don't" is no
# quote), or typographic quotes.
_QUOTE = re.compile(r"(?<!\w)'([^'\n]+?)'(?!\w)|\"([^\"\n]+?)\"|\u201c([^\u201d\n]+?)\u201d|\u2018([^\u2019\n]+?)\u2019")
_PLACEHOLDER = re.compile(r"<[^<>\s][^<>]*>")
COPY_WORDS = 6  # this many consecutive words shared with a problem's question or attempt make a text a copy
# Answers that are also everyday words (or a single letter) leak only where they are given as an answer.
_SHORT_ANSWER_WORDS = frozenset({"true", "false", "yes", "no", "none"})


@dataclass(frozen=True)
class ProblemContent:
    """What belongs to one problem only, which a pattern must never carry to another: every answer its attempts
    gave (the passing one is its solution, the wrong ones are its numbers too) and its question and attempts."""

    uid: str
    answers: frozenset[str] = frozenset()
    texts: tuple[str, ...] = ()


def problem_specific(text: str, allowed: Iterable[str] = ()) -> list[str]:
    """The checks that need no sources: digits (a problem's numbers) and quoted words without a <placeholder> (a
    quoted reply or value). `allowed` phrases (family names such as 'gsm8k') are ignored. [] = neither."""
    for phrase in sorted(allowed, key=len, reverse=True):
        if phrase:
            text = re.sub(re.escape(phrase), " ", text, flags=re.IGNORECASE)
    reasons = []
    if _DIGIT.search(text):
        reasons.append("digits")
    spans = (next(g for g in m.groups() if g is not None) for m in _QUOTE.finditer(text))
    if any(re.search(r"\w", q) and not _PLACEHOLDER.search(q) for q in spans):  # '...' (a mask) quotes nothing
        reasons.append("quote")
    return reasons


def _gives_answer(text: str, norm: str, answer: str) -> bool:
    a = normalize_text(answer)
    if not a:
        return False
    if (len(a) <= 2 and " " not in a) or a in _SHORT_ANSWER_WORDS:  # "B", "no": only stated as an answer
        return re.search(rf"\b(?:answer|option|choice|result)\s*(?:is|was|:|=)?\s*\(?{re.escape(a)}\b",
                         normalize_text(text)) is not None
    return f" {a} " in f" {norm} "


def _ngrams(norm: str, n: int) -> set[str]:
    words = norm.split()
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


def leak_reasons(text: str, sources: Iterable[ProblemContent], allowed: Iterable[str] = ()) -> list[str]:
    """Why `text` would carry a source problem's content to another problem ([] = it would not): 'digits',
    'quote' (see `problem_specific`), 'answer' (an answer of a source problem, as a whole word sequence),
    'copy' (COPY_WORDS consecutive words of a source's question or attempt). Defence in depth: templates and model
    outputs are checked alike, and a false alarm only costs one pattern."""
    allowed = [a for a in allowed if a]
    reasons = problem_specific(text, allowed)
    stripped = text
    for phrase in sorted(allowed, key=len, reverse=True):
        stripped = re.sub(re.escape(phrase), " ", stripped, flags=re.IGNORECASE)
    norm = normalize_text(stripped)
    grams = _ngrams(norm, COPY_WORDS)
    sources = list(sources)
    if any(_gives_answer(stripped, norm, a) for s in sources for a in s.answers):
        reasons.append("answer")
    if grams and any(g in f" {normalize_text(t)} " for s in sources for t in s.texts for g in grams):
        reasons.append("copy")
    return reasons


# Words that say nothing about *how* to solve anything: a line made only of these (and stopwords) is a tautology
# such as "the key is to always find the answer to the question".
GENERIC_WORDS = frozenset(tokenize(
    "answer answers question questions problem problems correct correctly right solve solving solved solution "
    "solutions always never find finding make sure careful carefully good best better way try trying get give "
    "need needs should must important key think thinking approach method work working help helps use using just "
    "also every each thing things task tasks do doing done know understand understanding"
))


def content_free(text: str, allowed: Iterable[str] = ()) -> bool:
    """True when `text` names fewer than two distinct words beyond generic ones (GENERIC_WORDS, stopwords and the
    `allowed` family names): such a line cannot state a behaviour."""
    skip = GENERIC_WORDS | {t for a in allowed for t in tokenize(a)}
    return len({t for t in tokenize(text) if t not in skip}) < 2


# ------------------------------------------------------------------------------------------- clusters


def cluster_key(ins: Insight) -> ClusterKey | None:
    """The behaviour an insight is evidence for: lessons by failure kind within their family, strategies by
    behaviour key across families. None (never consolidated) without a tag."""
    if not ins.tag:
        return None
    return (ins.kind, ins.tag, ins.family if ins.kind == "lesson" else "")


@dataclass
class Cluster:
    """Active insights sharing a key, and the pattern of that key if one exists."""

    key: ClusterKey
    members: list[Insight] = field(default_factory=list)
    pattern: Pattern | None = None

    @property
    def problems(self) -> set[str]:
        return {m.problem_uid for m in self.members}

    @property
    def families(self) -> set[str]:
        return {m.family for m in self.members}

    def fresh(self, step: int, stale_after_steps: int) -> int:
        return len({m.problem_uid for m in self.members if step - m.updated_step <= stale_after_steps})


def build_clusters(insights: Sequence[Insight],
                   patterns: Sequence[Pattern]) -> tuple[list[Cluster], list[Pattern]]:
    """Step 1 of the module docstring: (clusters in key order, patterns no key claims)."""
    by_id = {i.id: i for i in insights if i.id is not None}
    clusters: dict[ClusterKey, Cluster] = {}
    for ins in insights:
        key = cluster_key(ins)
        if key is not None and ins.status == "active":
            clusters.setdefault(key, Cluster(key)).members.append(ins)
    orphans: list[Pattern] = []
    for p in sorted(patterns, key=lambda p: p.id or 0):
        keys = Counter(k for k in (cluster_key(by_id[i]) for i in p.insight_ids if i in by_id) if k is not None)
        if not keys:
            orphans.append(p)
            continue
        key = min(keys, key=lambda k: (-keys[k], k))
        cluster = clusters.setdefault(key, Cluster(key))
        if cluster.pattern is None:
            cluster.pattern = p
        else:
            orphans.append(p)  # a second pattern for one behaviour: the older one keeps it
    for c in clusters.values():
        c.members.sort(key=lambda i: (-i.support, -i.updated_step, i.id or 0))
    return [clusters[k] for k in sorted(clusters)], orphans


# ------------------------------------------------------------------------------------------- writers


class PatternWriter(Protocol):
    """Writes a candidate text for each cluster (None = nothing to propose). `model` says whether the texts are
    model-written (then checked for duplicates too)."""

    model: bool

    def write(self, clusters: Sequence[Cluster]) -> list[str | None]: ...


class TemplateWriter:
    """mode deterministic: the template of the cluster's tag (`prompts.pattern_template`)."""

    model = False

    def write(self, clusters: Sequence[Cluster]) -> list[str | None]:
        return [pattern_template(*c.key) for c in clusters]


_PATTERN_LINE = re.compile(r"^\s*[-*\d.)]*\s*\**pattern\**\s*[:\uff1a]\s*(.+?)\s*$", re.IGNORECASE)
MIN_WORDS, MAX_WORDS = 4, 40


def parse_pattern(text: str) -> str | None:
    """The first 'Pattern: …' line of a model's reply, unquoted, or None when there is none or it is too short or
    too long to be one behaviour."""
    for line in (text or "").splitlines():
        m = _PATTERN_LINE.match(line)
        if m:
            body = m.group(1).strip(" \t\"*\u201c\u201d")
            return body if MIN_WORDS <= len(body.split()) <= MAX_WORDS else None
    return None


def mask_specifics(text: str) -> str:
    """A note as the consolidating model reads it: numbers -> N, quoted values -> '...' (what it cannot see, it
    cannot copy into a pattern)."""
    text = _QUOTE.sub(lambda m: m.group(0) if _PLACEHOLDER.search(m.group(0)) else "'...'", text)
    return re.sub(r"-?\d+(?:[.,]\d+)*", "N", " ".join(text.split()))


class ModelPatternWriter:
    """mode model: a model (the policy or the reflector model) summarises each cluster's insights, one per
    problem and masked, into one behaviour line. `generate(list_of_chat_prompts) -> list_of_texts` is the memory
    loop's reflection generator, so this class does not care where the model runs."""

    model = True

    def __init__(self, generate: Callable[[list[list[dict]]], list[str]], max_notes: int = 6,
                 system_prompt: str = ""):
        self.generate = generate
        self.max_notes = max_notes
        self.system_prompt = system_prompt

    def notes(self, cluster: Cluster) -> list[str]:
        """Each problem's best-supported insight, masked, distinct, at most `max_notes`."""
        out: list[str] = []
        seen: set[str] = set()
        for m in cluster.members:
            if m.problem_uid in seen:
                continue
            seen.add(m.problem_uid)
            note = mask_specifics(m.text)
            if note not in out:
                out.append(note)
            if len(out) == self.max_notes:
                break
        return out

    def prompts(self, clusters: Sequence[Cluster]) -> list[list[dict]]:
        return [consolidation_messages(c.key[0], c.key[2], self.notes(c), self.system_prompt) for c in clusters]

    def write(self, clusters: Sequence[Cluster]) -> list[str | None]:
        if not clusters:
            return []
        return [parse_pattern(t) for t in self.generate(self.prompts(clusters))]


# ------------------------------------------------------------------------------------------- plan


def plan(
    insights: Sequence[Insight],
    patterns: Sequence[Pattern],
    step: int,
    config: ConsolidationConfig = ConsolidationConfig(),
    content: Callable[[str], ProblemContent] | None = None,
    writer: PatternWriter | None = None,
) -> tuple[list[PatternAction], int]:
    """Pure core of `consolidate`: (the pattern changes that make memory agree with the insights at `step`, the
    number of candidate texts rejected). `insights`: every status (a pattern's key is read through its retired
    insights too); `content(uid)`: what the leak guard protects for a problem; `writer`: TemplateWriter by default."""
    content = content or ProblemContent
    writer = writer or TemplateWriter()
    by_id = {i.id: i for i in insights if i.id is not None}
    clusters, orphans = build_clusters(insights, patterns)
    min_p, stale = config.min_problems, config.stale_after_steps
    holding = [c for c in clusters if c.fresh(step, stale) >= min_p]

    def ok(text: str | None, c: Cluster, uids: Iterable[str]) -> bool:
        fams = c.families | {c.key[2]}
        return bool(text) and not leak_reasons(text, [content(u) for u in sorted(uids)], fams) \
            and not content_free(text, fams)  # type: ignore[arg-type]

    texts: dict[ClusterKey, str] = {}
    needs: list[Cluster] = []
    for c in holding:
        p = c.pattern
        if p is not None:
            before = {by_id[i].problem_uid for i in p.insight_ids if i in by_id}
            if ok(p.text, c, c.problems - before):
                texts[c.key] = p.text
                continue
        needs.append(c)
    rejected = 0
    written = writer.write(needs)
    taken = [(c.key[0], p.text) for c in clusters if (p := c.pattern) is not None and p.status == "active"]
    taken += [(k[0], t) for k, t in texts.items()]
    for c, text in zip(needs, written, strict=True):
        candidates = [text] if writer.model else []
        template = pattern_template(*c.key)
        candidates += [template] if template and template not in candidates else []
        for i, cand in enumerate(candidates):
            duplicate = writer.model and i == 0 and cand is not None and any(
                kind == c.key[0] and jaccard(tokenize(cand), tokenize(t)) >= config.similarity_threshold
                for kind, t in taken if t != (c.pattern.text if c.pattern else None))
            if ok(cand, c, c.problems) and not duplicate:
                texts[c.key] = cand  # type: ignore[assignment]
                taken.append((c.key[0], cand))  # type: ignore[arg-type]
                break
            rejected += cand is not None
    support = {c.key: sum(m.support for m in c.members) for c in clusters}

    def rank(c: Cluster) -> tuple:
        existing = c.pattern is not None
        return (-len(c.problems), -c.fresh(step, stale), -support[c.key], not existing,
                c.pattern.id if existing else 0, c.key)  # type: ignore[union-attr]

    active = {c.key for c in sorted((c for c in holding if c.key in texts), key=rank)[: config.max_active]}

    actions: list[PatternAction] = []
    for c in clusters:
        ids = tuple(sorted(m.id for m in c.members if m.id is not None))
        p = c.pattern
        if p is None:
            if c.key in active:
                actions.append(PatternAction(None, c.key[0], texts[c.key], "active", len(c.problems), ids,
                                             "promoted"))
            continue
        ids = ids or tuple(sorted(p.insight_ids))  # all insights retired: keep them, so the key stays readable
        support_problems = len(c.problems) or p.support_problems
        text = texts.get(c.key, p.text)
        changed = ids != tuple(sorted(p.insight_ids)) or support_problems != p.support_problems or text != p.text
        if c.key in active:
            counted = "reactivated" if p.status == "retired" else ("updated" if changed else None)
            status = "active"
        else:
            counted = "retired" if p.status == "active" else None
            status = "retired"
        if counted is not None or changed:
            actions.append(PatternAction(p.id, p.kind, text, status, support_problems, ids, counted))
    for p in orphans:
        if p.status == "active":
            actions.append(PatternAction(p.id, p.kind, p.text, "retired", p.support_problems,
                                         tuple(sorted(p.insight_ids)), "retired"))
    return actions, rejected


def problem_content(store: MemoryStore, uid: str) -> ProblemContent:
    """A problem's content as the leak guard reads it: every extracted answer, its question and its attempts."""
    exps = store.experiences(problem_uid=uid)
    texts = ([exps[-1].prompt] if exps else []) + [e.response for e in exps]
    return ProblemContent(uid, frozenset(e.answer for e in exps if e.answer), tuple(texts))


def consolidate(
    store: MemoryStore, step: int, config: ConsolidationConfig = ConsolidationConfig(),
    writer: PatternWriter | None = None,
) -> ConsolidationReport:
    """Bring the store's patterns in line with its insights at `step` (see the module docstring), atomically.
    The leak guard reads each problem's content from the store only for problems a text is checked against."""
    content = functools.cache(functools.partial(problem_content, store))
    actions, rejected = plan(store.insights(status=None), store.patterns(status=None), step, config, content, writer)
    counts = {"promoted": 0, "updated": 0, "retired": 0, "reactivated": 0}
    with store.transaction():
        for a in actions:
            if a.pattern_id is None:
                store.add_pattern(
                    a.kind, a.text, a.insight_ids, a.support_problems, step, status=a.status  # type: ignore[arg-type]
                )
            else:
                store.update_pattern(
                    a.pattern_id, step, text=a.text, status=a.status,  # type: ignore[arg-type]
                    support_problems=a.support_problems, insight_ids=a.insight_ids,
                )
            if a.counted_as is not None:
                counts[a.counted_as] += 1
    return ConsolidationReport(**counts, rejected=rejected)
