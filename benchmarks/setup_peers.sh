#!/usr/bin/env bash
# Build benchmarks/.peers-venv from scratch: TextGrad and Microsoft Trace from PyPI, side by
# side, for the comparison benchmarks (benchmarks/run_all.py). Network: the package index only.
#
#   bash benchmarks/setup_peers.sh            # PYTHON=python3.11 to choose the interpreter
#
# What the peers need, found by installing and importing them here:
# * textgrad==0.1.8 and trace-opt==0.1.3.8 install and import with their own unpinned
#   dependencies; benchmarks/peers/constraints.txt pins the exact versions that were
#   measured (pip freeze of a working venv), so a rebuild gets the same code.
# * Both import litellm (TextGrad for its experimental engine, Trace as its default LLM
#   backend). At import litellm fetches a model-cost map from the internet and retries for
#   ~7 s when that fails; LITELLM_LOCAL_MODEL_COST_MAP=True makes it read its bundled copy.
#   run_all.py sets it for every peer process.
# * tiktoken: litellm ships the cl100k/o200k encodings inside its wheel and points
#   TIKTOKEN_CACHE_DIR at them, and the benchmark server reports usage in every reply, so
#   nothing downloads an encoding. TextGrad and Trace do not use tiktoken themselves.
# * Caches: TextGrad caches engine calls in a diskcache under
#   platformdirs.user_cache_dir("textgrad"); run_all.py gives every peer process a fresh
#   empty XDG_CACHE_HOME and run_textgrad.py also turns the lookup off. Importing textgrad
#   opens a JSON log of every call in ./logs/ (TEXTGRAD_LOG_DIR); run_all.py points that at
#   the same scratch directory, so no run writes into the work tree. Trace's LiteLLM
#   backend caches nothing unless litellm.cache is set (it is not). The server's request
#   counts confirm that every call reaches it.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/.peers-venv"
PY="${PYTHON:-python3}"

"$PY" -c 'import sys; assert sys.version_info >= (3, 10), "the peers need Python >= 3.10"'
rm -rf "$VENV"
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    -c "$HERE/peers/constraints.txt" \
    "textgrad==0.1.8" "trace-opt==0.1.3.8" 2>&1 | grep -v "^WARNING: Location" || true

# Prove that both import offline with the settings run_all.py uses.
SCRATCH="$(mktemp -d)"
LITELLM_LOCAL_MODEL_COST_MAP=True HF_HUB_OFFLINE=1 XDG_CACHE_HOME="$SCRATCH" \
TEXTGRAD_LOG_DIR="$SCRATCH/logs" \
"$VENV/bin/python" - <<'EOF'
import textgrad, opto.trace, opto.optimizers, importlib.metadata as md
print("peers ready:", "textgrad", md.version("textgrad"), "| trace-opt", md.version("trace-opt"),
      "| litellm", md.version("litellm"), "| openai", md.version("openai"))
EOF
