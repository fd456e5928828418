"""METEOR through NLTK with an offline WordNet (NLTK data or Debian's wordnet packages)."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_tool

# The package exports the function `meteor`, which hides the submodule of the same name.
meteor_module = importlib.import_module("codetasks.metrics.meteor")


@pytest.fixture(scope="module")
def wordnet_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Build the WordNet mirror in a temporary cache instead of the user's.

    The loaded reader stays cached for later tests (loading WordNet takes seconds); the
    temporary directory lives until the session ends.
    """
    require_tool(
        meteor_module.meteor_available(),
        "no WordNet: apt-get install wordnet-base wordnet-sense-index",
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        meteor_module._wordnet.cache_clear()
        meteor_module._wordnet()
        yield


@pytest.mark.usefixtures("wordnet_cache")
class TestMeteor:
    def test_identical_sentence_loses_only_the_one_chunk_penalty(self) -> None:
        # 6 matches in 1 chunk: P = R = 1, penalty 0.5 * (1/6)^3 = 1/432.
        sentence = "the cat sat on the mat"
        assert meteor_module.meteor([sentence], [sentence]) == pytest.approx(100 * (1 - 1 / 432))

    def test_word_order_is_penalised_by_chunks(self) -> None:
        # 2 matches in 2 chunks: P = R = 1, penalty 0.5 * (2/2)^3 = 0.5.
        assert meteor_module.meteor(["cat the"], ["the cat"]) == pytest.approx(50.0)

    def test_wordnet_synonyms_match(self) -> None:
        # car ~ auto (synset car.n.01): 3 matches in 1 chunk, penalty 0.5 * (1/3)^3 = 1/54.
        score = meteor_module.meteor(["a fast car"], ["a fast auto"])
        assert score == pytest.approx(100 * (1 - 1 / 54))
        # bus is no synonym: P = R = 2/3, Fmean = 2/3, 1 chunk: penalty 0.5 * (1/2)^3 = 1/16.
        without = meteor_module.meteor(["a fast bus"], ["a fast auto"])
        assert without == pytest.approx(100 * (2 / 3) * (15 / 16))

    def test_scores_are_averaged_over_sentences(self) -> None:
        assert meteor_module.meteor(["cat the", "x"], ["the cat", "y"]) == pytest.approx(25.0)


def test_missing_wordnet_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import nltk

    def not_found(resource: str) -> None:
        raise LookupError(resource)

    monkeypatch.setattr(nltk.data, "find", not_found)
    monkeypatch.setattr(meteor_module, "DEBIAN_WORDNET", tmp_path / "missing")
    assert meteor_module.meteor_available() is False
    with pytest.raises(meteor_module.MeteorUnavailable, match="wordnet-base"):
        meteor_module._wordnet.__wrapped__()  # the uncached lookup that meteor() relies on
