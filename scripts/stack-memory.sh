#!/usr/bin/env bash
# Whole-stack memory of idle SSE streams with the nginx files fastsse ships, beside nchan, in
# one run. Each row starts its own nginx (and fastsse), opens N idle EventSource streams with
# `fastsse bench sse` (no publisher), and takes the growth of the proportional set size (PSS)
# of nginx's processes and of fastsse's from before the streams to N streams open: bytes per
# stream of nginx, of the backend, and of the whole stack. The bench client is not counted.
#
# Rows:
#   shipped  conf/nginx.conf (the server block around conf/nginx-fastsse.conf) in Debian's
#            http defaults, worker_connections raised as the README says, 2 workers
#   50k      conf/nginx-50k.conf as shipped (8 workers, reuseport), fastsse with processes = 4
#   nchan    the same nginx as `shipped` with nchan (Debian's libnginx-mod-nchan) instead of
#            fastsse: one channel, N EventSource subscribers
#
#   scripts/stack-memory.sh
#   N=5000 ROWS="shipped nchan" scripts/stack-memory.sh
#   EXTRA="fastcgi_buffer_size 2k;" ROWS=shipped scripts/stack-memory.sh  # try a setting
#   BROWSER=1 scripts/stack-memory.sh     # with a browser's request headers
#   BIN=dist/fastsse-VERSION-x86_64-linux-musl/fastsse scripts/stack-memory.sh
#                                         # the released static binary (musl's malloc) instead
#                                         # of this tree's glibc build
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
N=${N:-10000}
ROWS=${ROWS:-"shipped 50k nchan"}
EXTRA=${EXTRA:-}                     # directives added to the shipped rows' server block
# BROWSER=1: each stream's request carries the headers a Chromium EventSource sends on a page
# of the same site (no cookies): ~600 bytes instead of the bench's ~100. nginx keeps a
# request's headers for the stream's life, in its 1 KB header buffer or, past it, an 8 KB one.
BROWSER=${BROWSER:-}
browser=()
if [ -n "$BROWSER" ]; then
  browser=(-H 'User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36'
    -H 'sec-ch-ua: "Not_A Brand";v="8", "Chromium";v="120"' -H 'sec-ch-ua-mobile: ?0'
    -H 'sec-ch-ua-platform: "Linux"' -H 'Sec-Fetch-Site: same-origin' -H 'Sec-Fetch-Mode: cors'
    -H 'Sec-Fetch-Dest: empty' -H 'Referer: http://127.0.0.1/app/dashboard'
    -H 'Accept-Encoding: gzip, deflate, br, zstd' -H 'Accept-Language: en-US,en;q=0.9')
fi
PATH=$PATH:/usr/sbin
for p in nginx libnginx-mod-nchan; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" && continue
  [ "$(id -u)" = 0 ] || { echo "stack-memory.sh: install $p" >&2; exit 1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$p" >/dev/null
done
ulimit -n "$(ulimit -Hn)"
if [ -n "${BIN:-}" ]; then
  bin=$(realpath "$BIN")
else
  cargo build --release --quiet --bin fastsse
  bin=$root/target/release/fastsse
fi
work=$(mktemp -d /tmp/fastsse-mem.XXXXXX)
chmod 755 "$work"
pids=()
stop_all() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  pids=()
}
trap 'stop_all; rm -rf "$work"' EXIT INT TERM
user=""
[ "$(id -u)" = 0 ] && user="user root;"

descendants() { # pid -> pid and all its descendants
  echo "$1"
  for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do descendants "$c"; done
}
pss_kb() { # pids... -> summed Pss in kB
  local t=0
  for p in "$@"; do
    v=$(awk '/^Pss:/{print $2}' /proc/"$p"/smaps_rollup 2>/dev/null || true)
    t=$((t + ${v:-0}))
  done
  echo "$t"
}

start_fastsse() { # processes -> the socket
  local dir=$work/fastsse-$1
  mkdir -p "$dir"
  cat > "$dir/fastsse.toml" <<CONF
[server]
listen = ["unix:$dir/fastsse.sock"]
socket_mode = "0666"
processes = $1
max_streams = $(( N + 100 ))
max_connections = $(( N + 200 ))
[journal]
dir = "$dir/data"
[[route]]
path = "/events"
type = "topics"
CONF
  "$bin" serve --config "$dir/fastsse.toml" 2> "$dir/fastsse.log" &
  pids+=($!)
  fastsse_pid=$!
  for _ in $(seq 100); do [ -S "$dir/fastsse.sock" ] && break; sleep 0.1; done
  sed "s#unix:/run/fastsse/fastsse.sock#unix:$dir/fastsse.sock#" conf/nginx-fastsse.conf > "$work/snippet.conf"
}

start_nginx() { # config file
  nginx -c "$1" -p "$work" -g "daemon off; pid $work/nginx.pid;" 2> "$work/nginx.err" &
  pids+=($!)
  nginx_pid=$!
  sleep 0.7
  kill -0 "$nginx_pid" 2>/dev/null || { cat "$work/nginx.err" >&2; exit 1; }
}

# Debian's /etc/nginx/nginx.conf http defaults around a server block, with room for N streams.
debian_main() { # server-block-file
  cat <<CONF
$user
worker_processes 2;
worker_rlimit_nofile $(( 2 * N + 1000 ));
error_log $work/error.log warn;
events { worker_connections $(( 2 * N + 500 )); }
http {
    sendfile on;
    tcp_nopush on;
    types_hash_max_size 2048;
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    ssl_protocols TLSv1 TLSv1.1 TLSv1.2 TLSv1.3;
    ssl_prefer_server_ciphers on;
    access_log off;
    gzip on;
    client_body_temp_path $work/b; fastcgi_temp_path $work/f; proxy_temp_path $work/p;
    uwsgi_temp_path $work/u; scgi_temp_path $work/s;
$(cat "$1")
}
CONF
}

# One row: N idle streams on url; the growth of nginx (and the backend, when given).
measure() { # name url backend_pid(or -)
  local name=$1 url=$2 backend=$3
  sleep 1
  local nb bb=0
  nb=$(pss_kb $(descendants "$nginx_pid"))
  [ "$backend" != - ] && bb=$(pss_kb $(descendants "$backend"))
  "$bin" bench sse --url "$url" "${browser[@]}" -n "$N" --duration 30s --ramp 2000 --drain 0s --json --quiet \
      > "$work/$name.json" 2> "$work/$name.err" &
  local bench=$!
  # The plateau: every stream open (the ramp), then a few seconds idle.
  sleep $(( N / 2000 + 8 ))
  local na ba=0 open port=${url#http://127.0.0.1:}
  port=${port%%/*}
  open=$(ss -Htn state established "( dport = :$port )" 2>/dev/null | wc -l)
  na=$(pss_kb $(descendants "$nginx_pid"))
  [ "$backend" != - ] && ba=$(pss_kb $(descendants "$backend"))
  kill "$bench" 2>/dev/null || true
  wait "$bench" 2>/dev/null || true
  python3 - "$name" "$nb" "$na" "$bb" "$ba" "$open" <<'PY'
import sys
name, nb, na, bb, ba, n = sys.argv[1:]
n = max(int(n), 1)
web = (int(na) - int(nb)) * 1024 / n
back = (int(ba) - int(bb)) * 1024 / n
print(f"{name:<8} {n:>7} {web/1024:>10.1f} {back/1024:>12.1f} {(web+back)/1024:>10.1f}")
PY
}

echo "stack-memory: $N idle streams per row; KB per stream, growth of PSS from no streams to $N"
printf "%-8s %7s %10s %12s %10s\n" row open nginx backend stack
for row in $ROWS; do
  port=$((10000 + RANDOM % 20000))
  case $row in
    shipped)
      start_fastsse 1
      sed -e "s/listen 80;/listen 127.0.0.1:$port; $EXTRA/" -e "s#include snippets/fastsse.conf;#include $work/snippet.conf;#" \
          conf/nginx.conf > "$work/server.conf"
      debian_main "$work/server.conf" > "$work/nginx-shipped.conf"
      start_nginx "$work/nginx-shipped.conf"
      measure shipped "http://127.0.0.1:$port/events?topic=idle" "$fastsse_pid"
      ;;
    50k)
      start_fastsse 4
      sed -e "s/listen 80 reuseport/listen 127.0.0.1:$port reuseport/" \
          -e "s#include snippets/fastsse.conf;#include $work/snippet.conf;#" \
          -e "s#^\(\s*\)access_log off;#\1access_log off; client_body_temp_path $work/b; fastcgi_temp_path $work/f; proxy_temp_path $work/p; uwsgi_temp_path $work/u; scgi_temp_path $work/s;#" \
          conf/nginx-50k.conf > "$work/nginx-50k.conf"
      sed -i "1i $user error_log $work/error.log warn;" "$work/nginx-50k.conf"
      start_nginx "$work/nginx-50k.conf"
      measure 50k "http://127.0.0.1:$port/events?topic=idle" "$fastsse_pid"
      ;;
    nchan)
      cat > "$work/server.conf" <<CONF
    server {
        listen 127.0.0.1:$port;
        location = /sub { nchan_subscriber eventsource; nchan_channel_id idle; }
    }
CONF
      { echo "load_module /usr/lib/nginx/modules/ngx_nchan_module.so;"; debian_main "$work/server.conf"; } > "$work/nginx-nchan.conf"
      start_nginx "$work/nginx-nchan.conf"
      measure nchan "http://127.0.0.1:$port/sub" -
      ;;
    *) echo "stack-memory.sh: unknown row $row" >&2; exit 1 ;;
  esac
  stop_all
  sleep 1
done
