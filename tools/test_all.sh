#!/usr/bin/env bash
# Installs everything the tests need, then runs the whole suite (the README's test command;
# .ci/run runs exactly this). The tests need, besides the Python packages of the `test` extra
# (TensorFlow, LiteRT, TVM, onnxruntime's peers, fabric, optuna, pytest, ...):
#   g++, cmake                       building layertune (and the profiler for other targets)
#   g++-arm-linux-gnueabihf,         cross-building the profiler for pi3 (armv7), pi3_64 / aarch64
#   g++-aarch64-linux-gnu,           and pi0 (armv6, the soft-float armel compiler)
#   g++-arm-linux-gnueabi
#   qemu-user                        running those ARM builds on this machine
#   openssh-server                   a real sshd on 127.0.0.1 for the remote-device tests
#   llvm-14                          llvm-mca, the core model tools/arm_codegen.py reports the ARM loops with
# Debian packages that are missing are installed with apt-get (as root, or through sudo).
# Arguments go to pytest. pytest's exit code 5 (no test ran) fails the run like any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(g++ cmake g++-arm-linux-gnueabihf g++-aarch64-linux-gnu g++-arm-linux-gnueabi qemu-user openssh-server llvm-14)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if ! command -v apt-get > /dev/null; then
    echo "tools/test_all.sh: the tests need these Debian packages (or your system's equivalents): ${missing[*]}" >&2
    exit 1
  fi
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "installing ${missing[*]} ..."
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
fi
python3 --version
g++ --version | head -n 1
python3 -m pip install ".[test]"
python3 -m pytest -q "$@"
