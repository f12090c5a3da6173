#!/usr/bin/env bash
# Checks deploy/: builds the image where a container engine runs; otherwise checks the Dockerfile's
# shape and runs its build commands here. Verifies the systemd unit and that the env example
# lists every setting planbot reads.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "-- every setting is in planbot.env.example"
missing=0
for name in $(grep -o '"\(PLANBOT\|TELEGRAM\|DISCORD\)_[A-Z_]*"' src/config.rs | tr -d '"' | sort -u); do
  grep -q "^$name=" deploy/planbot.env.example || { echo "missing: $name"; missing=1; }
done
[ "$missing" = 0 ]

echo "-- systemd unit"
if command -v systemd-analyze >/dev/null 2>&1; then
  # The unit names paths that exist only on a server; anything else it reports is a problem.
  problems=$(systemd-analyze verify deploy/planbot.service 2>&1 \
    | grep -v -e 'is not executable' -e 'No such file or directory' || true)
  if [ -n "$problems" ]; then echo "$problems"; exit 1; fi
else
  echo "systemd-analyze not available; skipped"
fi

echo "-- Dockerfile"
if docker info >/dev/null 2>&1; then
  docker build -f deploy/Dockerfile -t planbot:check .
else
  echo "no container engine here: checking the Dockerfile and running its build steps instead"
  grep -q '^FROM rust:.* AS build' deploy/Dockerfile
  grep -q '^USER planbot' deploy/Dockerfile
  grep -q '^VOLUME' deploy/Dockerfile
  grep -q 'HEALTHCHECK .*planbot", "check"' deploy/Dockerfile
  version=$(sed -n 's/^ARG CLAUDE_CODE_VERSION=//p' deploy/Dockerfile)
  [ "$version" = "${PLANBOT_CLI_VERSION:-2.1.197}" ] || { echo "Dockerfile pins Claude Code $version"; exit 1; }
  cargo build --release --locked --bin planbot
  ./target/release/planbot --version
  PLANBOT_STATE_DIR="$(mktemp -d)" PLANBOT_CLAUDE_BIN="${PLANBOT_REAL_CLAUDE:-claude}" ./target/release/planbot check
fi
echo "deploy/ checks passed"
