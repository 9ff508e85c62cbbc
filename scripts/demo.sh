#!/usr/bin/env bash
# Builds fastsse, starts it and a real nginx (using conf/nginx.conf) on 127.0.0.1:8080, and
# prints the URL of the demo page. Ctrl-C stops both. PORT=9090 scripts/demo.sh picks another port.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
port=${PORT:-8080}

if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx >/dev/null
  else
    echo "demo.sh: nginx is not installed (sudo apt-get install nginx)" >&2
    exit 1
  fi
fi
PATH=$PATH:/usr/sbin

cargo build --release --quiet --bin fastsse
work=$(mktemp -d /tmp/fastsse-demo.XXXXXX)
cleanup() {
  [ -n "${nginx_pid:-}" ] && kill -QUIT "$nginx_pid" 2>/dev/null || true
  [ -n "${fastsse_pid:-}" ] && kill -TERM "$fastsse_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

./target/release/fastsse serve --listen "unix:$work/fastsse.sock" 2>"$work/fastsse.log" &
fastsse_pid=$!
for _ in $(seq 50); do [ -S "$work/fastsse.sock" ] && break; sleep 0.1; done

user=""
[ "$(id -u)" = 0 ] && user="user root;"
mkdir -p "$work/snippets"
sed -e "s|unix:/run/fastsse/fastsse.sock|unix:$work/fastsse.sock|" conf/nginx-fastsse.conf \
    > "$work/snippets/fastsse.conf"
server_block=$(sed -e "s|listen 80;|listen 127.0.0.1:$port;|" \
                   -e "s|server_name example.com;|server_name localhost;\n    location = / { root $root/conf; try_files /demo.html =404; }|" \
                   conf/nginx.conf)
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
              curl -N http://127.0.0.1:$port/ping
  Status:     curl http://127.0.0.1:$port/status
  Logs:       $work/fastsse.log, $work/nginx-error.log

Ctrl-C stops fastsse and nginx.
MSG
wait "$fastsse_pid"
