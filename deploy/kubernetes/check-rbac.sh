#!/usr/bin/env bash
# Checks deploy/kubernetes/rbac.yaml against a real cluster: everything an environment folder of
# the config repository contains must pass a server-side dry-run *as gitopsd's ServiceAccount*,
# and a Secret must be forbidden.
#
#   KUBECONFIG=<admin kubeconfig> deploy/kubernetes/check-rbac.sh [ENV_DIR]   (default example-repo/environments/prod)
#
# Side effects, all undone on exit: applies rbac.yaml if gitopsd-read does not exist yet, and
# creates the folder's namespaces, Roles and ClusterRoles (as gitopsd) under a unique prefix
# (rbacchk-<pid>-<name>) so they cannot collide with a real environment. Every other object is
# only dry-run. Needs kubectl and python3-yaml.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
env_dir="${1:-$root/example-repo/environments/prod}"
sa="system:serviceaccount:gitopsd-system:gitopsd"
prefix="rbacchk-$$-"

tmp="$(mktemp -d)"
created_rbac=0
cleanup() {
    set +e
    if [[ -s "$tmp/clusterroles" ]]; then
        xargs kubectl delete clusterrole --ignore-not-found <"$tmp/clusterroles" >/dev/null
    fi
    if [[ -s "$tmp/namespaces" ]]; then
        xargs kubectl delete namespace --wait=false --ignore-not-found <"$tmp/namespaces" >/dev/null
    fi
    if [[ $created_rbac -eq 1 ]]; then
        kubectl delete -f "$here/rbac.yaml" --wait=false --ignore-not-found >/dev/null
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

if ! kubectl get clusterrole gitopsd-read gitopsd-namespace-apply gitopsd-bind-edit >/dev/null 2>&1; then
    kubectl apply -f "$here/rbac.yaml" >/dev/null
    created_rbac=1
fi

# Kubernetes documents of the folder (gitopsd's own kinds dropped), namespaces renamed.
python3 - "$env_dir" "$prefix" "$tmp" <<'PY'
import pathlib, sys, yaml
env_dir, prefix, tmp = pathlib.Path(sys.argv[1]), sys.argv[2], pathlib.Path(sys.argv[3])
docs = []
for f in sorted(env_dir.rglob("*.y*ml")):
    docs += [d for d in yaml.safe_load_all(f.read_text()) if d]
docs = [d for d in docs if not d.get("apiVersion", "").startswith("gitopsd.dev/")]
names = {d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"}
def rename(o):
    if isinstance(o, dict):
        return {k: (prefix + v if k == "namespace" and isinstance(v, str) and v in names else rename(v))
                for k, v in o.items()}
    if isinstance(o, list):
        return [rename(x) for x in o]
    return o
docs = [rename(d) for d in docs]
# ClusterRoles of the folder get the prefix too (they are created for real); so do their roleRefs.
croles = {d["metadata"]["name"] for d in docs if d["kind"] == "ClusterRole"}
for d in docs:
    if d["kind"] in ("Namespace", "ClusterRole"):
        d["metadata"]["name"] = prefix + d["metadata"]["name"]
    ref = d.get("roleRef")
    if ref and ref.get("kind") == "ClusterRole" and ref.get("name") in croles:
        ref["name"] = prefix + ref["name"]
(tmp / "namespaces").write_text("".join(prefix + n + "\n" for n in sorted(names)))
(tmp / "clusterroles").write_text("".join(prefix + n + "\n" for n in sorted(croles)))
first = ("Namespace", "Role", "ClusterRole")
(tmp / "ns.yaml").write_text(yaml.safe_dump_all([d for d in docs if d["kind"] == "Namespace"]))
(tmp / "roles.yaml").write_text(yaml.safe_dump_all([d for d in docs if d["kind"] in first[1:]]))
(tmp / "objects.yaml").write_text(yaml.safe_dump_all([d for d in docs if d["kind"] not in first]))
print(f"check-rbac: {len(docs)} objects from {env_dir}", file=sys.stderr)
PY

fail=0
# Namespaces, Roles and ClusterRoles: created for real (as gitopsd), because namespaced objects
# need their namespace and a (Cluster)RoleBinding dry-run needs the role it refers to (creating
# a role without `escalate` is itself the check that gitopsd holds what the role grants).
if kubectl apply --server-side --field-manager=gitopsd --as="$sa" -f "$tmp/ns.yaml" >"$tmp/ns.out" 2>&1 &&
    # The operator's step per namespace (namespace.yaml): bind gitopsd-namespace-apply in it.
    while read -r n; do
        sed -e "s/NAMESPACE/$n/" -e s/ENVIRONMENT/rbac-check/ -e s/INSTANCE/rbac-check/ "$here/namespace.yaml" |
            python3 -c 'import sys,yaml; print(yaml.safe_dump_all([d for d in yaml.safe_load_all(sys.stdin) if d and d["kind"]=="RoleBinding"]))' |
            kubectl apply -f - >>"$tmp/ns.out" 2>&1
    done <"$tmp/namespaces" &&
    kubectl apply --server-side --field-manager=gitopsd --as="$sa" -f "$tmp/roles.yaml" >>"$tmp/ns.out" 2>&1; then
    echo "check-rbac: ok   namespaces, roles and clusterroles created as $sa"
else
    echo "check-rbac: FAIL namespaces as $sa:" >&2; cat "$tmp/ns.out" >&2; fail=1
fi
if kubectl apply --server-side --dry-run=server --field-manager=gitopsd --as="$sa" \
    -f "$tmp/objects.yaml" >"$tmp/apply.out" 2>&1; then
    echo "check-rbac: ok   every object passes a server-side dry-run as $sa"
else
    echo "check-rbac: FAIL dry-run as $sa:" >&2; grep -v ' serverside-applied (server dry run)$' "$tmp/apply.out" >&2; fail=1
fi

ns="$(head -n1 "$tmp/namespaces")"
cat >"$tmp/secret.yaml" <<YAML
apiVersion: v1
kind: Secret
metadata: {name: rbac-check, namespace: $ns}
stringData: {k: v}
YAML
if kubectl apply --server-side --dry-run=server --field-manager=gitopsd --as="$sa" \
    -f "$tmp/secret.yaml" >"$tmp/secret.out" 2>&1; then
    echo "check-rbac: FAIL a Secret was accepted for $sa" >&2; fail=1
elif grep -qi forbidden "$tmp/secret.out"; then
    echo "check-rbac: ok   Secret forbidden for $sa"
else
    echo "check-rbac: FAIL Secret rejected, but not as forbidden:" >&2; cat "$tmp/secret.out" >&2; fail=1
fi
for check in "get secrets -A" "create clusterroles --subresource=" "escalate clusterroles" "bind clusterroles/cluster-admin"; do
    # shellcheck disable=SC2086
    if [[ "$(kubectl auth can-i $check --as="$sa" 2>/dev/null || true)" == yes ]]; then
        [[ "$check" == "create clusterroles --subresource=" ]] && { echo "check-rbac: ok   can create clusterroles"; continue; }
        echo "check-rbac: FAIL $sa can: $check" >&2; fail=1
    else
        [[ "$check" == "create clusterroles --subresource=" ]] && { echo "check-rbac: FAIL cannot create clusterroles" >&2; fail=1; continue; }
        echo "check-rbac: ok   cannot: $check"
    fi
done
exit "$fail"
