"""The part of retrieval that does not depend on the query problem, kept up to date incrementally.

A paper-scale run stores ~250k rollouts of ~10^5 problems. Rebuilding the similar-problem index whenever the store
changes (every step) costs time linear in the store; so does scoring every problem in a Python loop. Instead:

- Problems are documents of an `InvertedIndex` (BM25 with incremental document frequencies). A sync reads only the
  rows added since the last one (experience and insight ids only grow): each new problem's first prompt becomes its
  document. A problem known only from insights (a seeded or hand-made store) is indexed by its insight texts until
  its first rollout arrives, which then replaces that document.
- Per-problem data (own insights, attempts) is never cached here: retrieval reads it with indexed SQL queries, so
  retirements and re-confirmations are seen at once.
- Active patterns are few (capped by consolidation), so they are re-read on every sync.

Ties in similarity are broken by the order problems first appeared in memory (earliest first), which a fresh build
and an incremental one share. If the store shrank (another connection replaced it), the index starts over.
"""

from __future__ import annotations

import weakref
from array import array
from dataclasses import dataclass, field
from typing import Any

from pmd.memory.store import MemoryStore, Pattern
from pmd.memory.text import BM25, InvertedIndex, tokenize

_SAME_FAMILY_BONUS = 1e9  # larger than any BM25 score: same-family problems rank first


@dataclass
class ProblemIndex:
    """Problems as BM25 documents plus the active patterns, synced to a store revision."""

    bm25: InvertedIndex = field(default_factory=InvertedIndex)
    doc_of: dict[str, int] = field(default_factory=dict)  # problem uid -> its live document id
    uids: list[str] = field(default_factory=list)  # document id -> problem uid
    family_ids: dict[str, int] = field(default_factory=dict)
    doc_family: array = field(default_factory=lambda: array("i"))  # document id -> family id
    from_insights: dict[str, list[str]] = field(default_factory=dict)  # uid -> insight texts, while it has no rollout
    patterns: list[Pattern] = field(default_factory=list)
    pattern_families: list[set[str]] = field(default_factory=list)
    pattern_bm25: BM25 = field(default_factory=lambda: BM25([]))
    last_experience_id: int = 0
    last_insight_id: int = 0
    key: Any = None
    syncs: int = 0  # how many times the index caught up with a changed store (for tests and benchmarks)
    _dense_family: Any = None

    def _add(self, uid: str, family: str, tokens: list[str]) -> None:
        old = self.doc_of.get(uid)
        if old is not None:
            self.bm25.remove(old, self._tokens_of_insight_doc(uid))
        self.doc_of[uid] = self.bm25.add(tokens)
        self.uids.append(uid)
        self.doc_family.append(self.family_ids.setdefault(family, len(self.family_ids)))
        self._dense_family = None

    def _tokens_of_insight_doc(self, uid: str) -> list[str]:
        return tokenize(" ".join(self.from_insights.get(uid, [])))

    def sync(self, store: MemoryStore) -> bool:
        """Catch up with `store`; returns whether anything was read. Cost: the rows added since the last sync."""
        key = store.revision()
        if key == self.key:
            return False
        max_exp, max_ins = store.max_ids()
        if max_exp < self.last_experience_id or max_ins < self.last_insight_id:
            fresh = ProblemIndex()  # the store shrank under us: it is another store now
            self.__dict__.update(fresh.__dict__)
        for _, uid, family, prompt in store.first_prompts_after(self.last_experience_id):
            if uid in self.doc_of and uid not in self.from_insights:
                continue
            tokens = tokenize(prompt)
            self._add(uid, family, tokens)
            self.from_insights.pop(uid, None)
        for _, uid, family, text in store.insights_without_experience_after(self.last_insight_id):
            if uid in self.doc_of and uid not in self.from_insights:
                continue
            texts = self.from_insights.get(uid, [])
            self._add(uid, family, tokenize(" ".join([*texts, text])))
            self.from_insights[uid] = [*texts, text]
        self.last_experience_id, self.last_insight_id = max_exp, max_ins
        self.patterns = sorted(store.patterns("active"), key=lambda p: p.id or 0)
        fams = store.insight_families([i for p in self.patterns for i in p.insight_ids])
        self.pattern_families = [{fams[i] for i in p.insight_ids if i in fams} for p in self.patterns]
        self.pattern_bm25 = BM25([tokenize(p.text) for p in self.patterns])
        self.key = key
        self.syncs += 1
        return True

    def ranked_problems(self, query: list[str], family: str, exclude_uid: str, limit: int) -> list[str]:
        """Up to `limit` problem uids most similar to the query: same family first (any score), then other families
        with a positive BM25 score; within each, by score, then first appearance. Vectorised over all problems."""
        import numpy as np

        n = len(self.uids)
        if limit <= 0 or n == 0:
            return []
        scores = self.bm25.scores(query)
        if self._dense_family is None:
            self._dense_family = np.array(self.doc_family, dtype=np.int64)
        same = self._dense_family == self.family_ids.get(family, -1)
        combined = np.where(same, scores + _SAME_FAMILY_BONUS, scores)
        eligible = (same | (scores > 0)) & self.bm25.alive()
        own = self.doc_of.get(exclude_uid)
        if own is not None:
            eligible[own] = False
        combined[~eligible] = -np.inf
        out = []
        for _ in range(min(limit, n)):  # k is small: k argmax passes beat a partition; argmax's first-index rule
            best = int(np.argmax(combined))  # is the tie-break (earliest first appearance)
            if combined[best] == -np.inf:
                break
            out.append(self.uids[best])
            combined[best] = -np.inf
        return out


_CACHE: weakref.WeakKeyDictionary[MemoryStore, ProblemIndex] = weakref.WeakKeyDictionary()


def problem_index(store: MemoryStore) -> ProblemIndex:
    """The store's index, caught up with its latest revision (built on first use, then updated in place)."""
    index = _CACHE.get(store)
    if index is None:
        index = _CACHE[store] = ProblemIndex()
    index.sync(store)
    return index
