#!/usr/bin/env bash
# An sshd on 127.0.0.1 for the remote-device tests, with its own keys and config (no system-wide
# changes beyond /run/sshd, which sshd insists on).
#   tools/sshd_for_tests.sh start DIR PORT   -> DIR/id_ed25519 (client key), DIR/known_hosts
#   tools/sshd_for_tests.sh stop DIR
set -euo pipefail
cmd=${1:?usage: sshd_for_tests.sh start DIR PORT | stop DIR}
dir=${2:?directory}
case "$cmd" in
  start)
    port=${3:?port}
    mkdir -p "$dir" /run/sshd
    rm -f "$dir"/ssh_host_ed25519_key* "$dir"/id_ed25519*
    ssh-keygen -q -t ed25519 -N '' -f "$dir/ssh_host_ed25519_key"
    ssh-keygen -q -t ed25519 -N '' -f "$dir/id_ed25519"
    cp "$dir/id_ed25519.pub" "$dir/authorized_keys"
    chmod 600 "$dir/authorized_keys"
    hostkey=$(cut -d' ' -f1,2 "$dir/ssh_host_ed25519_key.pub")
    printf '[127.0.0.1]:%s %s\n[localhost]:%s %s\n' "$port" "$hostkey" "$port" "$hostkey" > "$dir/known_hosts"
    cat > "$dir/sshd_config" <<CONF
Port $port
ListenAddress 127.0.0.1
HostKey $dir/ssh_host_ed25519_key
PidFile $dir/sshd.pid
AuthorizedKeysFile $dir/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
MaxStartups 50
MaxSessions 50
Subsystem sftp /usr/lib/openssh/sftp-server
CONF
    /usr/sbin/sshd -f "$dir/sshd_config" -E "$dir/sshd.log"
    for _ in $(seq 50); do  # until it accepts connections
      if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then exit 0; fi
      sleep 0.1
    done
    echo "sshd did not start: $(tail -n 3 "$dir/sshd.log")" >&2
    exit 1
    ;;
  stop)
    if [ -f "$dir/sshd.pid" ]; then kill "$(cat "$dir/sshd.pid")" 2>/dev/null || true; rm -f "$dir/sshd.pid"; fi
    ;;
  *) echo "usage: sshd_for_tests.sh start DIR PORT | stop DIR" >&2; exit 2 ;;
esac
