# Fixed loopback ports of the testbed: one place. Sourced by up, down and new-repo.
TB_ETCD_CLIENT_PORT=23790
TB_ETCD_PEER_PORT=23800
TB_APISERVER_PORT=26443
TB_KCM_PORT=26257          # kube-controller-manager --secure-port (healthz)
TB_SCHEDULER_PORT=26259    # kube-scheduler --secure-port (healthz)
TB_KWOK_PORT=26080         # kwok --server-address (healthz)
TB_MOTO_PORT=25000         # primary S3 (moto)
TB_VERSITYGW_PORT=25001    # second S3 (versitygw, posix backend)
TB_GIT_HTTPS_PORT=28443    # lighttpd + git-http-backend
TB_SSHD_PORT=22222         # sshd + git-shell
TB_ALERTMANAGER_PORT=29093 # alertmanager (API v2: the notifications' peer)
TB_ALL_PORTS="$TB_ETCD_CLIENT_PORT $TB_ETCD_PEER_PORT $TB_APISERVER_PORT $TB_KCM_PORT $TB_SCHEDULER_PORT $TB_KWOK_PORT $TB_MOTO_PORT $TB_VERSITYGW_PORT $TB_GIT_HTTPS_PORT $TB_SSHD_PORT $TB_ALERTMANAGER_PORT"
