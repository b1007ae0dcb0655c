"""Lexical text helpers shared by the store, consolidation and retrieval.

No model weights: similarity is over normalised words, so it is deterministic, fast, and does not drift with the
policy being trained (embedding with the policy itself would).
"""

from __future__ import annotations

import math
import re
from array import array
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

_NON_WORD = re.compile(r"[^\w\s]|_")
_SPACE = re.compile(r"\s+")

# Small, fixed English stopword list: enough to stop "the"/"to"/"a" from dominating Jaccard on short insights.
STOPWORDS = frozenset(
    """a an and are as at be been but by can could did do does for from had has have how i if in into is it its
    itself me my of on once only or our over so such than that the their them then there these they this those to
    too until up very was we were what when where which while who whom why will with would you your""".split()
)


def normalize_text(text: str) -> str:
    """Lowercase, punctuation -> space, collapse whitespace: "Check x>0!" and "check x > 0" normalise alike."""
    return _SPACE.sub(" ", _NON_WORD.sub(" ", text.lower())).strip()


def _stem(word: str) -> str:
    """A deliberately light suffix stripper ("carries"/"carrying"/"carried" -> "carry"): merges inflections only."""
    if len(word) <= 4 or not word.isalpha():
        return word
    for suffix, repl in (("ies", "y"), ("ied", "y"), ("ing", ""), ("ed", ""), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("ss"):
            return word[: -len(suffix)] + repl
    return word


def tokenize(text: str) -> list[str]:
    """Content words of `text`, normalised and lightly stemmed, stopwords removed, in order (duplicates kept)."""
    return [_stem(w) for w in normalize_text(text).split() if w not in STOPWORDS]


def jaccard(a: Iterable[str], b: Iterable[str]) -> float:
    """Token-set Jaccard similarity in [0, 1]; 0 when either side is empty."""
    sa, sb = set(a), set(b)
    if not sa or not sb:
        return 0.0
    return len(sa & sb) / len(sa | sb)


class BM25:
    """Okapi BM25 over pre-tokenised documents (the always-positive idf variant), for ranking by a query."""

    def __init__(self, docs: Sequence[Sequence[str]], k1: float = 1.2, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.tfs = [Counter(d) for d in docs]
        self.lengths = [len(d) for d in docs]
        self.avg_len = (sum(self.lengths) / len(docs)) if docs else 0.0
        df: Counter[str] = Counter()
        for tf in self.tfs:
            df.update(tf.keys())
        n = len(docs)
        self.idf = {t: math.log(1.0 + (n - c + 0.5) / (c + 0.5)) for t, c in df.items()}

    def scores(self, query: Iterable[str]) -> list[float]:
        """One score per document; 0.0 for documents sharing no term with the query."""
        terms = sorted(set(query) & self.idf.keys())
        out = []
        for tf, length in zip(self.tfs, self.lengths):
            norm = self.k1 * (1.0 - self.b + self.b * (length / self.avg_len if self.avg_len else 0.0))
            s = 0.0
            for t in terms:
                f = tf.get(t, 0)
                if f:
                    s += self.idf[t] * f * (self.k1 + 1.0) / (f + norm)
            out.append(s)
        return out


class InvertedIndex:
    """BM25 (same formula as `BM25`) over a growing set of documents, updated in place: `add` and `remove` touch only
    that document's postings and the document frequencies, never the rest of the index.

    Why: retrieval ranks every problem in memory against the query problem, and a paper-scale run holds ~10^5 of them.
    Rebuilding an index per step, or scoring every document in a Python loop, grows linearly with the store. Here a
    query visits only the postings of its own terms, scored with numpy in bulk; per-term weights are cached until
    the next change (they depend on the document frequency, the collection size and the mean length)."""

    def __init__(self, k1: float = 1.2, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self._docs: dict[str, array] = {}  # term -> doc ids containing it (ascending), live or removed
        self._tfs: dict[str, array] = {}  # term -> term frequency in each of those docs
        self._df: Counter[str] = Counter()  # term -> live docs containing it
        self._lengths = array("i")
        self._alive = array("b")
        self.n_live = 0
        self._total_len = 0
        self._cache: dict[str, tuple[Any, Any]] = {}
        self._dense: tuple[Any, Any] | None = None

    def __len__(self) -> int:
        """Document ids handed out so far (removed ones included): the length of `scores`."""
        return len(self._lengths)

    def add(self, tokens: Sequence[str]) -> int:
        """Index one document; returns its id (ids are consecutive from 0)."""
        doc = len(self._lengths)
        for term, tf in Counter(tokens).items():
            if term not in self._docs:
                self._docs[term], self._tfs[term] = array("i"), array("i")
            self._docs[term].append(doc)
            self._tfs[term].append(tf)
            self._df[term] += 1
        self._lengths.append(len(tokens))
        self._alive.append(1)
        self.n_live += 1
        self._total_len += len(tokens)
        self._changed()
        return doc

    def remove(self, doc: int, tokens: Sequence[str]) -> None:
        """Take document `doc` (indexed from `tokens`) out of the ranking and the statistics. Its postings stay
        (masked), so removal costs only its own terms."""
        if not self._alive[doc]:
            return
        self._alive[doc] = 0
        for term in set(tokens):
            self._df[term] -= 1
        self.n_live -= 1
        self._total_len -= self._lengths[doc]
        self._changed()

    def _changed(self) -> None:
        self._cache.clear()
        self._dense = None

    def _dense_arrays(self) -> tuple[Any, Any]:
        import numpy as np

        if self._dense is None:
            self._dense = (np.array(self._lengths, dtype=np.float64), np.array(self._alive, dtype=bool))
        return self._dense

    def alive(self) -> Any:
        """A numpy bool array: which document ids are live (not removed). Read-only: shared until the next change."""
        return self._dense_arrays()[1]

    def scores(self, query: Iterable[str]) -> Any:
        """A numpy float64 array with one BM25 score per document id; 0.0 for removed documents and for documents
        sharing no term with the query."""
        import numpy as np

        n = len(self._lengths)
        out = np.zeros(n)
        if not self.n_live:
            return out
        lengths, alive = self._dense_arrays()
        avg = self._total_len / self.n_live
        for term in sorted(set(query)):
            df = self._df.get(term, 0)
            if df <= 0:
                continue
            cached = self._cache.get(term)
            if cached is None:
                docs = np.array(self._docs[term], dtype=np.int64)
                tf = np.array(self._tfs[term], dtype=np.float64)
                idf = math.log(1.0 + (self.n_live - df + 0.5) / (df + 0.5))
                norm = self.k1 * (1.0 - self.b + self.b * (lengths[docs] / avg if avg else 0.0))
                weights = idf * tf * (self.k1 + 1.0) / (tf + norm)
                if len(docs) * 8 >= n:  # a common term: a dense row adds faster than a scatter
                    dense = np.zeros(n)
                    dense[docs] = weights
                    cached = (None, dense)
                else:
                    cached = (docs, weights)
                self._cache[term] = cached
            if cached[0] is None:
                out += cached[1]
            else:
                out[cached[0]] += cached[1]
        out[~alive] = 0.0
        return out
