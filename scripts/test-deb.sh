#!/usr/bin/env bash
# The Debian package, installed as a user would (issue 20). Needs root; changes this machine's
# package state and removes it again (it refuses to run where fastsse is installed already).
#  1. lintian reports no error on dist/fastsse_VERSION-1_{amd64,arm64}.deb (scripts/release.sh);
#     the amd64 one is the one installed below;
#  2. a previous version (the same binary packaged as 0.0.1) installs; the user, the journal
#     folder and /run/fastsse are made; nothing is started where systemd does not run;
#  3. the daemon, started by the README's line for hosts without systemd (the package prints it;
#     it is the unit's User= and ExecStart=, after its ExecStartPre=), answers through Debian's own nginx (a copy of /etc/nginx with
#     the README's lines applied: the package's snippet in the default site) as www-data: a
#     clock, a publish, a replay;
#  4. the README's install line installs the new version over it with an edited config: the
#     edit stays, the running daemon hands over to the new binary (no restart of nginx, the
#     journal kept: the event published before replays after); the README run a second time
#     changes nothing;
#  5. `dpkg -r` stops the daemon and leaves only the conffiles (and the journal, data removed on
#     purge only); `dpkg --purge` leaves nothing: no file, no folder, no user.
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { echo "test-deb: FAIL: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "test-deb: skipped (installing a package needs root)"; exit 0; }
for tool in dpkg-deb lintian nginx curl setpriv; do
  command -v "$tool" >/dev/null || fail "$tool is missing (scripts/test.sh installs it)"
done
if dpkg-query -W -f='${Status}' fastsse 2>/dev/null | grep -q installed; then
  fail "a fastsse package is installed on this machine already; remove it first (dpkg --purge fastsse)"
fi
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
deb="dist/fastsse_${version}-1_amd64.deb"
[ -f "$deb" ] || fail "$deb is missing: run scripts/release.sh first"
bin="dist/fastsse-$version-x86_64-linux-musl/fastsse"

# fastsse processes of the fastsse user that still run (a zombie is not one: where PID 1 does
# not reap, as in a container, a daemon started by an upgrade stays one after it exits).
daemons() {
  for p in $(pgrep -u fastsse -x fastsse || true); do
    case "$(ps -o stat= -p "$p" 2>/dev/null)" in Z*|"") ;; *) echo "$p" ;; esac
  done
}

work=$(mktemp -d)
nginx_pid= daemon_pid=
cleanup() {
  [ -n "$nginx_pid" ] && kill -QUIT "$nginx_pid" 2>/dev/null
  if dpkg-query -W -f='${Status}' fastsse 2>/dev/null | grep -q "ok"; then
    dpkg --purge fastsse >/dev/null 2>&1 || true
  fi
  pkill -u fastsse -x fastsse 2>/dev/null || true
  [ -n "${KEEP:-}" ] && echo "test-deb: kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT
chmod 0755 "$work"

# 1. lintian, on every architecture's package: errors fail the test; warnings are printed.
for d in dist/fastsse_"${version}"-1_*.deb; do
  lint=$(lintian --tag-display-limit 0 "$d" 2>&1 | grep -v 'running with root privileges' || true)
  [ -n "$lint" ] && echo "$lint" | sed "s#^#test-deb: lintian $(basename "$d"): #"
  echo "$lint" | grep -q '^E:' && fail "lintian reports errors in $d"
done

# 2. The previous version.
old=$(bash scripts/deb.sh "$bin" 0.0.1 "$work")
dpkg -i "$old" >"$work/dpkg-i.log" 2>&1 </dev/null || fail "dpkg -i $old failed: $(tail -3 "$work/dpkg-i.log")"
# The README's line that starts the daemon where systemd does not run.
readme_daemon=$(awk '/<!-- install-deb-no-systemd/{f=1;next} f&&/^```sh/{g=1;next} g&&/^```/{exit} g' README.md | head -n 1)
[[ "$readme_daemon" == *" &" ]] || fail "README has no install-deb-no-systemd block starting the daemon: $readme_daemon"
readme_daemon=${readme_daemon//sudo /}
readme_daemon=${readme_daemon% &}
if [ ! -d /run/systemd/system ]; then
  grep -qF "$readme_daemon" "$work/dpkg-i.log" || fail "the package did not say how to start it without systemd (as the README does): $(cat "$work/dpkg-i.log")"
fi
getent passwd fastsse >/dev/null || fail "no fastsse user"
[ "$(stat -c '%U %a' /var/lib/fastsse)" = "fastsse 750" ] || fail "/var/lib/fastsse: $(stat -c '%U %a' /var/lib/fastsse)"
[ "$(stat -c '%U' /run/fastsse)" = fastsse ] || fail "/run/fastsse is not fastsse's"
if [ ! -d /run/systemd/system ] && [ -n "$(daemons)" ]; then
  fail "a daemon was started where systemd does not run"
fi

# 3. The daemon as the unit starts it, behind Debian's nginx with the package's snippet.
unit=/lib/systemd/system/fastsse.service
key() { sed -n "s/^$1=//p" "$unit" | head -n 1; }
user=$(key User) group=$(key Group) wd=$(key WorkingDirectory)
as_unit() { (cd "$wd" && exec env RUST_LOG=info setpriv --reuid="$user" --regid="$group" --init-groups -- "$@"); }
# shellcheck disable=SC2046
as_unit $(key ExecStartPre) >/dev/null || fail "ExecStartPre ($(key ExecStartPre)) failed"
# The README's line is the unit's user and command.
[[ "$readme_daemon" == "runuser -u $user -- "* ]] || fail "the README starts the daemon as another user than the unit's $user: $readme_daemon"
[ "/usr/bin/${readme_daemon#runuser -u "$user" -- }" = "$(key ExecStart)" ] ||
  fail "the README starts another command than the unit's ExecStart ($(key ExecStart)): $readme_daemon"
(bash -c "$readme_daemon" >>"$work/daemon.log" 2>&1 &)
for _ in $(seq 100); do [ -S /run/fastsse/fastsse.sock ] && break; sleep 0.1; done
[ -S /run/fastsse/fastsse.sock ] || fail "the daemon did not create /run/fastsse/fastsse.sock: $(tail -5 "$work/daemon.log")"
daemon_pid=$(daemons)
[ "$(echo "$daemon_pid" | wc -w)" = 1 ] || fail "not one daemon: $daemon_pid"

cp -a /etc/nginx "$work/nginx"
etc="$work/nginx"
for l in "$etc"/sites-enabled/* "$etc"/modules-enabled/*; do
  [ -L "$l" ] || continue
  t=$(readlink "$l"); ln -sfn "${t/#\/etc\/nginx/$etc}" "$l"
done
# The README's lines, exactly as written, on the copy (its reload is the running system's).
readme_lines=$(awk '/<!-- install-deb/{f=1;next} f&&/^```sh/{g=1;next} g&&/^```/{exit} g' README.md)
[ -n "$readme_lines" ] || fail "README has no install-deb block"
install_line=$(echo "$readme_lines" | grep -E '^sudo apt(-get)? install ')
echo "$install_line" | grep -q "fastsse_${version}-1_amd64.deb" || fail "the README installs another file than $deb: $install_line"
readme_nginx_steps() {
  while IFS= read -r step; do
    case "$step" in
      *"/etc/nginx"*)
        [[ "$step" == *systemctl* ]] && step=${step%%&&*}
        step=${step//sudo /}
        bash -c "${step//\/etc\/nginx/$etc}" >/dev/null || fail "README step failed: $step" ;;
    esac
  done <<<"$readme_lines"
}
readme_nginx_steps
grep -q 'include snippets/fastsse.conf;' "$etc/sites-available/default" || fail "the snippet is not in the default site"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$work/log"
grep -rl . "$etc" | while read -r f; do
  sed -i -e "s#/etc/nginx#$etc#g" -e "s#listen 80 default_server;#listen 127.0.0.1:$port default_server;#" \
    -e "s#listen \[::\]:80 default_server;##" -e "s#/run/nginx.pid#$work/nginx.pid#" \
    -e "s#/var/log/nginx#$work/log#g" "$f"
done
nginx -t -c "$etc/nginx.conf" 2>/dev/null || fail "nginx -t: $(nginx -t -c "$etc/nginx.conf" 2>&1)"
nginx -c "$etc/nginx.conf" -g 'daemon off;' &
nginx_pid=$!
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
url="http://127.0.0.1:$port"
# What a stream sends within 2 s (curl then gives up: its status says nothing).
stream() { curl -sN --max-time 2 "$@" || true; }
stream "$url/clock" | grep -q '^data: ' || fail "no clock event through nginx: $(grep -v setrlimit "$work/log/error.log" | tail -3) / daemon: $(tail -3 "$work/daemon.log")"
id1=$(curl -sf -d 'topic=news&data=before the upgrade' "$url/events") || fail "publish through nginx failed"
stream -H "Last-Event-ID: 0" "$url/events?topic=news" | grep -q '^data: before the upgrade' ||
  fail "no replay through nginx"

# 4. The new version over it, the config edited by the admin.
echo '# edited by the admin' >> /etc/fastsse/fastsse.toml
old_pid=$daemon_pid
(cd dist && ${install_line//sudo /} -qq >/dev/null 2>&1 </dev/null) || fail "$install_line failed"
[ "$(dpkg-query -W -f='${Version}' fastsse)" = "${version}-1" ] || fail "not upgraded"
tail -n 1 /etc/fastsse/fastsse.toml | grep -q 'edited by the admin' || fail "the edited config was replaced"
[ -n "$(ls -A /var/lib/fastsse)" ] || fail "the journal is gone"
new_pid=
for _ in $(seq 100); do
  for p in $(daemons); do
    [ "$p" != "$old_pid" ] && [ "$(readlink "/proc/$p/exe")" = /usr/bin/fastsse ] && new_pid=$p
  done
  [ -n "$new_pid" ] && ! kill -0 "$old_pid" 2>/dev/null && break
  sleep 0.1
done
[ -n "$new_pid" ] || fail "the running daemon did not hand over to the new binary: $(tail -5 "$work/daemon.log")"
kill -0 "$old_pid" 2>/dev/null && fail "the old daemon still runs after the hand-over"
stream -H "Last-Event-ID: 0" "$url/events?topic=news" | grep -q "^id: $id1" ||
  fail "the event published before the upgrade does not replay after it"
stream "$url/clock" | grep -q '^data: ' || fail "no clock after the upgrade"

# The README's lines once more, as a user who is not sure they ran them: nothing changes.
(cd dist && ${install_line//sudo /} -qq >/dev/null 2>&1 </dev/null) || fail "$install_line failed the second time"
readme_nginx_steps
[ "$(grep -c 'include snippets/fastsse.conf;' "$etc/sites-available/default")" = 1 ] ||
  fail "a second run of the README included the snippet twice"
[ "$(daemons)" = "$new_pid" ] || fail "a second run of the README touched the daemon: $(daemons)"
stream "$url/clock" | grep -q '^data: ' || fail "no clock after a second run of the README"

# 5. Remove, then purge.
dpkg -r fastsse >/dev/null </dev/null || fail "dpkg -r failed"
sleep 0.2
[ -n "$(daemons)" ] && fail "dpkg -r left the daemon running: $(daemons)"
[ "$(dpkg-query -W -f='${Status}' fastsse)" = "deinstall ok config-files" ] || fail "status after remove: $(dpkg-query -W -f='${Status}' fastsse)"
[ -e /usr/bin/fastsse ] && fail "/usr/bin/fastsse is still there after dpkg -r"
[ -e /lib/systemd/system/fastsse.service ] && fail "the unit is still there after dpkg -r"
for f in /etc/fastsse/fastsse.toml /etc/nginx/snippets/fastsse.conf; do
  [ -f "$f" ] || fail "the conffile $f went with dpkg -r"
done
[ -d /var/lib/fastsse ] || fail "dpkg -r removed the journal (purge only)"
dpkg --purge fastsse >/dev/null </dev/null || fail "dpkg --purge failed"
for p in /etc/fastsse /etc/nginx/snippets/fastsse.conf /var/lib/fastsse /run/fastsse /usr/share/doc/fastsse; do
  [ -e "$p" ] && fail "$p is still there after dpkg --purge"
done
getent passwd fastsse >/dev/null && fail "the fastsse user is still there after dpkg --purge"
getent group fastsse >/dev/null && fail "the fastsse group is still there after dpkg --purge"
dpkg-query -W -f='${Status}' fastsse 2>/dev/null | grep -qE 'config-files| installed' && fail "dpkg still knows fastsse after purge"
echo "test-deb: ok ($deb: lintian clean of errors; install, daemon through Debian's nginx, upgrade over 0.0.1 with an edited config and a running daemon, the README run twice, remove, purge)"
