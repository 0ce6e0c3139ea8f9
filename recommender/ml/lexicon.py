"""What every sentiment scorer shares, and the VADER lexicon baseline, without TensorFlow:
a web process serving VADER (no trained model has beaten it yet) never loads TensorFlow."""

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any

import numpy as np

NEGATIVE = "negative"
NEUTRAL = "neutral"
POSITIVE = "positive"
SENTIMENT_LABELS = (NEGATIVE, NEUTRAL, POSITIVE)

# VADER's documented convention: compound >= 0.05 positive, <= -0.05 negative.
VADER_COMPOUND_CUTOFF = 0.05


class SentimentScorer(ABC):
    """What serving needs: a score in [0, 1] (higher = more positive) and labels from it."""

    decision_threshold: float
    negative_threshold: float
    positive_threshold: float

    # Which scorer a text's score came from, as the API reports it.
    source = "lexicon"

    @abstractmethod
    def predict_positive_proba(self, texts: Iterable[str]) -> np.ndarray:
        """One finite score per text in [0, 1]."""

    def predict(self, texts: Iterable[str]) -> list[tuple[str, float]]:
        return [(label, score) for label, score, _ in self.predict_with_source(texts)]

    def predict_with_source(self, texts: Iterable[str]) -> list[tuple[str, float, str]]:
        """(label, score, source) per text; source is ``self.source`` unless a text had to
        be scored by a fallback."""
        scores = self.predict_positive_proba(texts)
        return [(label_for_score(score, self.negative_threshold, self.positive_threshold),
                 float(score), self.source) for score in scores]


def label_for_score(score: float, negative_threshold: float, positive_threshold: float) -> str:
    if score >= positive_threshold:
        return POSITIVE
    if score <= negative_threshold:
        return NEGATIVE
    return NEUTRAL


def as_text_array(texts: Iterable[Any]) -> np.ndarray:
    """Python strings in an object array: what TensorFlow takes as a string tensor
    (pandas 3 string columns are not object arrays), missing texts as ""."""
    values = texts.tolist() if hasattr(texts, "tolist") else list(texts)
    # A lone surrogate (valid JSON, "\ud800") is not UTF-8: tokenizers and TensorFlow
    # refuse it, so it becomes "?".
    return np.asarray(["" if value is None or value != value
                       else str(value).encode("utf-8", "replace").decode("utf-8")
                       for value in values], dtype=object)


# A headline is a line: past this many characters the rest is the body's job, and a long
# one would push the body past the encoder's limit.
MAX_HEADLINE_CHARS = 200
_ENDS_A_SENTENCE = re.compile(r"[.!?…][\"'”’)\]]*$")


def review_text(body: str, headline: str | None = None) -> str:
    """What a sentiment scorer reads of a review: its headline, then its body. Headlines
    ("Runs small, returned it") often say the verdict the body only circles, and the
    encoder truncates at its limit from the end, so the headline goes first (at most
    MAX_HEADLINE_CHARS of it). A headline that does not end a sentence gets a full stop,
    so it reads as one of its own."""
    headline = headline.strip()[:MAX_HEADLINE_CHARS].rstrip() if isinstance(headline, str) else ""
    if not headline:
        return body
    if not body.strip():
        return headline
    separator = " " if _ENDS_A_SENTENCE.search(headline) else ". "
    return f"{headline}{separator}{body}"


class VaderBaseline(SentimentScorer):
    """VADER behind the same interface: score = (compound + 1) / 2.

    Thresholds are VADER's documented +-0.05 cut-offs, never tuned. For binary figures
    only compound >= 0.05 counts as positive, as the convention says.
    """

    decision_threshold = (1 + VADER_COMPOUND_CUTOFF) / 2
    negative_threshold = (1 - VADER_COMPOUND_CUTOFF) / 2
    positive_threshold = (1 + VADER_COMPOUND_CUTOFF) / 2

    def __init__(self) -> None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self._analyzer = SentimentIntensityAnalyzer()

    def predict_positive_proba(self, texts: Iterable[str]) -> np.ndarray:
        compounds = [self._analyzer.polarity_scores(text)["compound"] for text in as_text_array(texts)]
        return (np.asarray(compounds, dtype=np.float64) + 1.0) / 2.0
