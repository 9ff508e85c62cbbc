#!/usr/bin/env bash
# Side-by-side SSE performance: one run, one machine, one nginx build, one bench client
# (`fastsse bench sse`). Rows: nginx + fastsse (unix socket, publish hop included), nginx + the
# floor upstream (the least possible FastCGI SSE backend), nginx + nchan, nginx + php-fpm running
# the classic PHP loop (pm = static sized to the test, and the default pool), Apache + fastsse,
# and (row `cluster`) two fastsse instances sharing topics through Redis behind one nginx
# upstream, where CPU includes both instances and redis-server (redis alone is printed below).
# Prints a table and the ratios fastsse/floor, fastsse/nchan, fastsse/php-fpm. CPU is shown for
# the backend alone and for the whole stack (backend + the web server in front: nginx, or Apache
# for the apache row; nchan is nginx itself), per million deliveries. One HTML report with
# every row side by side (latency, streams and events over time) goes to $OUT/compare.html.
#
#   scripts/compare.sh                       # 1000 subscribers x 20 events/s for 20 s
#   N=5000 RATE=2 DURATION=30s scripts/compare.sh
#   ROWS="fastsse floor" N=5000 scripts/compare.sh
#   SCENARIO=idle N=10000 scripts/compare.sh # memory of 10,000 idle streams per backend
#   SCENARIO=churn N=1000 scripts/compare.sh # 10% of subscribers reconnect each second
#   ROWS="fastsse cluster" N=5000 scripts/compare.sh  # one instance vs two on Redis
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

N=${N:-1000}
RATE=${RATE:-20}
DURATION=${DURATION:-20s}
SCENARIO=${SCENARIO:-load}
ROWS=${ROWS:-"fastsse floor nchan php-static php-default apache"}
OUT=${OUT:-$root/target/compare}
PHP_MAX=${PHP_MAX:-400}          # php-fpm needs a process per stream: cap the static pool
NGINX_WORKERS=${NGINX_WORKERS:-4}
FSYNC=${FSYNC:-batch}              # fastsse journal fsync policy: always, batch, never
FASTSSE_WORKERS=${FASTSSE_WORKERS:-}  # fastsse runtime threads (default: one per core)

packages=(nginx libnginx-mod-nchan php-fpm apache2 redis-server)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "compare.sh: install ${missing[*]}" >&2; exit 1; }
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
PATH=$PATH:/usr/sbin
ulimit -n "$(ulimit -Hn)"
cargo build --release --quiet --bin fastsse
bin=$root/target/release/fastsse
work=$(mktemp -d /tmp/fastsse-compare.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

user=""
[ "$(id -u)" = 0 ] && user="user root;"
phpfpm=$(ls /usr/sbin/php-fpm* | head -1)
# Below the ephemeral range (32768+), which the bench client's own connections use.
port_base=$((10000 + RANDOM % 20000))
p_fastsse=$((port_base)); p_floor=$((port_base + 1)); p_nchan=$((port_base + 2))
p_php_static=$((port_base + 3)); p_php_default=$((port_base + 4)); p_apache=$((port_base + 5))
p_cluster=$((port_base + 6)); p_redis=$((port_base + 7))

# ---- backends ---------------------------------------------------------------------------
cat > "$work/fastsse.toml" <<CONF
[server]
socket_mode = "0666"
max_streams = 20000
max_connections = 20000
[stream]
heartbeat = "15s"
[journal]
dir = "$work/data"
fsync = "${FSYNC:-batch}"
[[route]]
path = "/events"
type = "topics"
subscriber_queue = 4096
CONF
cat > "$work/sse.php" <<'PHP'
<?php
// The classic SSE loop every tutorial shows.
header('Content-Type: text/event-stream');
header('Cache-Control: no-cache');
header('X-Accel-Buffering: no');
$rate = (float)($_GET['rate'] ?? 1);
$seq = 0;
while (true) {
    $seq++;
    $t = (int)(microtime(true) * 1e6);
    echo "id: $seq\ndata: {\"t\":$t}\n\n";
    @ob_flush();
    flush();
    if (connection_aborted()) break;
    usleep((int)(1e6 / $rate));
}
PHP
php_pool() { # name children pm
  cat > "$work/php-$1.conf" <<CONF
[global]
pid = $work/php-$1.pid
error_log = $work/php-$1.log
[$1]
user = www-data
group = www-data
listen = $work/php-$1.sock
listen.mode = 0666
pm = $3
pm.max_children = $2
pm.start_servers = 2
pm.min_spare_servers = 1
pm.max_spare_servers = 3
CONF
  [ "$3" = static ] && sed -i '/spare_servers\|start_servers/d' "$work/php-$1.conf"
  "$phpfpm" -F -y "$work/php-$1.conf" -R >/dev/null 2>&1 &
  echo $!
}

fcgi_loc() { # path upstream
  cat <<LOC
        location $1 {
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME $work/sse.php;
            fastcgi_pass $2;
            fastcgi_buffering off;
            fastcgi_read_timeout 120s;
        }
LOC
}
cat > "$work/nginx.conf" <<CONF
$user
load_module /usr/lib/nginx/modules/ngx_nchan_module.so;
worker_processes $NGINX_WORKERS;
worker_rlimit_nofile 20000;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 20000; }
http {
    access_log off;
    client_body_temp_path $work/b; fastcgi_temp_path $work/f; proxy_temp_path $work/p;
    uwsgi_temp_path $work/u; scgi_temp_path $work/s;
    server { listen 127.0.0.1:$p_fastsse;
$(fcgi_loc /events unix:$work/fastsse.sock)
    }
    server { listen 127.0.0.1:$p_floor;
$(fcgi_loc /events unix:$work/floor.sock)
    }
    server { listen 127.0.0.1:$p_nchan;
        location = /sub { nchan_subscriber eventsource; nchan_channel_id bench; }
        location = /pub { nchan_publisher; nchan_channel_id bench; nchan_message_buffer_length 1000; }
    }
    server { listen 127.0.0.1:$p_php_static;
$(fcgi_loc /sse.php unix:$work/php-static.sock)
    }
    server { listen 127.0.0.1:$p_php_default;
$(fcgi_loc /sse.php unix:$work/php-default.sock)
    }
    upstream fastsse_cluster { server unix:$work/c1.sock; server unix:$work/c2.sock; }
    server { listen 127.0.0.1:$p_cluster;
$(fcgi_loc /events fastsse_cluster)
    }
}
CONF
nginx -c "$work/nginx.conf" -p "$work" -g "daemon off;" &
pids+=($!)
sleep 0.5
kill -0 "${pids[-1]}" 2>/dev/null || { echo "compare.sh: nginx did not start" >&2; cat "$work/nginx-error.log" >&2; exit 1; }

# ---- measurement helpers ------------------------------------------------------------------
descendants() { # pid -> pid and all its descendants
  local p=$1
  echo "$p"
  for c in $(cat /proc/"$p"/task/*/children 2>/dev/null); do descendants "$c"; done
}
mem_kb() { # pids... -> "rss_kb pss_kb"
  local rss=0 pss=0
  for p in "$@"; do
    [ -r /proc/$p/smaps_rollup ] || continue
    r=$(awk '/^Rss:/{print $2}' /proc/$p/smaps_rollup); s=$(awk '/^Pss:/{print $2}' /proc/$p/smaps_rollup)
    rss=$((rss + ${r:-0})); pss=$((pss + ${s:-0}))
  done
  echo "$rss $pss"
}
cpu_ticks() { # pids... -> utime+stime (+children) in clock ticks
  local t=0
  for p in "$@"; do
    [ -r /proc/$p/stat ] || continue
    v=$(sed 's/.*) //' /proc/$p/stat | awk '{print $12+$13+$14+$15}')
    t=$((t + v))
  done
  echo $t
}
hz=$(getconf CLK_TCK)

results=()
run_row() { # name backend_root_pid url publish_url [web_server_root_pid, "-" for none]
  local name=$1 bpid=$2 url=$3 pub=${4:-} web=${5:-$(cat "$work/nginx.pid")}
  [ "$web" = - ] && web=""
  local extra=()
  [ -n "$pub" ] && extra+=(--publish-url "$pub")
  [ "$SCENARIO" = churn ] && extra+=(--churn 10)
  local dur=$DURATION
  [ "$SCENARIO" = idle ] && { extra=(); dur=10s; }
  local n=$N
  [ "$name" = php-static ] && [ "$N" -gt "$PHP_MAX" ] && n=$PHP_MAX
  local before; before=$(cpu_ticks $(descendants "$bpid"))
  local wbefore=0; [ -n "$web" ] && wbefore=$(cpu_ticks $(descendants "$web"))
  "$bin" bench sse --url "$url" -n "$n" --rate "$RATE" --duration "$dur" --ramp 2000 --json --quiet "${extra[@]}" \
      > "$work/$name.json" 2> "$work/$name.err" &
  local bench=$!
  # Memory at the plateau: after the ramp, halfway through the run.
  sleep $(( ${dur%s} / 2 + n / 2000 + 1 ))
  read -r rss pss <<< "$(mem_kb $(descendants "$bpid"))"
  local procs; procs=$(descendants "$bpid" | wc -l)
  wait "$bench" || true
  local after; after=$(cpu_ticks $(descendants "$bpid"))
  local wafter=0; [ -n "$web" ] && wafter=$(cpu_ticks $(descendants "$web"))
  python3 - "$name" "$work/$name.json" "$rss" "$pss" "$procs" "$(( after - before ))" "$hz" "$n" "$(( wafter - wbefore ))" <<'PY' >> "$work/rows.tsv"
import json, sys
name, path, rss, pss, procs, ticks, hz, n, wticks = sys.argv[1:]
try:
    r = json.load(open(path))
except Exception as e:
    print(f"{name}\tERROR\t{e}"); sys.exit()
streams = r["connections_established"] - r["reconnects"]
recv = r["events_received"]; exp = r["events_expected"]
lat = r["latency_ms"]
cpu = int(ticks) / int(hz)
per_m = cpu / (recv / 1e6) if recv else 0
stack = cpu + int(wticks) / int(hz)
stack_m = stack / (recv / 1e6) if recv else 0
print("\t".join(str(x) for x in [name, f"{streams}/{n}", r["reconnects"], f"{recv}/{exp if exp else '-'}", r["events_lost"],
      f'{lat["p50"]:.1f}', f'{lat["p99"]:.1f}', f'{lat["max"]:.1f}', procs,
      f"{int(rss)/1024:.1f}", f"{int(pss)/1024:.1f}", f"{int(pss)/max(streams,1):.1f}", f"{cpu:.2f}", f"{per_m:.1f}",
      f"{stack:.2f}", f"{stack_m:.1f}"]))
PY
}

for row in $ROWS; do
  case $row in
    fastsse)
      env ${FASTSSE_WORKERS:+TOKIO_WORKER_THREADS=$FASTSSE_WORKERS} "$bin" serve --config "$work/fastsse.toml" --listen "unix:$work/fastsse.sock" 2>"$work/fastsse.log" &
      pid=$!; pids+=($pid); sleep 0.5
      run_row fastsse $pid "http://127.0.0.1:$p_fastsse/events?topic=bench" "http://127.0.0.1:$p_fastsse/events?topic=bench"
      kill -TERM $pid; wait $pid 2>/dev/null || true ;;
    floor)
      "$bin" bench floor --listen "unix:$work/floor.sock" --rate "$RATE" 2>"$work/floor.log" &
      pid=$!; pids+=($pid); sleep 0.5
      run_row floor $pid "http://127.0.0.1:$p_floor/events"
      kill -TERM $pid; wait $pid 2>/dev/null || true ;;
    nchan)
      # nchan is nginx: its CPU is the whole stack's.
      run_row nchan "$(cat "$work/nginx.pid")" "http://127.0.0.1:$p_nchan/sub" "http://127.0.0.1:$p_nchan/pub" - ;;
    php-static)
      n=$N; [ "$N" -gt "$PHP_MAX" ] && n=$PHP_MAX
      pid=$(php_pool static "$n" static); pids+=($pid); sleep 2
      run_row php-static $pid "http://127.0.0.1:$p_php_static/sse.php?rate=$RATE"
      kill -TERM $pid; wait $pid 2>/dev/null || true ;;
    php-default)
      pid=$(php_pool default 5 dynamic); pids+=($pid); sleep 1
      run_row php-default $pid "http://127.0.0.1:$p_php_default/sse.php?rate=$RATE"
      kill -TERM $pid; wait $pid 2>/dev/null || true ;;
    apache)
      "$bin" serve --config "$work/fastsse.toml" --listen "unix:$work/fastsse.sock" 2>"$work/fastsse-apache.log" &
      pid=$!; pids+=($pid); sleep 0.5
      mkdir -p "$work/apache"
      cat > "$work/apache/httpd.conf" <<CONF
ServerName localhost
Listen 127.0.0.1:$p_apache
PidFile $work/apache/httpd.pid
DefaultRuntimeDir $work/apache
Mutex file:$work/apache default
ErrorLog $work/apache/error.log
User www-data
Group www-data
LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so
LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so
LoadModule setenvif_module /usr/lib/apache2/modules/mod_setenvif.so
LoadModule proxy_module /usr/lib/apache2/modules/mod_proxy.so
LoadModule proxy_fcgi_module /usr/lib/apache2/modules/mod_proxy_fcgi.so
ServerLimit 40
ThreadsPerChild 250
MaxRequestWorkers 10000
$(sed "s|/run/fastsse/fastsse.sock|$work/fastsse.sock|" conf/apache-proxy-fcgi.conf)
CONF
      setsid apache2 -f "$work/apache/httpd.conf" -DFOREGROUND &
      apid=$!; pids+=($apid); sleep 1
      run_row apache $pid "http://127.0.0.1:$p_apache/events?topic=bench" "http://127.0.0.1:$p_apache/events?topic=bench" "$apid"
      kill -TERM $apid $pid; wait $apid $pid 2>/dev/null || true ;;
    cluster)
      mkdir -p "$work/redis"
      sed -e '/^\[journal\]/a backend = "redis"\nurl = "redis://127.0.0.1:'"$p_redis"'/0"' "$work/fastsse.toml" > "$work/cluster.toml"
      # One parent, so that the row's CPU and memory cover redis and both instances.
      setsid bash -c "redis-server --port $p_redis --bind 127.0.0.1 --dir $work/redis --appendonly yes --save '' >$work/redis.log 2>&1 &
        sleep 0.5
        '$bin' serve --config $work/cluster.toml --listen unix:$work/c1.sock 2>$work/c1.log &
        '$bin' serve --config $work/cluster.toml --listen unix:$work/c2.sock 2>$work/c2.log &
        wait" &
      pid=$!; pids+=($pid); sleep 1.5
      rpid=$(pgrep -f "redis-server 127.0.0.1:$p_redis" | head -1)
      rbefore=$(cpu_ticks $rpid)
      run_row cluster $pid "http://127.0.0.1:$p_cluster/events?topic=bench" "http://127.0.0.1:$p_cluster/events?topic=bench"
      rafter=$(cpu_ticks $rpid)
      echo "cluster: redis-server alone used $(python3 -c "print(f'{($rafter - $rbefore) / $hz:.2f}')") CPU s" >> "$work/notes"
      pkill -TERM -P $pid 2>/dev/null || true; kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null || true ;;
  esac
done

echo
echo "fastsse compare: scenario=$SCENARIO N=$N rate=${RATE}/s duration=$DURATION nginx workers=$NGINX_WORKERS fastsse fsync=$FSYNC, $(nproc) cores, $(date -u +%Y-%m-%d)"
{
  printf "row\tstreams\treconnects\tdelivered/expected\tlost\tp50ms\tp99ms\tmaxms\tprocs\tRSS_MB\tPSS_MB\tPSS_KB/stream\tCPU_s\tCPU_s/M\tstack_CPU_s\tstack_CPU_s/M\n"
  cat "$work/rows.tsv"
} | column -t -s $'\t'
[ -f "$work/notes" ] && cat "$work/notes"
python3 - "$work/rows.tsv" <<'PY'
import sys
rows = {}
for line in open(sys.argv[1]):
    f = line.rstrip("\n").split("\t")
    if len(f) > 6 and f[1] != "ERROR":
        rows[f[0]] = f
def ratio(a, b, col, label):
    if a in rows and b in rows:
        x, y = float(rows[a][col]), float(rows[b][col])
        if y > 0:
            print(f"{a}/{b} {label}: {x / y:.2f}")
print()
for other in ("floor", "nchan", "php-static"):
    ratio("fastsse", other, 6, "p99")
ratio("cluster", "fastsse", 6, "p99")
ratio("cluster", "fastsse", 13, "CPU per delivery")
for other in ("nchan", "php-static"):
    ratio("fastsse", other, 10, "PSS")
for other in ("floor", "nchan", "php-static"):
    ratio("fastsse", other, 15, "whole-stack CPU per delivery")
PY
mkdir -p "$OUT"
runs=()
for row in $ROWS; do [ -s "$work/$row.json" ] && runs+=("$row=$work/$row.json"); done
if [ ${#runs[@]} -gt 0 ]; then
  "$bin" bench report -o "$OUT/compare.html" --svg-dir "$OUT" \
    --title "fastsse compare: $SCENARIO, N=$N, ${RATE}/s, $(nproc) cores" "${runs[@]}"
  cp "$work"/*.json "$OUT/" 2>/dev/null || true
  echo "report: $OUT/compare.html (charts: $OUT/latency.svg connected.svg events.svg)"
fi
