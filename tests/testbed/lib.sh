# Shared by up, down and new-repo: paths and process handling. Sourced, not run.
tb_here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.sh
. "$tb_here/versions.sh"
# shellcheck source=ports.sh
. "$tb_here/ports.sh"
TB_REPO_ROOT="$(cd "$tb_here/../.." && pwd)"
TB="$TB_REPO_ROOT/target/testbed"
TB_LOGS="$TB/logs"
TB_RUN="$TB/run"         # pid files: <name>.pid holds the pid, <name>.exe the executable it must be
TB_ENV="$TB/env.sh"
TB_GIT_USER=gitopsd-git  # system user that owns the served repositories (sshd logs in as it; lighttpd runs as it)
# Components in start order; down stops them in reverse.
TB_COMPONENTS="etcd moto versitygw lighttpd sshd kube-apiserver kube-controller-manager kube-scheduler kwok alertmanager"

tb_log() { printf '[testbed] %s\n' "$*" >&2; }
tb_die() { printf '[testbed] ERROR: %s\n' "$*" >&2; exit 1; }

# tb_pid NAME: prints the pid of a component started by up if it is still that process; fails otherwise.
# The executable is checked too so that a recycled pid is never taken for ours.
tb_pid() {
  local name=$1 pid exe
  [ -f "$TB_RUN/$name.pid" ] || return 1
  pid=$(cat "$TB_RUN/$name.pid")
  [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 1
  exe=$(cat "$TB_RUN/$name.exe" 2>/dev/null || true)
  if [ -n "$exe" ]; then
    [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$(readlink -f "$exe")" ] || return 1
  fi
  echo "$pid"
}

# tb_start NAME EXE ARGS...: starts a daemon in its own session (so down can stop its whole process group),
# output to logs/NAME.log, and records its pid.
tb_start() {
  local name=$1 exe=$2; shift 2
  # Without job control a background child is not a process-group leader, so setsid execs in place
  # and $! is the daemon's own pid.
  setsid "$exe" "$@" >"$TB_LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$TB_RUN/$name.pid"
  echo "$exe" >"$TB_RUN/$name.exe"
}

# tb_wait NAME TIMEOUT_SECONDS CMD...: polls CMD until it succeeds; fails early if the component died.
tb_wait() {
  local name=$1 timeout=$2; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if [ -f "$TB_RUN/$name.pid" ] && ! tb_pid "$name" >/dev/null; then
      tail -n 30 "$TB_LOGS/$name.log" >&2 || true
      tb_die "$name exited during startup (log: $TB_LOGS/$name.log)"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      tail -n 30 "$TB_LOGS/$name.log" >&2 || true
      tb_die "$name not ready after ${timeout}s (log: $TB_LOGS/$name.log)"
    fi
    sleep 0.2
  done
}

# tb_port_listening PORT: true if something listens on 127.0.0.1:PORT.
tb_port_listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
