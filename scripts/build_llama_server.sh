#!/usr/bin/env bash
# Build llama.cpp's own `llama-server` from the llama.cpp sources inside the llama-cpp-python sdist of the installed
# version, for the CPU, so that bench/serve_parallel.py can measure it on the same GGUF and the same llama.cpp code.
#   scripts/build_llama_server.sh [DIR]     DIR defaults to build/llama-server (git-ignored); prints the binary's path
# Safe to re-run: with the binary present it only prints the path. The first build takes minutes on 2 cores
# (run it under `nice -n 10` on a shared machine). pip fetches the sdist (its cache makes a second fetch cheap);
# offline, point pip at a folder that holds it: PIP_NO_INDEX=1 PIP_FIND_LINKS=FOLDER (with scikit-build-core there too).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${RAGTUNE_VENV:-.venv}"
DIR="${1:-build/llama-server}"

version="$("$VENV/bin/pip" show llama-cpp-python 2>/dev/null | sed -n 's/^Version: //p' || true)"
if [ -z "$version" ]; then
    echo "build_llama_server.sh: llama-cpp-python is not installed in $VENV; run scripts/setup.sh first" >&2
    exit 1
fi
# One folder per version: an upgraded llama-cpp-python gets a matching server, never a stale one.
root="$DIR/$version"
binary="$root/build/bin/llama-server"
# A binary that runs (not one half-written by an interrupted link) is the one to keep.
if [ -x "$binary" ] && "$binary" --version >/dev/null 2>&1; then
    realpath "$binary"
    exit 0
fi

# Sources: the sdist unpacked once; a half-unpacked tree from an interrupted run is replaced, not reused.
src="$root/src/llama_cpp_python-$version/vendor/llama.cpp"
if [ ! -f "$src/CMakeLists.txt" ]; then
    rm -rf "$root/sdist" "$root/src" "$root/src.partial"
    "$VENV/bin/pip" download --disable-pip-version-check -q --no-deps --no-binary :all: \
        "llama-cpp-python==$version" -d "$root/sdist"
    mkdir -p "$root/src.partial"
    tar -xzf "$root/sdist/llama_cpp_python-$version.tar.gz" -C "$root/src.partial"
    mv "$root/src.partial" "$root/src"
    rm -rf "$root/sdist"
fi

# CPU only, as llama-cpp-python builds it (Release, ggml's defaults: native CPU flags, OpenMP), but static so the
# binary loads no other libllama. Nothing is fetched at build time: no OpenSSL, no web UI download (this llama.cpp
# has no CURL option left: LLAMA_CURL is ignored). The build's output goes to a log, shown when a step fails.
log="$root/build.log"
if ! cmake -S "$src" -B "$root/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
    -DGGML_CUDA=OFF -DGGML_HIP=OFF -DGGML_VULKAN=OFF -DGGML_METAL=OFF -DGGML_OPENCL=OFF -DGGML_SYCL=OFF \
    -DGGML_RPC=OFF -DGGML_BLAS=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON >"$log" 2>&1 ||
    ! cmake --build "$root/build" --target llama-server -j 2 >>"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "build_llama_server.sh: the build failed; the full log is $log" >&2
    exit 1
fi
realpath "$binary"
