"""MBPP-sanitized loading from the shared offline files and from records."""

from __future__ import annotations

from pathlib import Path

import pytest

from codetasks.data.mbpp import load_mbpp, mbpp_from_records
from codetasks.data.pyfunctions import guess_entry_point
from codetasks.data.records import DataError
from codetasks.loading import DEFAULT_DATA_ROOT

needs_data = pytest.mark.skipif(
    not (DEFAULT_DATA_ROOT / "mbpp-sanitized").is_dir(), reason="shared MBPP data not present"
)


@needs_data
def test_offline_train_split_matches_the_shared_file() -> None:
    examples = load_mbpp("train", DEFAULT_DATA_ROOT)
    assert len(examples) == 120
    first = examples[0]
    assert first.uid == "mbpp/602"
    assert first.source == (
        "Write a python function to find the first repeated character in a given string."
    )
    assert first.target.startswith("def first_repeated_char(str1):")
    assert first.tests[0] == 'assert first_repeated_char("abcabc") == "a"'
    assert len(first.tests) == 3
    assert first.meta == {"entry_point": "first_repeated_char", "task_id": "602"}


@needs_data
def test_offline_valid_and_prompt_splits() -> None:
    assert len(load_mbpp("valid", DEFAULT_DATA_ROOT)) == 43
    assert len(load_mbpp("prompt", DEFAULT_DATA_ROOT)) == 7


def test_missing_test_split_names_the_file_and_the_hub_id(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_mbpp("test", tmp_path)
    message = str(info.value)
    assert str(tmp_path / "mbpp-sanitized" / "test.jsonl") in message
    assert "google-research-datasets/mbpp" in message


def test_unknown_split() -> None:
    with pytest.raises(ValueError, match="valid: train, valid, test, prompt"):
        load_mbpp("dev", Path("."))


def test_records_accept_the_hub_prompt_field() -> None:
    record = {
        "task_id": 11,
        "prompt": "Remove first and last occurrence of a char.",
        "code": "def remove_Occ(s, ch):\n    return s",
        "test_list": ['assert remove_Occ("hello","l") == "heo"'],
        "test_imports": [],
    }
    (example,) = mbpp_from_records([record])
    assert example.uid == "mbpp/11"
    assert example.source == "Remove first and last occurrence of a char."
    assert example.tests == ('assert remove_Occ("hello","l") == "heo"',)
    assert example.test_setup == ""
    assert example.meta["entry_point"] == "remove_Occ"


def test_records_report_the_bad_field_and_position() -> None:
    good = {"task_id": 1, "text": "t", "code": "c", "test_list": ["assert 1"]}
    with pytest.raises(DataError, match=r"^mbpp:2: field 'test_list' must be a list of strings"):
        mbpp_from_records([good, {**good, "test_list": "assert 1"}])


def test_entry_point_is_the_defined_function_the_first_test_calls() -> None:
    code = "def helper(x):\n    return x\n\ndef main_fn(xs):\n    return sorted(map(helper, xs))"
    assert guess_entry_point(code, ["assert set(main_fn([2, 1])) == set([1, 2])"]) == "main_fn"
    assert guess_entry_point(code, []) == "main_fn"
    assert guess_entry_point("class A: pass", ["assert A()"]) == ""
    assert guess_entry_point("def broken(:", ["assert broken()"]) == ""


def test_a_split_linked_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "mbpp-sanitized").mkdir()
    link = tmp_path / "mbpp-sanitized" / "validation.jsonl"
    link.symlink_to("/etc/passwd")
    with pytest.raises(DataError, match=rf"^{link} links to /etc/passwd, outside the dataset"):
        load_mbpp("valid", tmp_path)


def test_a_directory_in_place_of_a_split_is_a_data_error(tmp_path: Path) -> None:
    (tmp_path / "mbpp-sanitized" / "train.jsonl").mkdir(parents=True)
    with pytest.raises(DataError, match=r"train\.jsonl is not a regular file$"):
        load_mbpp("train", tmp_path)
