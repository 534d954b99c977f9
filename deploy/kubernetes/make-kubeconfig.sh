#!/usr/bin/env bash
# Writes a kubeconfig for gitopsd's ServiceAccount (deploy/kubernetes/rbac.yaml applied first).
#
#   KUBECONFIG=<admin kubeconfig> deploy/kubernetes/make-kubeconfig.sh OUT CONTEXT [MODE]
#
#   OUT      file to write, e.g. /etc/gitopsd/credentials/prod.kubeconfig (mode 0600)
#   CONTEXT  context name in the file; the host config's kubernetes.context (e.g. prod)
#   MODE     secret (default): a long-lived token from a Secret of type
#            kubernetes.io/service-account-token named gitopsd-token; valid until that Secret
#            is deleted.
#            bound:DURATION, e.g. bound:2160h: `kubectl create token --duration`; expires (the
#            API server may cap the duration), so it must be re-run before it does.
#
# The server URL and CA come from the admin kubeconfig's current context (override with
# SERVER=https://... and CA_FILE=...). Rotation: see deploy/kubernetes/README.md.
set -euo pipefail
out="${1:?usage: make-kubeconfig.sh OUT CONTEXT [secret|bound:DURATION]}"
context="${2:?usage: make-kubeconfig.sh OUT CONTEXT [secret|bound:DURATION]}"
mode="${3:-secret}"
ns=gitopsd-system
sa=gitopsd

server="${SERVER:-$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
if [[ -n "${CA_FILE:-}" ]]; then
    cp "$CA_FILE" "$tmp/ca.crt"
else
    kubectl config view --minify --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}' |
        base64 -d >"$tmp/ca.crt" 2>/dev/null || true
    if [[ ! -s "$tmp/ca.crt" ]]; then
        ca_path="$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.certificate-authority}')"
        [[ -n "$ca_path" && -f "$ca_path" ]] || { echo "make-kubeconfig: no cluster CA found; set CA_FILE" >&2; exit 1; }
        cp "$ca_path" "$tmp/ca.crt"
    fi
fi

case "$mode" in
    secret)
        kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Secret
metadata:
  name: gitopsd-token
  namespace: $ns
  annotations:
    kubernetes.io/service-account.name: $sa
type: kubernetes.io/service-account-token
YAML
        token=""
        for _ in $(seq 1 50); do
            token="$(kubectl -n "$ns" get secret gitopsd-token -o jsonpath='{.data.token}' | base64 -d || true)"
            [[ -n "$token" ]] && break
            sleep 0.2
        done
        [[ -n "$token" ]] || { echo "make-kubeconfig: token controller did not fill Secret $ns/gitopsd-token" >&2; exit 1; }
        ;;
    bound:*)
        token="$(kubectl -n "$ns" create token "$sa" --duration="${mode#bound:}")"
        ;;
    *) echo "make-kubeconfig: MODE must be secret or bound:DURATION" >&2; exit 2 ;;
esac

umask 077
kc="$tmp/kubeconfig"
KUBECONFIG="$kc" kubectl config set-cluster "$context" --server="$server" \
    --certificate-authority="$tmp/ca.crt" --embed-certs=true >/dev/null
KUBECONFIG="$kc" kubectl config set-credentials gitopsd --token="$token" >/dev/null
KUBECONFIG="$kc" kubectl config set-context "$context" --cluster="$context" --user=gitopsd >/dev/null
KUBECONFIG="$kc" kubectl config use-context "$context" >/dev/null
# Check it before handing it over.
KUBECONFIG="$kc" kubectl auth can-i patch deployments --all-namespaces >/dev/null ||
    { echo "make-kubeconfig: the new kubeconfig cannot patch deployments; is rbac.yaml applied?" >&2; exit 1; }
install -m 0600 "$kc" "$out"
echo "make-kubeconfig: wrote $out (context $context, server $server, $mode token)"
