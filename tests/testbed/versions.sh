# Versions of the testbed's servers: one place, so the cache key and the build agree.
# Sourced by build, up and .ci/run.
K8S_VERSION=v1.36.3          # k8s.io/kubernetes
K8S_STAGING_VERSION=v0.36.3  # matching k8s.io/* staging modules
ETCD_VERSION=v3.6.16         # go.etcd.io/etcd/server/v3
KWOK_VERSION=v0.8.0          # sigs.k8s.io/kwok
VERSITYGW_VERSION=v1.8.0     # github.com/versity/versitygw (second S3 server, posix backend)
CLI_UTILS_VERSION=v0.37.2    # sigs.k8s.io/cli-utils (kstatus, the reference for gitopsd's health rules)
KUSTOMIZE_VERSION=v5.8.2    # v5.8.3 needs go 1.27; sigs.k8s.io/kustomize/kustomize/v5 (renderer run by gitopsd)
HELM_VERSION=v4.3.1         # helm.sh/helm/v4 (kustomize's --helm-command)
SOPS_VERSION=v3.13.3         # github.com/getsops/sops/v3 (cmd/sops: encrypts the SOPS test fixtures)
FLUX_VERSION=v1.9.6           # github.com/fluxcd/{source,kustomize}-controller (tests/bench/flux); v1.10.x needs go 1.27
ALERTMANAGER_VERSION=v0.35.0  # github.com/prometheus/alertmanager (cmd/alertmanager: the notifications' peer)
MOTO_VERSION=5.1.22          # PyPI moto[server] (primary S3 server); 5.2.x breaks GetBucketVersioning for aws-sdk-rust
TESTBED_CACHE="${GITOPSD_TESTBED_CACHE:-$HOME/.cache/gitopsd-testbed}"
# The Debian root filesystem tests/systemd-boot boots (tests/testbed/rootfs). Bump the version when
# the package list changes: it is the cache key.
DEBIAN_ROOTFS_SUITE=bookworm
DEBIAN_ROOTFS_VERSION=2
DEBIAN_ROOTFS_PACKAGES=systemd,systemd-sysv,dbus,procps,libssl3,zlib1g,ca-certificates
