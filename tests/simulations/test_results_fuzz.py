"""The committed summary and meta file are hand-editable JSON: any value anywhere in them may be
wrong. Whatever replaces one value, ``readme`` and ``report`` either work or raise ValueError
naming the file, and write nothing (hypothesis draws the place and the value)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulations.readme import write_readme_block
from simulations.results import load_runs
from simulations.scoreboard import from_runs, meta_path, write_summary
from tests.simulations.test_scoreboard import _tree

# Values that plain strategies rarely draw: ints beyond any float (json reads them exactly),
# the non-finite floats json writes, digit strings that int() rejects or reads.
HOSTILE = [10**400, -(10**400), 2**63, -1, 0, math.nan, math.inf, True, "²", "٣", "1e5", "", None]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
# half the draws are one of the hostile values, so each place meets them
VALUES = st.one_of(st.sampled_from(HOSTILE), JSON_VALUES)


def _places(value: Any, path: tuple = ()) -> list[tuple]:
    """Every path to a value inside ``value`` (keys of objects too: a key may be bad)."""
    out = [path]
    if isinstance(value, dict):
        for key, inner in value.items():
            out += _places(inner, (*path, key))
            out.append((*path, ("key", key)))
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            out += _places(inner, (*path, i))
    return out


def _replaced(value: Any, path: tuple, new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(head, tuple):  # rename a key: the value stays, the key becomes ``new`` as text
        key = head[1]
        return {(str(new) if k == key else k): v for k, v in value.items()}
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[head] = _replaced(value[head], rest, new)
    return copy


@pytest.fixture(scope="module")
def committed(tmp_path_factory) -> tuple[dict, dict]:
    """A real summary and meta file, as ``report`` writes them from a hand-made run tree."""
    root = tmp_path_factory.mktemp("committed")
    results = root / "results"
    path, _ = write_summary("collab", from_runs(load_runs(_tree(root))), (), results)
    return json.loads(path.read_text()), json.loads(meta_path(path).read_text())


def _files(tmp: Path, summary: Any, meta: Any) -> Path:
    results = tmp / "results"
    results.mkdir(parents=True, exist_ok=True)
    path = results / "collab.json"
    path.write_text(json.dumps(summary))
    meta_path(path).write_text(json.dumps(meta))
    return path


@settings(max_examples=300)
@given(data=st.data(), in_meta=st.booleans(), new=VALUES)
def test_any_one_bad_value_gives_a_block_or_a_value_error_and_the_readme_is_untouched(
    committed, tmp_path_factory, data, in_meta, new
):
    summary, meta = committed
    target = meta if in_meta else summary
    place = data.draw(st.sampled_from(_places(target)))
    bad = _replaced(target, place, new)
    summary, meta = (summary, bad) if in_meta else (bad, meta)
    tmp = tmp_path_factory.mktemp("fuzz")
    readme = tmp / "README.md"
    readme.write_text("mine\n<!-- results:collab -->\nold\n<!-- /results:collab -->\n")
    before = readme.read_text()
    try:
        write_readme_block(_files(tmp, summary, meta), readme)
    except ValueError as exc:
        assert str(tmp) in str(exc)  # names the file: the summary, the meta file or README
        assert readme.read_text() == before
    else:
        assert readme.read_text().startswith("mine\n<!-- results:collab -->\n")


@settings(max_examples=150)
@given(data=st.data(), new=VALUES)
def test_any_one_bad_value_in_the_committed_meta_stops_report_before_it_writes(
    committed, tmp_path_factory, data, new
):
    summary, meta = committed
    bad = _replaced(meta, data.draw(st.sampled_from(_places(meta))), new)
    tmp = tmp_path_factory.mktemp("fuzz")
    path = _files(tmp, summary, bad)
    files = {p: p.read_bytes() for p in path.parent.iterdir()}
    runs = from_runs(load_runs(_tree(tmp)))
    try:
        write_summary("collab", runs, (), path.parent)
    except ValueError:
        assert {p: p.read_bytes() for p in path.parent.iterdir()} == files
