#!/usr/bin/env bash
# Build native llama.cpp `llama-server`, `llama-bench` and `llama-batched-bench` (CPU only) from the
# llama.cpp source vendored inside the llama-cpp-python sdist that llmhost uses: `--engine llama-server`
# runs this llama-server (llmhost/engines/upstream/programs.py finds it), and
# benchmarks/bench_vs_llama_server.py compares llmhost with the very same llama.cpp.
#
#   scripts/build-llama-server.sh        # or: make llama-server
#
# Output: .llama-server/bin/{llama-server,llama-bench,llama-batched-bench} (statically linked against
# llama/ggml), .llama-server/VERSION (the stamp). Idempotent: when the three binaries exist and the stamp
# matches, it exits 0 at once. The sdist comes through `pip download` (pip's cache when it holds it).
# Exit 1 when it cannot build; the reason is then in .llama-server/build.failed (the engine's "not found"
# error and the tests' skip quote it), removed again by the next success.
# Needs cmake and a C++ compiler; where they are missing and apt-get works (root), it installs them.
# About 10-15 minutes on 2 cores. Environment: PYTHON (default python3), JOBS (default 2).
set -euo pipefail
# The whole script is one { } block, read before it runs: editing this file mid-build cannot break the build.
{

LLAMA_CPP_PYTHON_VERSION=0.3.36
PYTHON=${PYTHON:-python3}
JOBS=${JOBS:-2}
TARGETS=(llama-server llama-bench llama-batched-bench)
CMAKE_FLAGS=(
    -DCMAKE_BUILD_TYPE=Release
    -DBUILD_SHARED_LIBS=OFF      # self-contained binaries: no libllama.so/libggml.so to find at run time
    -DLLAMA_CURL=OFF             # no network at run time (deprecated in this llama.cpp: only a warning)
    -DLLAMA_OPENSSL=OFF
    -DLLAMA_USE_PREBUILT_UI=OFF  # otherwise the build downloads the web UI from a Hugging Face bucket
    -DLLAMA_BUILD_UI=OFF
    -DLLAMA_BUILD_TESTS=OFF
    -DLLAMA_BUILD_EXAMPLES=OFF
    -DLLAMA_BUILD_TOOLS=ON
    -DLLAMA_BUILD_SERVER=ON
)

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# This CPU's instruction sets without AMX, exactly as llama-cpp-python's wheel is built (see that script).
read -ra CPU_FLAGS <<< "$(sh "$ROOT/scripts/llama-cmake-args.sh")"
CMAKE_FLAGS+=("${CPU_FLAGS[@]}")
OUT="$ROOT/.llama-server"
BIN="$OUT/bin"
STAMP="$OUT/VERSION"
WANT_STAMP="llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION cpu $(uname -m) ${CMAKE_FLAGS[*]}"

FAILED="$OUT/build.failed"

die() {
    echo "build-llama-server: ERROR: $*" >&2
    mkdir -p "$OUT" && printf '%s\n' "$*" >"$FAILED"
    exit 1
}
say() { echo "build-llama-server: $*"; }

have_all_binaries() {
    local t
    for t in "${TARGETS[@]}"; do [ -x "$BIN/$t" ] || return 1; done
}

if have_all_binaries && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT_STAMP" ]; then
    rm -f "$FAILED"
    say "up to date: $BIN (llama.cpp from llama-cpp-python $LLAMA_CPP_PYTHON_VERSION)"
    exit 0
fi

# --- tools: cmake and a C++ compiler, from apt-get where missing
missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
{ command -v c++ >/dev/null 2>&1 || command -v g++ >/dev/null 2>&1; } || missing+=(g++)
command -v make >/dev/null 2>&1 || command -v ninja >/dev/null 2>&1 || missing+=(make)
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]} with apt-get"
    command -v apt-get >/dev/null 2>&1 || die "need ${missing[*]} and there is no apt-get: install them"
    [ "$(id -u)" = 0 ] || die "need ${missing[*]}: install them (apt-get needs root)"
    apt-get update -qq || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null ||
        die "apt-get install ${missing[*]} failed"
fi
GENERATOR=()
command -v ninja >/dev/null 2>&1 && GENERATOR=(-G Ninja)

# --- source: the sdist (pip download uses pip's cache), unpacked under .llama-server/src
mkdir -p "$OUT"
SRC="$OUT/src/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION"
LLAMA_SRC="$SRC/vendor/llama.cpp"
if [ ! -f "$LLAMA_SRC/CMakeLists.txt" ]; then
    dl=$(mktemp -d)
    trap 'rm -rf "$dl"' EXIT
    say "fetching the llama-cpp-python $LLAMA_CPP_PYTHON_VERSION sdist (pip download)"
    "$PYTHON" -m pip download --quiet --no-binary :all: --no-deps \
        "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" -d "$dl" ||
        die "pip download llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION failed (no PyPI and not in pip's cache?)"
    sdist=$(ls "$dl"/llama_cpp_python-"$LLAMA_CPP_PYTHON_VERSION".tar.gz 2>/dev/null) ||
        die "pip download did not produce llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz"
    rm -rf "$OUT/src"
    mkdir -p "$OUT/src"
    tar -xzf "$sdist" -C "$OUT/src" || die "could not unpack $sdist"
    [ -f "$LLAMA_SRC/CMakeLists.txt" ] || die "the sdist holds no vendor/llama.cpp/CMakeLists.txt"
fi

# --- build only the three targets
BUILD="$OUT/build"
start=$(date +%s)
say "configuring in $BUILD"
cmake -S "$LLAMA_SRC" -B "$BUILD" "${GENERATOR[@]}" "${CMAKE_FLAGS[@]}" >"$OUT/cmake-configure.log" 2>&1 || {
    tail -30 "$OUT/cmake-configure.log" >&2
    die "cmake configure failed (log: $OUT/cmake-configure.log)"
}
say "building ${TARGETS[*]} with -j$JOBS (10-15 minutes on 2 cores; log: $OUT/cmake-build.log)"
cmake --build "$BUILD" --config Release -j "$JOBS" --target "${TARGETS[@]}" >"$OUT/cmake-build.log" 2>&1 || {
    tail -30 "$OUT/cmake-build.log" >&2
    die "build failed (log: $OUT/cmake-build.log)"
}

mkdir -p "$BIN"
for t in "${TARGETS[@]}"; do
    [ -x "$BUILD/bin/$t" ] || die "the build produced no $BUILD/bin/$t"
    cp -f "$BUILD/bin/$t" "$BIN/$t"
done
"$BIN/llama-server" --version >/dev/null 2>&1 || die "$BIN/llama-server does not run"
printf '%s\n' "$WANT_STAMP" >"$STAMP"
rm -f "$FAILED"
say "built ${TARGETS[*]} into $BIN in $(($(date +%s) - start))s"
exit 0
}
