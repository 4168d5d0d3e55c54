#!/usr/bin/env bash
# Install Debian's chromium for the chat page's browser tests (tests/page), which drive it headless with
# Playwright; Playwright downloads no browser of its own. Where chromium is already there, nothing runs.
#
# Never fails `make test`: where it cannot install (not root, no apt-get, no network), it writes the
# reason to .chromium.failed and exits 1; the browser tests then skip, naming that reason. A successful
# install (or a chromium already there) removes the file.
#
#   scripts/install-chromium.sh
set -uo pipefail

FAILED=.chromium.failed

say() { echo "[install-chromium] $*"; }
fail() {
    say "not installed: $*"
    echo "$*" >"$FAILED"
    exit 1
}
installed() {
    local path
    path=$(command -v chromium) && version=$("$path" --version 2>/dev/null) && [[ -n "$version" ]]
}

if installed; then
    rm -f "$FAILED"
    exit 0
fi
command -v apt-get >/dev/null 2>&1 || fail "no apt-get on this machine: install chromium yourself (or set LLMHOST_CHROMIUM to a Chromium binary)"
[[ $(id -u) -eq 0 ]] || fail "apt-get needs root: run 'sudo apt-get install chromium' (or set LLMHOST_CHROMIUM to a Chromium binary)"

say "apt-get install chromium (about 500 MB, a few minutes)"
errlog=$(mktemp)
if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >"$errlog" 2>&1; then
    reason=$(grep -E '^(E|W):' "$errlog" | tail -n 2 | tr '\n' ' ')
    rm -f "$errlog"
    fail "apt-get install chromium failed: ${reason:-see the output of apt-get}"
fi
rm -f "$errlog"
installed || fail "chromium was installed but does not run ('chromium --version' failed)"
say "installed: $version"
rm -f "$FAILED"
