#!/usr/bin/env bash
# What a newcomer does with README.md's "Installing it": `cargo install --locked --path host`,
# here into a temporary prefix, then coffer from the PATH: --help (pointing to the Chinese
# README), the demo, the command the demo's closing hint suggests, completions and the man page.
# CI runs it after the tests; it installs the dev profile from the tests' target/ (the README's
# release install differs only in optimisation, and would cost another full build).
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target} cargo install --locked --debug --path host --root "$prefix" --quiet
export PATH="$prefix/bin:$PATH"
[ "$(command -v coffer)" = "$prefix/bin/coffer" ] || { echo "coffer is not the installed one: $(command -v coffer)"; exit 1; }
coffer --version
coffer --help | grep -q 'README.zh-CN.md' || { echo "coffer --help does not point to README.zh-CN.md"; exit 1; }
out=$(cd / && coffer demo)
echo "$out" | tail -n 1
hint=$(echo "$out" | sed -n 's/^demo passed: try `\(.*\)`$/\1/p')
[ -n "$hint" ] || { echo "the demo printed no closing hint"; exit 1; }
(cd / && env ${hint% coffer snapshots} coffer snapshots) | grep -q . || { echo "the demo's hint failed: $hint"; exit 1; }
coffer completions bash | grep -q 'complete' || { echo "no bash completions"; exit 1; }
coffer completions zsh | grep -q '#compdef coffer' || { echo "no zsh completions"; exit 1; }
coffer man | grep -q '^\.TH' || { echo "no man page"; exit 1; }
echo "install check passed: coffer on the PATH from $prefix, --help, demo, its hint, completions, man page"
