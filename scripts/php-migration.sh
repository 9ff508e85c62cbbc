#!/usr/bin/env bash
# What moving a PHP SSE endpoint to fastsse saves, measured: N browsers (fastsse bench sse) on
# the classic PHP loop that runs a "query" every second (reads a data file and logs the query),
#   php-fpm      the loop under php-fpm behind nginx: one worker per browser (pm = static, N)
#   per-stream   the same file as a fastsse `command` route, mode = "per-stream" (php-cli)
#   shared       the same file as a fastsse `command` route, mode = "shared": one loop for all
# and prints processes, RSS and PSS (MB), events received, and queries per second.
#
#   N=1000 DURATION=10 scripts/php-migration.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
N=${N:-1000}
DURATION=${DURATION:-10}
PATH=$PATH:/usr/sbin
ulimit -n "$(ulimit -Hn)"
for p in nginx php-fpm php-cli; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || {
    [ "$(id -u)" = 0 ] || { echo "php-migration.sh: install nginx php-fpm php-cli" >&2; exit 1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$p" >/dev/null
  }
done
cargo build --release --quiet --bin fastsse
bin=$root/target/release/fastsse
work=$(mktemp -d /tmp/fastsse-php.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  sleep 1
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT INT TERM
seq 1 1000 > "$work/rows.txt"
cat > "$work/loop.php" <<'PHP'
<?php
// The loop every SSE tutorial shows, with the query it usually runs once a second.
header('Content-Type: text/event-stream');
header('Cache-Control: no-cache');
header('X-Accel-Buffering: no');
while (true) {
    $rows = file(__DIR__ . '/rows.txt');                       // the "query"
    file_put_contents(__DIR__ . '/queries.log', "q\n", FILE_APPEND | LOCK_EX);
    echo 'data: ' . json_encode(['rows' => count($rows), 't' => (int)(microtime(true) * 1e6)]) . "\n\n";
    @ob_flush();
    flush();
    if (connection_aborted()) break;
    sleep(1);
}
PHP
chmod 644 "$work"/*
port=$((20000 + RANDOM % 10000))
phpfpm=$(ls /usr/sbin/php-fpm* | head -1)
user=""; [ "$(id -u)" = 0 ] && user="user root;"
cat > "$work/php.conf" <<CONF
[global]
pid = $work/php.pid
error_log = $work/php.log
[sse]
user = www-data
group = www-data
listen = $work/php.sock
listen.mode = 0666
pm = static
pm.max_children = $N
CONF
cat > "$work/fastsse.toml" <<CONF
[server]
max_streams = 20000
max_connections = 20000
[[route]]
path = "/shared"
type = "command"
command = ["php", "$work/loop.php"]
[[route]]
path = "/per-stream"
type = "command"
mode = "per-stream"
command = ["php", "$work/loop.php"]
max_processes = $((N + 10))
CONF
cat > "$work/nginx.conf" <<CONF
$user
worker_processes 2;
worker_rlimit_nofile 20000;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 12000; }
http {
    access_log off;
    client_body_temp_path $work/b; fastcgi_temp_path $work/f; proxy_temp_path $work/p;
    uwsgi_temp_path $work/u; scgi_temp_path $work/s;
    server {
        listen 127.0.0.1:$port;
        location = /loop.php {
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME $work/loop.php;
            fastcgi_pass unix:$work/php.sock;
            fastcgi_buffering off;
            fastcgi_read_timeout 120s;
        }
        location ~ ^/(shared|per-stream)$ {
            include /etc/nginx/fastcgi_params;
            fastcgi_pass unix:$work/fastsse.sock;
            fastcgi_buffering off;
            fastcgi_read_timeout 120s;
        }
    }
}
CONF
nginx -c "$work/nginx.conf" -p "$work" -g "daemon off;" & pids+=($!)
"$bin" serve --config "$work/fastsse.toml" --listen "unix:$work/fastsse.sock" 2>"$work/fastsse.log" & fpid=$!; pids+=($fpid)
sleep 1

descendants() { local p=$1; echo "$p"; for c in $(cat /proc/"$p"/task/*/children 2>/dev/null); do descendants "$c"; done; }
mem() { local rss=0 pss=0; for p in "$@"; do [ -r /proc/$p/smaps_rollup ] || continue
  r=$(awk '/^Rss:/{print $2}' /proc/$p/smaps_rollup); s=$(awk '/^Pss:/{print $2}' /proc/$p/smaps_rollup)
  rss=$((rss + ${r:-0})); pss=$((pss + ${s:-0})); done; echo "$rss $pss"; }

row() { # name url root_pid
  : > "$work/queries.log"; chmod 666 "$work/queries.log"
  "$bin" bench sse --url "$2" -n "$N" --duration "${DURATION}s" --drain 0s --ramp 500 --json --quiet \
    > "$work/$1.json" 2>/dev/null &
  local b=$!
  sleep $(( N / 250 + DURATION / 2 + 1 ))
  local q0; q0=$(wc -l < "$work/queries.log"); local t0; t0=$(date +%s.%N)
  local procs; procs=$(descendants "$3" | wc -l)
  read -r rss pss <<< "$(mem $(descendants "$3"))"
  sleep 3
  local q1; q1=$(wc -l < "$work/queries.log"); local t1; t1=$(date +%s.%N)
  wait "$b" || true
  python3 - "$1" "$work/$1.json" "$procs" "$rss" "$pss" "$q0" "$q1" "$t0" "$t1" <<'PY' >> "$work/rows.tsv"
import json, sys
name, path, procs, rss, pss, q0, q1, t0, t1 = sys.argv[1:]
r = json.load(open(path))
qps = (int(q1) - int(q0)) / (float(t1) - float(t0))
print(f"{name}\t{r['connections_established'] - r['reconnects']}\t{procs}\t{int(rss)/1024:.0f}\t{int(pss)/1024:.0f}\t{r['events_received']}\t{qps:.0f}")
PY
}

"$phpfpm" -F -y "$work/php.conf" -R >/dev/null 2>&1 & ppid=$!; pids+=($ppid); sleep 3
row php-fpm "http://127.0.0.1:$port/loop.php" "$ppid"
kill -TERM "$ppid"; wait "$ppid" 2>/dev/null || true
row per-stream "http://127.0.0.1:$port/per-stream" "$fpid"
sleep 3
row shared "http://127.0.0.1:$port/shared" "$fpid"

echo
echo "php-migration: N=$N browsers, ${DURATION}s each, $(nproc) cores, $(date -u +%Y-%m-%d); processes and memory include the backend's children"
{ printf "backend\tstreams\tprocesses\tRSS_MB\tPSS_MB\tevents\tqueries/s\n"; cat "$work/rows.tsv"; } | column -t -s $'\t'
