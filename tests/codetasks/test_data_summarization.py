"""Mining (function, docstring) summarization pairs from Python sources."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from codetasks.data import summarization
from codetasks.data.pyfunctions import code_without_docstring, iter_functions, strip_docstring
from codetasks.data.records import DataError
from codetasks.data.summarization import (
    filter_reason,
    load_summarization,
    mine_summarization_pairs,
    source_files,
    split_of,
)

MODULE = '''\
import os


def join_all(parts, sep="/"):
    """Join the given path parts with a separator.

    Longer description. Not part of the summary.
    """

    result = sep.join(parts)
    return os.path.normpath(result)


def _private(x):
    """Return x unchanged, for internal use."""
    y = x
    return y


class Box:
    def get_value(self, key):
        """Look up the value stored under a key."""
        value = self.data[key]
        return value

    async def fetch(self):
        """Fetch the remote value asynchronously now."""
        await self.refresh()
        return self.value


def short(x):
    """Too short."""
    return x


def undocumented(x):
    y = x
    return y
'''


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDCOLORA_CACHE", str(tmp_path / "cache"))


def _source_tree(root: Path) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "paths.py").write_text(MODULE, encoding="utf-8")
    (root / "copy.py").write_text(MODULE, encoding="utf-8")  # every pair is a duplicate
    (root / "tests").mkdir()
    (root / "tests" / "mod.py").write_text(MODULE, encoding="utf-8")
    (root / "test_x.py").write_text(MODULE, encoding="utf-8")
    (root / "broken.py").write_text("def f(:\n", encoding="utf-8")
    return root


def test_code_keeps_formatting_without_the_docstring() -> None:
    tree = ast.parse(MODULE)
    lines = MODULE.splitlines()
    functions = dict(iter_functions(tree))
    assert list(functions) == [
        "join_all", "_private", "Box.get_value", "Box.fetch", "short", "undocumented"
    ]  # fmt: skip
    assert code_without_docstring(lines, functions["join_all"]) == (
        'def join_all(parts, sep="/"):\n'
        "    result = sep.join(parts)\n"
        "    return os.path.normpath(result)"
    )
    assert code_without_docstring(lines, functions["Box.fetch"]) == (
        "async def fetch(self):\n    await self.refresh()\n    return self.value"
    )


def test_strip_docstring_edge_cases() -> None:
    assert strip_docstring('def f():\n    """Only a docstring."""') == "def f():\n    pass"
    assert strip_docstring('def f(): "doc"; return 1') == "def f():\n    return 1"
    assert strip_docstring("x = 1") == "x = 1"


def test_filters() -> None:
    code = "def f(x):\n    y = x\n    return y"
    assert filter_reason("f", "Return the value given.", code) == ""
    assert filter_reason("_f", "Return the value given.", code) == "private"
    assert filter_reason("find", "S.find(sub) -> int", code) == "signature_summary"
    assert filter_reason("f", "Too short.", code) == "summary_words"
    assert filter_reason("f", "Return the value given.", "def f(x):\n    return x") == "code_lines"
    long_code = "def f(x):\n" + "    y = x\n" * 10 + "    return '" + "a" * 2000 + "'"
    assert filter_reason("f", "Return the value given.", long_code) == "code_chars"


def test_split_is_a_fixed_hash_of_the_module_path() -> None:
    assert split_of("os.py") == split_of("os.py")
    splits = [split_of(f"m{i}.py") for i in range(1000)]
    assert {s: splits.count(s) for s in ("train", "valid", "test")} == pytest.approx(
        {"train": 800, "valid": 100, "test": 100}, abs=40
    )


def test_source_files_skip_whole_trees_and_sort_like_paths(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    for relative in (
        "a-b.py",  # '-' sorts before '/', but a/ is a directory: paths sort by their parts
        "a/z.py",
        "a/site-packages/vendored.py",
        "a/deep/__pycache__/cached.py",
        "a/deep/idle_test/t.py",
        "a/deep/keep.py",
        "a/test_unit.py",
        "a/notes.txt",
    ):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text("x = 1\n", encoding="utf-8")
    (root / "a" / "pkg.py").mkdir()  # a directory named like a module is not a source file
    assert source_files(root) == [
        root / "a" / "deep" / "keep.py",
        root / "a" / "z.py",
        root / "a-b.py",
    ]


def test_mining_counts_and_dedup(tmp_path: Path) -> None:
    result = mine_summarization_pairs(_source_tree(tmp_path / "src"))
    assert result.counts() == {
        "files_scanned": 3,
        "files_parsed": 2,
        "functions_seen": 12,
        "documented": 10,
        "filtered_private": 2,
        "filtered_summary_words": 2,
        "duplicates": 3,
        "kept": 3,
        **{split: len(result.splits[split]) for split in ("train", "valid", "test")},
    }
    examples = [e for split in result.splits.values() for e in split]
    assert {e.meta["path"] for e in examples} == {"copy.py"}  # sorted first, so it wins
    assert {e.target for e in examples} == {
        "Join the given path parts with a separator.",
        "Look up the value stored under a key.",
        "Fetch the remote value asynchronously now.",
    }
    assert result.splits[split_of("copy.py")] == examples
    uids = {e.uid for e in examples}
    assert "summarization/copy.py:Box.get_value:21" in uids


def test_cache_is_written_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = _source_tree(tmp_path / "src")
    first = mine_summarization_pairs(source)
    assert len(list((tmp_path / "cache" / "summarization").glob("*.json"))) == 1

    def fail(_: Path) -> None:
        raise AssertionError("mined again despite a valid cache")

    monkeypatch.setattr(summarization, "mine_uncached", fail)
    again = mine_summarization_pairs(source)
    assert again.counts() == first.counts()
    assert again.splits == first.splits


def test_load_summarization_checks_the_split(tmp_path: Path) -> None:
    source = _source_tree(tmp_path / "src")
    assert len(load_summarization(split_of("copy.py"), source)) == 3
    with pytest.raises(ValueError, match="valid: train, valid, test"):
        load_summarization("validation", source)
    empty = next(split for split in ("train", "valid", "test") if split != split_of("copy.py"))
    with pytest.raises(DataError, match=f"no {empty} pairs mined from {source}"):
        load_summarization(empty, source)  # a tree this small fills one split only


@pytest.mark.slow
def test_stdlib_mining_yields_thousands_of_pairs() -> None:
    result = mine_summarization_pairs(cache=False)
    assert result.files_parsed == result.files_scanned > 500
    assert result.kept > 2000
    assert min(len(result.splits[s]) for s in ("train", "valid", "test")) > 100
    codes = [e.source for split in result.splits.values() for e in split]
    assert len(set(codes)) == len(codes)


GOOD = '''\
def add_numbers(a, b):
    """Add two numbers together please."""
    c = a + b
    return c
'''


@pytest.mark.parametrize(
    "hostile",
    [
        "x = " + "-" * 100_000 + "1\n",  # overflows the parser's stack: MemoryError
        "x = " + "not " * 2900 + "1\n",  # parses, then exhausts the walk's recursion
        "x = 1" + "+1" * 20_000 + "\n",  # RecursionError while building the tree
        'def g():\n    "Doc."; return ' + "-" * 900 + "1\n",  # ast.unparse recursion
        "x = 1\x00\n",
    ],
)
def test_hostile_files_count_as_unparsed(tmp_path: Path, hostile: str) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "good.py").write_text(GOOD)
    (tmp_path / "src" / "hostile.py").write_text(GOOD + hostile)
    result = mine_summarization_pairs(tmp_path / "src", cache=False)
    assert (result.files_scanned, result.files_parsed, result.kept) == (2, 1, 1)


def test_links_that_dangle_or_leave_the_tree_and_odd_entries_are_not_mined(
    tmp_path: Path,
) -> None:
    source = tmp_path / "src"
    (source / "pkg").mkdir(parents=True)
    (source / "good.py").write_text(GOOD)
    (tmp_path / "outside.py").write_text(GOOD.replace("add_numbers", "host_secret"))
    (source / "outside.py").symlink_to(tmp_path / "outside.py")
    (source / "dangling.py").symlink_to(tmp_path / "missing.py")
    (source / "inside.py").symlink_to("pkg/real.py")
    (source / "pkg" / "real.py").write_text(GOOD.replace("add_numbers", "add_values"))
    (source / "folder.py").mkdir()
    assert [p.name for p in source_files(source)] == ["good.py", "inside.py", "real.py"]
    result = mine_summarization_pairs(source)  # with the cache, which stats every file
    functions = {e.meta["function"] for split in result.splits.values() for e in split}
    assert functions == {"add_numbers", "add_values"}  # not host_secret; real.py is a duplicate


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda good: {**good, "unknown": 1},
        lambda good: {k: v for k, v in good.items() if k != "kept"},
        lambda good: {**good, "splits": []},
        lambda good: {**good, "splits": {"train": [], "valid": []}},
        lambda good: {**good, "kept": "many"},
        lambda good: {**good, "filtered": [1]},
        lambda good: {**good, "splits": {**good["splits"], "valid": [[1]]}},
        lambda good: [good],
    ],
)
def test_a_corrupt_cache_is_mined_again(tmp_path: Path, corrupt) -> None:
    source = _source_tree(tmp_path / "src")
    first = mine_summarization_pairs(source)
    (path,) = (tmp_path / "cache" / "summarization").glob("*.json")
    path.write_text(json.dumps(corrupt(json.loads(path.read_text()))))
    again = mine_summarization_pairs(source)
    assert (again.counts(), again.splits) == (first.counts(), first.splits)
    assert again.report() == first.report()


def test_an_unwritable_cache_warns_and_keeps_the_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    monkeypatch.setenv("FEDCOLORA_CACHE", str(tmp_path / "a-file"))
    result = mine_summarization_pairs(_source_tree(tmp_path / "src"))
    assert result.kept == 3
    assert "summarization cache not written" in caplog.text
