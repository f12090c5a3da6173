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

echo "-- several replicas: compose.scale.yaml and k8s/"
if python3 -c 'import yaml' 2>/dev/null; then
  python3 - <<'PY'
import yaml
for path in ["deploy/compose.scale.yaml", "deploy/k8s/planbot.yaml", "deploy/k8s/secret.example.yaml"]:
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    assert docs, path
compose = yaml.safe_load(open("deploy/compose.scale.yaml"))
replicas = [n for n in compose["services"] if n.startswith("planbot-")]
assert len(replicas) == 3, replicas
for name in replicas:
    service = compose["services"][name]
    mounts = service["volumes"]
    assert "workspace:/var/lib/planbot/workspace" in mounts and "claude:/home/planbot/.claude" in mounts, name
    assert service["read_only"] and service["cap_drop"] == ["ALL"], name
    assert "PLANBOT_DATABASE_URL_FILE" in service["environment"], name
assert len({tuple(compose["services"][n]["volumes"]) for n in replicas}) == 3, "each replica its own state"
kinds = {d["kind"]: d for d in yaml.safe_load_all(open("deploy/k8s/planbot.yaml")) if d}
claims = [d for d in yaml.safe_load_all(open("deploy/k8s/planbot.yaml")) if d and d["kind"] == "PersistentVolumeClaim"]
assert all(c["spec"]["accessModes"] == ["ReadWriteMany"] for c in claims) and len(claims) == 2
container = kinds["Deployment"]["spec"]["template"]["spec"]["containers"][0]
assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
assert kinds["Deployment"]["spec"]["replicas"] >= 2
config = kinds["ConfigMap"]["data"]
assert int(config["PLANBOT_REPLICAS"]) == kinds["Deployment"]["spec"]["replicas"], "PLANBOT_REPLICAS"
assert all(compose["services"][n]["environment"]["PLANBOT_REPLICAS"] == str(len(replicas)) for n in replicas)
print("compose.scale.yaml and k8s/ are well formed")
PY
else
  echo "python3-yaml not installed: the YAML shapes are not checked"
fi
# Every setting the files name is one planbot reads.
for name in $(grep -oh '\b\(PLANBOT\|TELEGRAM\|DISCORD\)_[A-Z][A-Z_]*' deploy/compose.scale.yaml deploy/k8s/*.yaml | sort -u); do
  grep -rq "\"$name\"" src/config/ || { echo "deploy names $name, which planbot does not read"; exit 1; }
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
