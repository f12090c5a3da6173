#!/usr/bin/env bash
# Installs a Claude Code CLI version for the contract tests into a cache dir and prints the
# binary's path. Usage: install-claude-cli.sh [VERSION|latest] (default: the pinned 2.1.197, or
# PLANBOT_CLI_VERSION). The cache is ~/.cache/planbot/claude-code-<VERSION|latest>
# (PLANBOT_CLI_CACHE overrides the whole path).
set -euo pipefail
version="${1:-${PLANBOT_CLI_VERSION:-2.1.197}}"
cache="${PLANBOT_CLI_CACHE:-$HOME/.cache/planbot/claude-code-$version}"
bin="$cache/node_modules/@anthropic-ai/claude-code-linux-x64/claude"
# "latest" is looked up again on every run, so a newer release replaces the cached one.
if [ ! -x "$bin" ] || [ "$version" = latest ]; then
  command -v npm >/dev/null || { echo "npm is needed to install Claude Code" >&2; exit 1; }
  mkdir -p "$cache"
  # The native binary ships in the platform package; the wrapper's postinstall is not needed.
  # The newest wants Node 22 or later for its wrapper; the native binary runs on any.
  npm install --prefix "$cache" --no-audit --no-fund --loglevel=error --engine-strict=false \
    "@anthropic-ai/claude-code@$version" >&2
fi
"$bin" --version >&2
echo "$bin"
