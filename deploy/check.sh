#!/usr/bin/env bash
# Checks deploy/: builds the image where a container engine runs; otherwise checks the Dockerfile's
# shape and runs its build commands here. Verifies the systemd unit and that the env example
# lists every setting planbot reads.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "-- every setting is in planbot.env.example"
missing=0
names=$(grep -o '"\(PLANBOT\|TELEGRAM\|DISCORD\)_[A-Z][A-Z_]*"' -rh src/config/ | sort -u | wc -l)
[ "$names" -ge 30 ] || { echo "found only $names settings in src/config/"; exit 1; }
for name in $(grep -o '"\(PLANBOT\|TELEGRAM\|DISCORD\)_[A-Z][A-Z_]*"' -rh src/config/ | tr -d '"' | sort -u); do
  grep -q "^$name=" deploy/planbot.env.example || { echo "missing: $name"; missing=1; }
done
[ "$missing" = 0 ]

echo "-- no secret in a build context or a commit"
grep -qx 'deploy/planbot.env' .dockerignore
grep -qx '/deploy/planbot.env' .gitignore
for key in 'init: true' 'cap_drop: \[ALL\]' 'no-new-privileges:true' 'read_only: true' 'pids_limit:' 'mem_limit:' 'secrets:'; do
  grep -q "$key" deploy/compose.yaml || { echo "compose.yaml lacks $key"; exit 1; }
done

echo "-- systemd unit"
if command -v systemd-analyze >/dev/null 2>&1; then
  # The unit names paths that exist only on a server; anything else it reports is a problem.
  problems=$(systemd-analyze verify deploy/planbot.service 2>&1 \
    | grep -v -e 'is not executable' -e 'No such file or directory' || true)
  if [ -n "$problems" ]; then echo "$problems"; exit 1; fi
  systemd-analyze security --offline=true deploy/planbot.service | tail -1
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
  grep -q 'HEALTHCHECK .*planbot", "check", "--running"' deploy/Dockerfile
  grep -q 'apt-get install .*bubblewrap' deploy/Dockerfile
  grep -q '^FROM node:2[2-9]' deploy/Dockerfile
  version=$(sed -n 's/^ARG CLAUDE_CODE_VERSION=//p' deploy/Dockerfile)
  grep -q "Claude Code $version" README.md || { echo "README does not name the Dockerfile's Claude Code $version"; exit 1; }
  cargo build --release --locked --bin planbot
  ./target/release/planbot --version
  PLANBOT_STATE_DIR="$(mktemp -d)" PLANBOT_CLAUDE_BIN="${PLANBOT_REAL_CLAUDE:-claude}" ./target/release/planbot check
fi
echo "deploy/ checks passed"
