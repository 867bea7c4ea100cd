#!/bin/sh
# Builds the virtual environment the peer tools run in (bench/rd/.venv, git-ignored): NNCodec
# pins numpy<2 and compiles its C++ arithmetic coder (about 2 minutes), so it must not share the
# project's environment. gguf and zipnn go in the same environment. torch is pinned to the CPU
# build (2.13.0+cpu: from the PyTorch CPU index or a local wheel directory); from PyPI alone the
# same version is the multi-GB CUDA build.
#
#   sh bench/rd/setup_peers.sh            # then: python bench/rd/run.py ...
set -eu
here=$(cd "$(dirname "$0")" && pwd)
venv="${UDNC_PEERS_VENV:-$here/.venv}"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --upgrade pip wheel setuptools
"$venv/bin/python" -m pip install "numpy<2" "torch==2.13.0" "nncodec==2.1.3" "gguf==0.19.0" \
    "zipnn==0.5.4" "zstandard"
"$venv/bin/python" -c "import gguf, zipnn, zstandard; print('peers ready:', '$venv')"
