"""Python code summarization pairs mined from real sources, by default the running interpreter's
standard library, following CodeSearchNet / CodeXGLUE code-to-text (Husain et al. 2019,
arXiv 1909.09436; Lu et al. 2021, arXiv 2102.04664): input = a function with its docstring
removed, target = the docstring's first sentence.

Filters (each counted in :attr:`MiningResult.filtered`):
- ``private``: names starting with ``_`` (dunders included); their docstrings are mostly
  internal notes or boilerplate such as "Return repr(self)." that teach little.
- ``signature_summary``: summaries that restate a signature (``"S.find(sub) -> int"``).
- ``summary_words``: summaries outside 3–40 words; ``code_lines``: code outside 3–60 lines;
  ``code_chars``: code over 2,000 characters.
Test directories and ``test_*.py`` files are skipped. Duplicates (same whitespace-normalised
code, or same summary and function name) keep the first occurrence in sorted path order. Each
module goes to exactly one split (hash of its relative path: train 80 / valid 10 / test 10).
"""

from __future__ import annotations

import ast
import hashlib
import os
import re
import sysconfig
import tokenize
from collections import Counter
from dataclasses import dataclass, field, fields
from pathlib import Path

from codetasks.data import summary_cache
from codetasks.data.pyfunctions import (
    UNPARSABLE,
    DocumentedFunction,
    documented_function,
    iter_functions,
)
from codetasks.data.records import DataError
from codetasks.examples import Example
from codetasks.prompts import first_sentence

SPLITS = ("train", "valid", "test")
SKIP_DIRS = frozenset(
    {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}
)
SUMMARY_WORDS = (3, 40)
CODE_LINES = (3, 60)
MAX_CODE_CHARS = 2000
_SIGNATURE = re.compile(r"^[\w.]+\(.*\)\s*(->|$)")


@dataclass
class MiningResult:
    """Mined examples per split, with the counts behind them."""

    source_dir: str
    splits: dict[str, list[Example]]
    files_scanned: int = 0  # .py files outside skipped directories
    files_parsed: int = 0
    functions_seen: int = 0  # every function and method, documented or not
    documented: int = 0
    kept: int = 0
    duplicates: int = 0
    filtered: dict[str, int] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """All counts as one flat mapping (filter reasons as ``filtered_<reason>``)."""
        flat = {
            name: getattr(self, name)
            for name in ("files_scanned", "files_parsed", "functions_seen", "documented")
        }
        flat |= {f"filtered_{reason}": n for reason, n in sorted(self.filtered.items())}
        flat |= {"duplicates": self.duplicates, "kept": self.kept}
        return flat | {split: len(self.splits[split]) for split in SPLITS}

    def report(self) -> str:
        """The counts, one per line, for the CLI."""
        lines = [f"source: {self.source_dir}"]
        return "\n".join(lines + [f"{name:>28}: {n:,}" for name, n in self.counts().items()])


def default_source_dir() -> Path:
    """The running interpreter's standard library."""
    return Path(sysconfig.get_paths()["stdlib"])


def split_of(relative_path: str) -> str:
    """The split of a module: a deterministic hash of its relative path, 80/10/10."""
    bucket = int.from_bytes(hashlib.sha256(relative_path.encode()).digest()[:8], "big") % 100
    return "train" if bucket < 80 else "valid" if bucket < 90 else "test"


def _inside(path: Path, root: Path) -> bool:
    """Whether ``path`` is a regular file within the resolved ``root`` after symlinks: a
    dangling link cannot be read, and one out of the tree would mine an arbitrary host file
    (the walk already does not follow directory links)."""
    return path.is_file() and path.resolve().is_relative_to(root)


def source_files(source_dir: Path) -> list[Path]:
    """The ``.py`` files to mine, sorted, skipping test and vendored-package directories and
    files that are not regular files within ``source_dir``."""
    files = []
    for root, dirs, names in os.walk(source_dir):
        # Pruned in place, so the walk never enters a skipped tree: the interpreter's
        # site-packages alone can hold tens of thousands of files, and every ClientApp process
        # lists the stdlib once to check the mining cache.
        dirs[:] = [name for name in dirs if name not in SKIP_DIRS]
        files += [
            Path(root, name)
            for name in names
            if name.endswith(".py") and not name.startswith("test_")
        ]
    root = source_dir.resolve()
    return sorted(path for path in files if _inside(path, root))


def filter_reason(name: str, summary: str, code: str) -> str:
    """Why a documented function is dropped, or ``""`` to keep it."""
    if name.startswith("_"):
        return "private"
    if _SIGNATURE.match(summary):
        return "signature_summary"
    if not SUMMARY_WORDS[0] <= len(summary.split()) <= SUMMARY_WORDS[1]:
        return "summary_words"
    if not CODE_LINES[0] <= len(code.splitlines()) <= CODE_LINES[1]:
        return "code_lines"
    if len(code) > MAX_CODE_CHARS:
        return "code_chars"
    return ""


def _parse(path: Path) -> tuple[int, list[DocumentedFunction]] | None:
    """(functions seen, documented functions) of the file ``path``, or ``None`` when it cannot
    be read, decoded or parsed — it is then counted as scanned but not parsed.

    Everything that touches the tree is inside the ``try``: a deeply nested expression can pass
    the parser and still exhaust the recursion of the walk or of ``ast.unparse``.
    """
    try:
        with tokenize.open(path) as handle:  # honours PEP 263 coding cookies
            source = handle.read()
        lines, tree = source.splitlines(), ast.parse(source, filename=str(path))
        functions = list(iter_functions(tree))
        documented = [documented_function(lines, name, node) for name, node in functions]
    except (OSError, UnicodeDecodeError, *UNPARSABLE):
        return None
    return len(functions), [found for found in documented if found is not None]


class _Miner:
    """Accumulates kept examples and counts over files visited in sorted order."""

    def __init__(self, source_dir: Path) -> None:
        self.result = MiningResult(str(source_dir), {split: [] for split in SPLITS})
        self.reasons: Counter[str] = Counter()
        self.seen_code: set[str] = set()
        self.seen_pairs: set[tuple[str, str]] = set()

    def add_file(self, relative: str, seen: int, documented: list[DocumentedFunction]) -> None:
        self.result.functions_seen += seen
        for found in documented:
            self.add_function(relative, found)

    def add_function(self, relative: str, function: DocumentedFunction) -> None:
        self.result.documented += 1
        name = function.qualname.rsplit(".", 1)[-1]
        summary = first_sentence(function.docstring)
        reason = filter_reason(name, summary, function.code)
        if reason:
            self.reasons[reason] += 1
            return
        code_key, pair_key = " ".join(function.code.split()), (summary, name)
        if code_key in self.seen_code or pair_key in self.seen_pairs:
            self.result.duplicates += 1
            return
        self.seen_code.add(code_key)
        self.seen_pairs.add(pair_key)
        uid = f"summarization/{relative}:{function.qualname}:{function.lineno}"
        meta = {"path": relative, "function": function.qualname, "line": str(function.lineno)}
        example = Example("summarization", uid, function.code, summary, meta=meta)
        self.result.splits[split_of(relative)].append(example)
        self.result.kept += 1


def mine_uncached(source_dir: Path) -> MiningResult:
    """Mine ``source_dir`` from scratch (seconds for the standard library)."""
    miner = _Miner(source_dir)
    for path in source_files(source_dir):
        miner.result.files_scanned += 1
        parsed = _parse(path)
        if parsed is not None:
            miner.result.files_parsed += 1
            miner.add_file(path.relative_to(source_dir).as_posix(), *parsed)
    miner.result.filtered = dict(sorted(miner.reasons.items()))
    return miner.result


def _cached_result(path: Path) -> MiningResult | None:
    """The :class:`MiningResult` cached at ``path``, or ``None`` when there is none or the file
    is not one (unknown or missing fields, other splits, ill-typed counts): it is mined again."""
    cached = summary_cache.read(path)
    names = {each.name for each in fields(MiningResult)}
    if cached is None or set(cached) != names or set(cached["splits"]) != set(SPLITS):
        return None  # the counts have defaults, so a missing one would silently read as 0
    try:
        result = MiningResult(**cached)
        result.report()  # formats every count, so an ill-typed one fails here
    except (TypeError, ValueError, AttributeError):
        return None
    return result


def mine_summarization_pairs(source_dir: Path | None = None, *, cache: bool = True) -> MiningResult:
    """Mine (function, summary) pairs from ``source_dir`` (default: the stdlib), using the
    on-disk cache under ``${FEDCOLORA_CACHE:-~/.cache/fedcolora}/summarization/``."""
    source_dir = (source_dir or default_source_dir()).resolve()
    if not source_dir.is_dir():
        raise NotADirectoryError(f"summarization source {source_dir} is not a directory")
    if not cache:
        return mine_uncached(source_dir)
    path = summary_cache.cache_path(source_dir, source_files(source_dir))
    cached = _cached_result(path)
    if cached is not None:
        return cached
    result = mine_uncached(source_dir)
    summary_cache.write(path, result)
    return result


def load_summarization(split: str, source_dir: Path | None = None) -> list[Example]:
    """Mined summarization examples of ``split`` (train/valid/test); none is a DataError, as
    an empty data file is (a small tree may put no file in a split)."""
    if split not in SPLITS:
        raise ValueError(f"unknown summarization split {split!r}; valid: {', '.join(SPLITS)}")
    result = mine_summarization_pairs(source_dir)
    if not result.splits[split]:
        counts = ", ".join(f"{name} {len(result.splits[name])}" for name in SPLITS)
        raise DataError(
            f"no {split} pairs mined from {result.source_dir} ({counts}; files go to splits "
            "80/10/10 by a hash of their path): point source at a larger tree"
        )
    return result.splits[split]
