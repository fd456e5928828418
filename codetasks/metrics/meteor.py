"""METEOR for code summarization (Banerjee & Lavie, 2005), via NLTK's ``meteor_score``.

METEOR aligns prediction and reference words by exact form, Porter stem and WordNet synonym,
then scores ``Fmean * (1 - 0.5 * (chunks / matches) ** 3)`` with
``Fmean = P * R / (0.9 * P + 0.1 * R)``. We lower-case, split words from punctuation, and
report the mean sentence score times 100. (NLTK looks up synonyms of the words left unmatched
after the stem stage in their stemmed form, so "car"/"auto" match but "car"/"automobile",
stemmed to "automobil", do not.)

NLTK needs the WordNet 3.0 database, which it normally downloads; nothing may be downloaded
here. We use NLTK's own ``corpora/wordnet`` when it is installed, else Debian's WordNet 3.0
files (``apt-get install wordnet-base wordnet-sense-index``), copied once into an NLTK data
layout under the user cache directory, since NLTK only reads corpora from its data paths and
also needs a ``lexnames`` file that Debian does not ship. ``meteor_available()`` says whether
either source is present; ``meteor()`` raises :class:`MeteorUnavailable` when neither is.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from codetasks.metrics._pairs import check_pairs

DEBIAN_WORDNET = Path("/usr/share/wordnet")
_WORDNET_FILES = (
    "cntlist.rev", "index.sense", "index.adj", "index.adv", "index.noun", "index.verb",
    "data.adj", "data.adv", "data.noun", "data.verb", "adj.exc", "adv.exc", "noun.exc",
    "verb.exc",
)  # fmt: skip
# WordNet 3.0 lexicographer files, numbered 00-44 in this order (lexnames(5WN)).
_LEXNAMES = [
    "adj.all",
    "adj.pert",
    "adv.all",
    "noun.Tops",
    "noun.act",
    "noun.animal",
    "noun.artifact",
    "noun.attribute",
    "noun.body",
    "noun.cognition",
    "noun.communication",
    "noun.event",
    "noun.feeling",
    "noun.food",
    "noun.group",
    "noun.location",
    "noun.motive",
    "noun.object",
    "noun.person",
    "noun.phenomenon",
    "noun.plant",
    "noun.possession",
    "noun.process",
    "noun.quantity",
    "noun.relation",
    "noun.shape",
    "noun.state",
    "noun.substance",
    "noun.time",
    "verb.body",
    "verb.change",
    "verb.cognition",
    "verb.communication",
    "verb.competition",
    "verb.consumption",
    "verb.contact",
    "verb.creation",
    "verb.emotion",
    "verb.motion",
    "verb.perception",
    "verb.possession",
    "verb.social",
    "verb.stative",
    "verb.weather",
    "adj.ppl",
]
_SYNTACTIC_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
_WORD_OR_PUNCT = re.compile(r"\w+|[^\s\w]")


class MeteorUnavailable(RuntimeError):
    """No WordNet database is available to NLTK's METEOR."""


def meteor_available() -> bool:
    """True when a WordNet database for METEOR is installed (cheap: nothing is loaded)."""
    return _wordnet_source() is not None


def meteor(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean sentence METEOR (0-100) with NLTK's default parameters."""
    check_pairs(predictions, references)
    from nltk.translate.meteor_score import meteor_score

    wordnet = _wordnet()
    scores = [
        meteor_score([_tokens(reference)], _tokens(prediction), wordnet=wordnet)
        for prediction, reference in zip(predictions, references, strict=True)
    ]
    return 100.0 * sum(scores) / len(scores)


def _tokens(text: str) -> list[str]:
    return _WORD_OR_PUNCT.findall(text.lower())


def _wordnet_source() -> Any:
    """NLTK's own WordNet if installed, else Debian's directory if complete, else None."""
    import nltk

    try:
        return nltk.data.find("corpora/wordnet")
    except LookupError:
        pass
    if all((DEBIAN_WORDNET / name).is_file() for name in _WORDNET_FILES):
        return DEBIAN_WORDNET
    return None


@functools.cache
def _wordnet() -> Any:
    """NLTK's WordNet reader over the source found by :func:`_wordnet_source`."""
    import nltk

    source = _wordnet_source()
    if source is None:
        raise MeteorUnavailable(
            "METEOR needs WordNet 3.0: install NLTK's 'wordnet' corpus, or Debian's "
            "packages wordnet-base and wordnet-sense-index"
        )
    if source != DEBIAN_WORDNET:
        return _reader(source)
    data_root = _nltk_data_mirror()
    if str(data_root) not in nltk.data.path:
        nltk.data.path.append(str(data_root))  # NLTK reads corpora only from its data paths
    return _reader(str(data_root / "corpora" / "wordnet"))


def _reader(root: Any) -> Any:
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    with warnings.catch_warnings():
        # Without the Open Multilingual Wordnet NLTK warns once; English is all we need.
        warnings.filterwarnings("ignore", message="The multilingual functions")
        return WordNetCorpusReader(root, None)


def _nltk_data_mirror() -> Path:
    """Copy Debian's WordNet into ``<cache>/fedcolora/nltk_data`` once; return that root."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    root = cache / "fedcolora" / "nltk_data"
    target = root / "corpora" / "wordnet"
    if (target / "lexnames").is_file():
        return root
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename, so concurrent processes never see half a copy.
    staging = Path(tempfile.mkdtemp(prefix="wordnet-", dir=target.parent))
    for name in _WORDNET_FILES:
        shutil.copyfile(DEBIAN_WORDNET / name, staging / name)
    lines = [
        f"{number:02d}\t{name}\t{_SYNTACTIC_CATEGORY[name.split('.')[0]]}\n"
        for number, name in enumerate(_LEXNAMES)
    ]
    (staging / "lexnames").write_text("".join(lines), encoding="utf-8")
    try:
        staging.rename(target)
    except OSError:  # another process won the race; its copy is identical
        shutil.rmtree(staging, ignore_errors=True)
    return root
