#!/usr/bin/env bash
# The demo console: builds fastsse, starts it and a real nginx (the shipped conf/nginx.conf and
# snippet) on 127.0.0.1:8080, and serves conf/demo/index.html — the server time, a stock ticker
# run by ONE PHP loop for every tab (Debian's php-cli), topics with publish and replay, a chat, a
# JSON list, and live figures from /status.
#
#   scripts/demo.sh                 # http://127.0.0.1:8080/
#   PORT=9090 scripts/demo.sh       # another port
#   FASTSSE_BIN=target/debug/fastsse scripts/demo.sh   # skip the release build
#
# Ctrl-C stops everything. fastsse itself may be stopped or killed at any time (try it: the
# page keeps retrying and resumes); the demo starts it again.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
port=${PORT:-8080}
PATH=$PATH:/usr/sbin

# Refuse a port someone else is using, before building anything.
if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
  echo "demo.sh: 127.0.0.1:$port is already in use; pick another with PORT=9090 scripts/demo.sh" >&2
  exit 1
fi

need=()
command -v nginx >/dev/null 2>&1 || need+=(nginx)
command -v php >/dev/null 2>&1 || need+=(php-cli)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "demo.sh: installing ${need[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "demo.sh: needs ${need[*]} (sudo apt-get install ${need[*]})" >&2
    exit 1
  fi
fi

bin=${FASTSSE_BIN:-}
if [ -z "$bin" ]; then
  echo "demo.sh: building fastsse (release; the first build takes a few minutes)"
  cargo build --release --bin fastsse
  bin=$root/target/release/fastsse
fi

work=$(mktemp -d /tmp/fastsse-demo.XXXXXX)
chmod 755 "$work"
cleanup() {
  trap - EXIT INT TERM
  [ -n "${supervisor_pid:-}" ] && kill "$supervisor_pid" 2>/dev/null || true
  [ -f "$work/fastsse.pid" ] && kill -TERM "$(cat "$work/fastsse.pid")" 2>/dev/null || true
  [ -n "${nginx_pid:-}" ] && kill -QUIT "$nginx_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

sed "s|DEMO_DIR|$root/conf/demo|" conf/demo/fastsse.toml > "$work/fastsse.toml"
"$bin" check-config "$work/fastsse.toml" --data-dir "$work/data" >/dev/null

# fastsse, started again whenever it stops (a crash, a kill, an upgrade gone wrong).
(
  while true; do
    "$bin" serve --config "$work/fastsse.toml" --data-dir "$work/data" \
      --listen "unix:$work/fastsse.sock" 2>>"$work/fastsse.log" &
    echo $! > "$work/fastsse.pid"
    wait $! || true
    echo "demo.sh: fastsse stopped; starting it again in 1 s" >&2
    sleep 1
  done
) &
supervisor_pid=$!
for _ in $(seq 100); do [ -S "$work/fastsse.sock" ] && break; sleep 0.1; done

user=""
[ "$(id -u)" = 0 ] && user="user root;"
server_block=$(sed -e "s|include snippets/fastsse.conf;|include $work/fastsse-locations.conf;|" \
                   -e "s|listen 80;|listen 127.0.0.1:$port;|" \
                   -e "s|server_name example.com;|server_name localhost;\n    location = / { root $root/conf/demo; try_files /index.html =404; }|" \
                   conf/nginx.conf)
sed -e "s|unix:/run/fastsse/fastsse.sock|unix:$work/fastsse.sock|" \
    -e "s#status|events#status|events|ticker#" conf/nginx-fastsse.conf > "$work/fastsse-locations.conf"
cat > "$work/nginx.conf" <<CONF
$user
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 1024; }
http {
    include /etc/nginx/mime.types;
    access_log $work/nginx-access.log;
    client_body_temp_path $work/body; fastcgi_temp_path $work/fcgi;
    proxy_temp_path $work/proxy; uwsgi_temp_path $work/uwsgi; scgi_temp_path $work/scgi;
$server_block
}
CONF
nginx -c "$work/nginx.conf" -p "$work" -g "daemon off;" &
nginx_pid=$!
sleep 0.5
if ! kill -0 "$nginx_pid" 2>/dev/null; then
  echo "demo.sh: nginx did not start:" >&2
  cat "$work/nginx-error.log" >&2
  exit 1
fi

cat <<MSG
fastsse demo is running.

  Demo page:  http://127.0.0.1:$port/
  Streams:    curl -N http://127.0.0.1:$port/clock
              curl -N http://127.0.0.1:$port/ticker
  Publish:    curl -d 'topic=news&data=hello' http://127.0.0.1:$port/events
  Status:     curl http://127.0.0.1:$port/status
  Restart:    kill \$(cat $work/fastsse.pid)   (the page retries; the demo starts it again)
  Logs:       $work/fastsse.log, $work/nginx-error.log

Ctrl-C stops everything.
MSG
wait "$nginx_pid"
