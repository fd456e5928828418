"""Evaluation: scoring per task, the JSON report, model resolution, and the CLI end to end.

Scoring tests replace generation by the reference answers (a perfect model), so the expected
metrics are known exactly; the CLI tests run the real tiny random Llama, with and without an
adapter, and check the report's structure.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch

from codetasks.loading import load_task
from codetasks.prompts import to_response
from codetasks.sandbox import SANDBOX_MODE, TESTS_IN_SANDBOX, TESTS_SPLIT, sandbox_mode
from colora import evaluate as evaluate_module
from colora.__main__ import load_benchmark, load_model, main, report_path, resolve_model
from colora.evaluate import SKIPPED_EXAMPLES, EvalSettings, evaluate_model
from colora.generate import GenerationResult
from runconfig.schema import AdapterSettings, ModelSettings

REPORT_KEYS = ["model", "task", "benchmark", "split", "limit", "n", "metrics", "seconds",
               "tokens_per_second", "new_tokens", "settings", "examples"]  # fmt: skip
FAST = EvalSettings(quality=False)


@pytest.fixture()
def perfect_model(monkeypatch):
    """Generation replaced by each example's reference reply, as a trained model would give."""

    def fake(model, tokenizer, examples, **kwargs):
        return GenerationResult([to_response(example) for example in examples], 10, 0.5)

    monkeypatch.setattr(evaluate_module, "generate_with_stats", fake)


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory, tiny_model_settings) -> Path:
    from colora.adapter import attach_adapters, folded_state
    from colora.base_model import load_base_model, resolve_model_path
    from colora.export import save_adapter

    settings = AdapterSettings(rank=2, alpha=4, dropout=0.0, target_modules=("q_proj", "v_proj"))
    model = attach_adapters(load_base_model(tiny_model_settings), settings, seed=0)
    out = tmp_path_factory.mktemp("adapter") / "adapter"
    base_path = resolve_model_path(tiny_model_settings)
    return save_adapter(folded_state(model), settings, base_path, out)


def test_reference_code_passes_mbpp_and_humaneval(perfect_model, data_root):
    for source, split in (("", "valid"), ("humaneval", "test")):
        examples = load_task("generation", split, data_root=data_root, source=source, limit=2)
        report = evaluate_model(None, None, examples, "generation", FAST)
        assert report.metrics["pass@1"] == 100.0 and report.metrics["pct_passed"] == 100.0
        assert [r["status"] for r in report.examples] == ["passed", "passed"]


def test_unscorable_examples_are_skipped_with_reasons_and_the_rest_scored(perfect_model, data_root):
    good = load_task("generation", "valid", data_root=data_root, limit=2)
    empty = dataclasses.replace(good[0], uid="mbpp/empty", tests=())
    lone = dataclasses.replace(good[1], uid="mbpp/lone", source=good[1].source + "\udc80")
    report = evaluate_model(None, None, [empty, good[0], lone, good[1]], "generation", FAST)
    assert [r["status"] for r in report.examples] == ["skipped", "passed", "skipped", "passed"]
    assert report.examples[0]["error"] == "mbpp/empty: no tests to execute"
    assert report.examples[2]["error"].startswith("mbpp/lone: source holds a lone surrogate")
    assert report.metrics["pass@1"] == 100.0 and report.metrics[SKIPPED_EXAMPLES] == 2.0
    assert report.settings[SANDBOX_MODE] == sandbox_mode()
    assert {r[SANDBOX_MODE] for r in report.examples if r["status"] != "skipped"} == {
        sandbox_mode()
    }
    assert report.metrics[TESTS_SPLIT] > 0 and report.metrics[TESTS_IN_SANDBOX] == 0


def test_generation_report_counts_failures_and_lints_code(perfect_model, data_root, monkeypatch):
    examples = load_task("generation", "valid", data_root=data_root, limit=2)
    replies = [to_response(examples[0]), "```python\ndef nothing():\n    return 0\n```"]
    monkeypatch.setattr(evaluate_module, "generate_with_stats",
                        lambda *args, **kwargs: GenerationResult(replies, 20, 2.0))  # fmt: skip
    report = evaluate_model(None, None, examples, "generation", EvalSettings(quality=True))
    assert report.metrics["pass@1"] == 50.0
    assert [r["passed"] for r in report.examples] == [True, False]
    assert report.examples[1]["status"] == "error" and "NameError" in report.examples[1]["error"]
    assert (
        report.metrics["quality.reports"] == 2.0 and "quality.pylint_convention" in report.metrics
    )
    assert report.metrics["quality.ccn_max"] >= 1.0
    assert report.tokens_per_second == 10.0


def test_reference_translations_and_summaries_score_100(perfect_model, data_root):
    cases = {"translation": ("bleu4", "exact_match", "codebleu"),
             "summarization": ("smoothed_bleu4", "rouge_l", "chrf")}  # fmt: skip
    for task, names in cases.items():
        examples = load_task(task, "valid", data_root=data_root, limit=3)
        report = evaluate_model(None, None, examples, task, FAST)
        for name in names:
            assert report.metrics[name] == pytest.approx(100.0, abs=0.01), (task, name)
        assert all(r["status"] == "scored" for r in report.examples)
        assert report.examples[0][names[0]] == pytest.approx(100.0, abs=0.01)


def test_examples_of_another_task_are_refused(data_root):
    examples = load_task("translation", "valid", data_root=data_root, limit=1)
    with pytest.raises(ValueError, match="task"):
        evaluate_model(None, None, examples, "summarization", FAST)


def test_benchmarks_resolve_task_split_and_limit(data_root):
    task, split, examples = load_benchmark("humaneval", None, None, data_root=data_root, limit=4)
    assert (task, split, len(examples)) == ("generation", "test", 4)
    assert examples[0].uid == "humaneval/0"
    task, split, _ = load_benchmark("mined", "summarization", "test", data_root=data_root, limit=1)
    assert (task, split) == ("summarization", "test")
    with pytest.raises(ValueError, match="translation benchmark"):
        load_benchmark("codexglue", "generation", None, data_root=data_root)
    with pytest.raises(ValueError, match="unknown benchmark"):
        load_benchmark("coderval", None, None, data_root=data_root)


def test_run_directories_need_a_client_or_the_shared_adapter(tmp_path, adapter_dir):
    run = tmp_path / "run"
    (run / "clients" / "client-3").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"model.source": "tiny",
                                                 "model.quantization": "none"}))  # fmt: skip
    (run / "clients" / "client-3" / "adapter").symlink_to(adapter_dir)
    choice = resolve_model(str(run), client=3)
    assert choice.adapter_dir == run / "clients" / "client-3" / "adapter"
    assert choice.base == ModelSettings(source="tiny", quantization="none")
    with pytest.raises(ValueError, match="--client/--shared"):
        resolve_model(str(run))
    with pytest.raises(FileNotFoundError, match="no exported adapter"):
        resolve_model(str(run), shared=True)
    assert resolve_model("base").base == ModelSettings()


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"{torn", "not JSON"),
        (b"\xff\xfe", "not readable JSON"),
        (b"[" * 100_000, "not readable JSON"),
        (b"1" * 5000, "not readable JSON"),
        (b'["model.source"]', "expected a JSON object, got list"),
    ],
)
@pytest.mark.parametrize("name", ["config.json", "adapter_config.json"])
def test_a_damaged_run_or_adapter_config_is_one_named_error(
    tmp_path, adapter_dir, name, content, why
):
    (tmp_path / "clients" / "client-0").mkdir(parents=True)
    (tmp_path / "clients" / "client-0" / "adapter").symlink_to(adapter_dir)
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ValueError, match=f"^{re.escape(str(tmp_path / name))}: {why}"):
        resolve_model(str(tmp_path), client=0)


def test_config_values_of_the_wrong_type_fall_back_to_the_defaults(tmp_path, adapter_dir):
    (tmp_path / "clients" / "client-0").mkdir(parents=True)
    (tmp_path / "clients" / "client-0" / "adapter").symlink_to(adapter_dir)
    (tmp_path / "config.json").write_text(json.dumps({"model.source": 5, "model.cache-dir": []}))
    assert resolve_model(str(tmp_path), client=0).base == ModelSettings()


def _cli(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "report.json"
    common = ["--quantization", "none", "--max-new-tokens", "4", "--no-progress"]
    assert main(["evaluate", *args, *common, "--out", str(out)]) == 0
    return json.loads(out.read_text())


def test_cli_evaluates_an_adapter_dir_end_to_end(tmp_path, adapter_dir, capsys):
    report = _cli(tmp_path, "--model", str(adapter_dir), "--benchmark", "mined", "--limit", "3")
    assert list(report) == REPORT_KEYS
    assert (report["task"], report["split"], report["limit"], report["n"]) == (
        "summarization", "valid", 3, 3)  # fmt: skip
    assert report["model"] == str(adapter_dir)
    assert report["settings"]["base_model"].endswith("tiny-llama-seed0")  # from the adapter
    assert set(report["metrics"]) >= {"smoothed_bleu4", "rouge_l", "chrf"}
    assert set(report["seconds"]) == {"generation", "scoring"}
    record = report["examples"][0]
    assert set(record) >= {"uid", "prompt", "prediction", "parsed", "reference", "status"}
    assert "smoothed_bleu4" in capsys.readouterr().out


def test_cli_evaluates_the_base_model_on_humaneval(tmp_path):
    report = _cli(tmp_path, "--model", "base", "--base-model", "tiny", "--benchmark",
                  "humaneval", "--limit", "2", "--no-quality")  # fmt: skip
    assert (report["n"], report["split"], report["model"]) == (2, "test", "base")
    assert report["metrics"]["pass@1"] == 0.0  # a random model passes nothing
    assert all(r["status"] in ("failed", "error") for r in report["examples"])


def test_loaded_adapter_holds_the_saved_weights(adapter_dir):
    from peft import PeftModel
    from safetensors.torch import load_file

    model, _ = load_model(resolve_model(str(adapter_dir), quantization="none"))
    assert isinstance(model, PeftModel)
    saved = load_file(adapter_dir / "adapter_model.safetensors")
    key = next(k for k in saved if "lora_A" in k)
    loaded = dict(model.named_parameters())[key.replace(".weight", ".default.weight")]
    assert torch.equal(loaded.detach(), saved[key])


def test_report_path_is_checked_before_evaluating(tmp_path):
    data_root = tmp_path / "data"
    (data_root / "mbpp-sanitized").mkdir(parents=True)
    assert report_path(None, "mbpp", "valid", data_root=data_root) == Path("eval-mbpp-valid.json")
    old = tmp_path / "old.json"
    old.write_text("{}")
    with pytest.raises(FileExistsError, match="pass --overwrite"):
        report_path(old, "mbpp", "valid", data_root=data_root)
    assert report_path(old, "mbpp", "valid", data_root=data_root, overwrite=True) == old
    with pytest.raises(IsADirectoryError, match="is a directory"):
        report_path(tmp_path, "mbpp", "valid", data_root=data_root, overwrite=True)
    inside = data_root / "mbpp-sanitized" / "test.jsonl"
    with pytest.raises(ValueError, match="inside the data root"):
        report_path(inside, "mbpp", "valid", data_root=data_root, overwrite=True)


def test_cli_refuses_an_existing_report_without_loading_a_model(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("colora.__main__.load_model", lambda choice: pytest.fail("loaded"))
    old = tmp_path / "report.json"
    old.write_text("earlier results")
    argv = ["evaluate", "--model", "base", "--benchmark", "humaneval", "--limit", "1", "--out"]
    assert main([*argv, str(old)]) == 2
    assert (
        capsys.readouterr().err == f"error: report {old} exists; pass --overwrite to replace it\n"
    )
    assert old.read_text() == "earlier results"
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{oops\n")
    assert (
        main(["evaluate", "--model", "base", "--benchmark", str(bad), "--task", "translation"]) == 2
    )
    assert capsys.readouterr().err.startswith(f"error: {bad}:1: malformed JSON")
