#!/usr/bin/env bash
# Installs the Claude Code CLI version the contract tests are written against into a cache dir
# (default ~/.cache/planbot/claude-code-<version>) and prints the binary's path.
set -euo pipefail
version="${PLANBOT_CLI_VERSION:-2.1.197}"
cache="${PLANBOT_CLI_CACHE:-$HOME/.cache/planbot/claude-code-$version}"
bin="$cache/node_modules/@anthropic-ai/claude-code-linux-x64/claude"
if [ ! -x "$bin" ]; then
  command -v npm >/dev/null || { echo "npm is needed to install Claude Code" >&2; exit 1; }
  mkdir -p "$cache"
  # The native binary ships in the platform package; the wrapper's postinstall is not needed.
  npm install --prefix "$cache" --no-audit --no-fund --loglevel=error \
    "@anthropic-ai/claude-code@$version" >&2
fi
"$bin" --version >&2
echo "$bin"
