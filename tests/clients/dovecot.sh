#!/usr/bin/env bash
# A private Dovecot IMAP server for comparisons (issue 9): own config under a
# directory of the caller's, maildir, 127.0.0.1 only, static password, run as
# the current user, never the system service.
#
#   dovecot.sh install          apt-get install dovecot-imapd and isync if missing
#   dovecot.sh start DIR        write DIR/dovecot.conf, start Dovecot in the
#                               background; prints "port=<n> pid=<n> owner=<user>";
#                               any user logs in with password "pass", mail in
#                               DIR/home/<user>/Maildir, files owned by <owner>
#                               (the caller, or user dovecot when run as root)
#   dovecot.sh stop DIR         stop the instance started in DIR (by its pid)
#
# Messages are loaded by writing them into DIR/home/<user>/Maildir/cur before
# the first login (file names sort in delivery order, and Dovecot gives UIDs in
# that order), so the stored bytes are exactly the test's.
set -euo pipefail

cmd="${1:-}"

install() {
    if command -v dovecot >/dev/null 2>&1 && [[ -x /usr/lib/dovecot/imap ]] &&
        command -v mbsync >/dev/null 2>&1; then
        return 0
    fi
    if [[ $(id -u) -ne 0 ]]; then
        echo "dovecot.sh: dovecot-imapd and isync are missing and installing them needs root" >&2
        return 1
    fi
    echo "dovecot.sh: installing dovecot-imapd and isync" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q dovecot-imapd isync >&2 ||
        { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q dovecot-imapd isync >&2; }
    # The package starts the system service where it can; this instance never uses it.
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

start() {
    local dir="$1"
    [[ -n "$dir" ]] || { echo "usage: dovecot.sh start DIR" >&2; return 2; }
    mkdir -p "$dir/run" "$dir/state" "$dir/home"
    dir="$(cd "$dir" && pwd)"
    local user group uid gid login port
    # Dovecot runs nothing as root: as root, mail belongs to the package's own
    # unprivileged users (dovecot, and dovenull for the login processes).
    if [[ $(id -u) -eq 0 ]]; then
        user=dovecot
        login=dovenull
        chown -R dovecot: "$dir"
    else
        user="$(id -un)"
        login="$user"
    fi
    group="$(id -gn "$user")"
    uid="$(id -u "$user")"
    gid="$(id -g "$user")"
    port="$(free_port)"
    cat >"$dir/dovecot.conf" <<EOF
# Private test instance (tests/clients/dovecot.sh); nothing here is system-wide.
base_dir = $dir/run
state_dir = $dir/state
instance_name = bc-compare-$port
log_path = $dir/dovecot.log
info_log_path = $dir/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = $user
default_internal_group = $group
default_login_user = $login
first_valid_uid = $uid
last_valid_uid = $uid
mail_location = maildir:~/Maildir
mail_privileged_group =
mail_max_userip_connections = 50
passdb {
  driver = static
  args = password=pass
}
userdb {
  driver = static
  args = uid=$uid gid=$gid home=$dir/home/%u
}
service imap-login {
  chroot =
  inet_listener imap {
    address = 127.0.0.1
    port = $port
  }
  inet_listener imaps {
    port = 0
  }
}
service anvil {
  chroot =
}
service auth {
  unix_listener auth-userdb {
    user = $user
  }
}
service stats {
  unix_listener stats-reader {
    user = $user
  }
  unix_listener stats-writer {
    user = $user
  }
}
service imap {
  process_limit = 64
}
EOF
    /usr/sbin/dovecot -c "$dir/dovecot.conf" -F >>"$dir/dovecot.stderr" 2>&1 &
    local pid=$!
    echo "$pid" >"$dir/dovecot.pid"
    for _ in $(seq 1 100); do
        if python3 -c "import socket,sys; s=socket.create_connection(('127.0.0.1',$port),0.2); sys.exit(0 if s.recv(100).startswith(b'* OK') else 1)" 2>/dev/null; then
            echo "port=$port pid=$pid owner=$user"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            break
        fi
        sleep 0.1
    done
    echo "dovecot.sh: Dovecot did not come up; log:" >&2
    cat "$dir/dovecot.stderr" "$dir/dovecot.log" >&2 2>/dev/null || true
    kill "$pid" 2>/dev/null || true
    return 1
}

stop() {
    local dir="$1"
    [[ -f "$dir/dovecot.pid" ]] || return 0
    local pid
    pid="$(cat "$dir/dovecot.pid")"
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/dovecot.pid"
}

case "$cmd" in
install) install ;;
start) start "${2:-}" ;;
stop) stop "${2:-}" ;;
*)
    echo "usage: dovecot.sh install | start DIR | stop DIR" >&2
    exit 2
    ;;
esac
