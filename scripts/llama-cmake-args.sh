#!/bin/sh
# Prints the CMake arguments every llama.cpp build of this project uses (llama-cpp-python's wheel through
# the Makefile's CMAKE_ARGS, and the native llama-server of scripts/build-llama-server.sh): this CPU's
# instruction sets, named one by one, without AMX.
#
# Why not -march=native (GGML_NATIVE, llama.cpp's default): it compiles ggml's AMX kernels wherever the
# CPU reports AMX, and on virtual machines that report AMX without enabling its tile state (these Xeon
# VMs), the first matmul on an AMX buffer dies with a general-protection fault (SIGSEGV in
# ggml_backend_amx_mul_mat), taking the server and every request with it.
# Off x86-64 the native build is kept (no AMX there).
set -eu
if [ "$(uname -m)" != "x86_64" ] || [ ! -r /proc/cpuinfo ]; then
    exit 0
fi
flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
has() { for f in "$@"; do case "$flags" in *" $f "*) ;; *) return 1 ;; esac; done; }
args="-DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
on() { if has "$@"; then echo "ON"; else echo "OFF"; fi; }
args="$args -DGGML_SSE42=$(on sse4_2) -DGGML_AVX=$(on avx) -DGGML_AVX2=$(on avx2) -DGGML_FMA=$(on fma)"
args="$args -DGGML_F16C=$(on f16c) -DGGML_BMI2=$(on bmi2) -DGGML_AVX_VNNI=$(on avx_vnni)"
args="$args -DGGML_AVX512=$(on avx512f avx512cd avx512vl avx512dq avx512bw)"
args="$args -DGGML_AVX512_VBMI=$(on avx512f avx512vbmi) -DGGML_AVX512_VNNI=$(on avx512f avx512_vnni)"
args="$args -DGGML_AVX512_BF16=$(on avx512f avx512_bf16)"
echo "$args"
