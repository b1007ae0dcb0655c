"""Lexical text helpers shared by the store, consolidation and retrieval.

No model weights: similarity is over normalised words, so it is deterministic, fast, and does not drift with the
policy being trained (embedding with the policy itself would).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence

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
