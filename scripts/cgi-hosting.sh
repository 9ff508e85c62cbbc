#!/usr/bin/env bash
# A shared host's process limit, measured (issue 20): Debian's Apache with the prefork MPM and
# mod_cgi, allowed PROCS (20) concurrent processes — MaxRequestWorkers 20: each child runs one
# CGI request at a time, as CloudLinux's 20 entry processes allow — serves fastsse as
# events.cgi with the shipped .htaccess. CLIENTS (500) EventSource clients (`fastsse bench sse`:
# they honour `retry:` and resume with Last-Event-ID, as browsers do) subscribe, and one
# publisher POSTs RATE (1) events/s for DURATION (60s) through the same Apache. Run once per
# MODES entry:
#   poll   [cgi] hold = "0s": each request answers what is due after its Last-Event-ID and ends
#   hold25 [cgi] hold = "25s": streams end after 25 s
#   held   no hold (today's default): a stream keeps its process while the browser listens
# For each: the bench's figures (delivered, lost, duplicated, out of order, latency from publish
# to receipt, failed attempts and why), the events.cgi processes sampled every 100 ms (most and
# mean), the requests Apache completed by status (a stream that never ends is not among them),
# and the publishes it completed.
#
#   scripts/cgi-hosting.sh                          # 500 clients, 1 event/s, 60 s, all modes
#   CLIENTS=100 DURATION=20s MODES=poll scripts/cgi-hosting.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=${CLIENTS:-500}
RATE=${RATE:-1}
DURATION=${DURATION:-60s}
PROCS=${PROCS:-20}
RETRY=${RETRY:-3s}
MODES=${MODES:-"poll hold25 held"}
OUT=${OUT:-target/cgi-hosting}
command -v apache2 >/dev/null || { echo "cgi-hosting.sh: needs Debian's apache2" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "cgi-hosting.sh: run as root (Apache's children run as www-data)" >&2; exit 1; }
cargo build --release --quiet
bin=$(pwd)/target/release/fastsse
mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

run_mode() {
  local mode=$1 hold
  case $mode in
    poll) hold='hold = "0s"' ;;
    hold25) hold='hold = "25s"' ;;
    held) hold='' ;;
    *) echo "unknown mode $mode" >&2; exit 2 ;;
  esac
  local d; d=$(mktemp -d)
  chmod 755 "$d"
  mkdir -p "$d/htdocs/sse"
  cp "$bin" "$d/htdocs/sse/events.cgi"
  cp conf/htaccess "$d/htdocs/sse/.htaccess"
  cat > "$d/htdocs/sse/events.toml" <<TOML
[stream]
retry = "$RETRY"

[cgi]
$hold

[[route]]
path = "/events"
type = "topics"
TOML
  chown -R www-data:www-data "$d/htdocs/sse"
  local port; port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  cat > "$d/httpd.conf" <<CONF
ServerName localhost
Listen 127.0.0.1:$port
PidFile $d/httpd.pid
DefaultRuntimeDir $d
Mutex file:$d default
ErrorLog $d/error.log
LogFormat "%h %>s %D \"%r\"" timed
CustomLog $d/access.log timed
User www-data
Group www-data
Timeout 60
TypesConfig /dev/null
LoadModule mpm_prefork_module /usr/lib/apache2/modules/mod_mpm_prefork.so
LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so
LoadModule alias_module /usr/lib/apache2/modules/mod_alias.so
LoadModule mime_module /usr/lib/apache2/modules/mod_mime.so
LoadModule env_module /usr/lib/apache2/modules/mod_env.so
LoadModule cgi_module /usr/lib/apache2/modules/mod_cgi.so
# The host's limit: at most $PROCS requests (so CGI processes) at once; more wait in the
# listen backlog.
StartServers $PROCS
MinSpareServers $PROCS
MaxSpareServers $PROCS
ServerLimit $PROCS
MaxRequestWorkers $PROCS
MaxConnectionsPerChild 0
KeepAlive Off
DocumentRoot $d/htdocs
<Directory $d/htdocs>
    AllowOverride All
    Require all granted
</Directory>
CONF
  # Its own process group: at shutdown Apache signals its whole group.
  setsid apache2 -f "$d/httpd.conf" -DFOREGROUND &
  local apache=$!
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
  # The CGI processes, every 100 ms.
  ( while sleep 0.1; do pgrep -c -x events.cgi || true; done ) > "$d/procs" &
  local sampler=$!
  local url="http://127.0.0.1:$port/sse/events.cgi/events?topic=bench"
  echo "== $mode: Apache prefork + mod_cgi, $PROCS processes; $CLIENTS clients; $RATE event/s for $DURATION; [stream] retry = $RETRY${hold:+; [cgi] $hold}"
  "$bin" bench sse --url "$url" --publish-url "$url" -n "$CLIENTS" --ramp 100 --rate "$RATE" \
    --duration "$DURATION" --drain 10s --quiet --report "$OUT/$mode.html" | tee "$OUT/$mode.txt" || true
  kill "$sampler" 2>/dev/null || true
  awk '{ if ($1 > max) max = $1; sum += $1; n++ } END { printf "events.cgi processes (every 100 ms): most %d, mean %.1f\n", max, sum / n }' "$d/procs"
  awk '{ c[$2]++ } END { printf "Apache answers by status:"; for (s in c) printf " %s: %d", s, c[s]; printf "\n" }' "$d/access.log"
  awk '$4 == "\"POST" { if ($2 == 200) ok++; else other++ } END { printf "publishes Apache completed: %d with 200, %d other\n", ok, other }' "$d/access.log"
  kill -TERM "$apache" 2>/dev/null || true
  wait "$apache" 2>/dev/null || true
  pkill -x events.cgi 2>/dev/null || true
  rm -rf "$d"
}

for mode in $MODES; do run_mode "$mode"; done
