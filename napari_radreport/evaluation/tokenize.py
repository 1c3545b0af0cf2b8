"""The tokenisations the seed papers' metrics use, named so that a score can say which one it used.

- ``whitespace``: ``str.split()``; what pycocoevalcap's BLEU does to the strings it is given (RRG24).
- ``13a``: the mteval-v13a rules (WMT; sacrebleu and HF ``evaluate``'s BLEU default); case kept.
- ``rouge``: rouge-score's default: lowercase, every non-alphanumeric run becomes a space, optionally the
  Porter stemmer (NLTK's, as rouge-score uses) on tokens longer than 3 characters.
- ``nltk-words``: NLTK's ``word_tokenize`` as HF ``evaluate``'s METEOR calls it, with one difference:
  sentences are split by an *untrained* Punkt model, because NLTK's English Punkt tables are data that no
  package registry provides. Only a sentence that ends in an abbreviation Punkt's English model knows is split
  differently.
"""

from __future__ import annotations

import re
from functools import lru_cache

_13A_RULES = (
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),  # punctuation and symbols
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),  # period / comma not after a digit
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),  # period / comma not before a digit
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),  # dash after a digit
)
_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_VALID_ROUGE_TOKEN = re.compile(r"^[a-z0-9]+$")


def whitespace(text: str) -> list[str]:
    """Split on runs of whitespace; case and punctuation kept."""
    return text.split()


@lru_cache(maxsize=4096)
def _tokenize_13a(text: str) -> tuple[str, ...]:
    line = text.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:
        line = line.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    line = f" {line} "
    for pattern, replacement in _13A_RULES:
        line = pattern.sub(replacement, line)
    return tuple(line.split())


def mteval_13a(text: str) -> list[str]:
    """mteval-v13a tokens (punctuation split off, except inside numbers); case kept."""
    return list(_tokenize_13a(text))


@lru_cache(maxsize=1)
def _porter():
    from nltk.stem import porter

    return porter.PorterStemmer()  # rouge-score's choice: NLTK's default (NLTK_EXTENSIONS) mode


@lru_cache(maxsize=65536)
def _stem(token: str) -> str:
    return _porter().stem(token)


def rouge_tokens(text: str, stem: bool = False) -> list[str]:
    """rouge-score's default tokens: lowercased alphanumeric runs, Porter-stemmed when longer than 3."""
    tokens = re.split(r"\s+", _NON_ALNUM.sub(" ", text.lower()))
    if stem:
        tokens = [_stem(t) if len(t) > 3 else t for t in tokens]
    return [t for t in tokens if _VALID_ROUGE_TOKEN.match(t)]


@lru_cache(maxsize=1)
def _nltk_tokenizers():
    from nltk.tokenize.destructive import NLTKWordTokenizer
    from nltk.tokenize.punkt import PunktSentenceTokenizer

    return PunktSentenceTokenizer(), NLTKWordTokenizer()


def nltk_words(text: str) -> list[str]:
    """NLTK ``word_tokenize`` with an untrained Punkt sentence splitter (see the module docstring)."""
    sentences, words = _nltk_tokenizers()
    return [token for sentence in sentences.tokenize(text) for token in words.tokenize(sentence)]
