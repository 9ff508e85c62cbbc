#!/usr/bin/env bash
# 50,000 streams x 1 event/s through nginx + fastsse on this box: fastsse with
# `[server] processes = 4`, nginx with conf/nginx-50k.conf, the bench spread over 4 processes
# and 4 source addresses (each address gives ~28,000 ports towards one server port). Prints the
# report, the memory of fastsse and nginx per stream, and the CPU of each part; writes
# report.json, report.html, the charts as SVG files and the servers' logs (fastsse.log,
# nginx-error.log) into $OUT (target/bench-50k).
#
# UPSTREAM=floor puts `fastsse bench floor` (the least possible FastCGI SSE upstream: one
# pre-encoded record written to every connection per tick, nothing else) in fastsse's place, in
# as many processes, behind the same nginx: what is left of the latency then is nginx's relay
# and the box. It publishes on its own ticks, so that run judges latency only. UPSTREAM=nchan runs
# the same nginx with Debian's nchan module instead of an upstream (published to as fastsse is,
# judged the same way): the peer users compare with.
#
#   scripts/bench-50k.sh
#   N=20000 DURATION=30s scripts/bench-50k.sh
#   UPSTREAM=floor scripts/bench-50k.sh
#   UPSTREAM=nchan scripts/bench-50k.sh
#   SERVER_BIN=dist/fastsse-VERSION-x86_64-linux-musl/fastsse scripts/bench-50k.sh
#                                 # serve with the released static binary (musl) instead of this
#                                 # tree's glibc build; the bench client stays this tree's
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
N=${N:-50000}
RATE=${RATE:-1}
DURATION=${DURATION:-60s}
PROCESSES=${PROCESSES:-4}            # fastsse worker processes
BENCH_PROCESSES=${BENCH_PROCESSES:-4}
RAMP=${RAMP:-2500}                   # new streams per second
OUT=${OUT:-$root/target/bench-50k}
UPSTREAM=${UPSTREAM:-fastsse}        # or floor
case "$UPSTREAM" in fastsse|floor|nchan) ;; *) echo "bench-50k.sh: UPSTREAM is fastsse, floor or nchan" >&2; exit 1 ;; esac
nchan_module=/usr/lib/nginx/modules/ngx_nchan_module.so
[ "$UPSTREAM" != nchan ] || [ -f "$nchan_module" ] || { echo "bench-50k.sh: install libnginx-mod-nchan" >&2; exit 1; }
PATH=$PATH:/usr/sbin
command -v nginx >/dev/null || { echo "bench-50k.sh: install nginx" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -ge 16000 ] || { echo "bench-50k.sh: ulimit -n is $(ulimit -n); 16,000 or more is needed" >&2; exit 1; }
cargo build --release --quiet --bin fastsse
bin=$root/target/release/fastsse
server_bin=$bin
[ -z "${SERVER_BIN:-}" ] || server_bin=$(realpath "$SERVER_BIN")
mkdir -p "$OUT"
work=$(mktemp -d /tmp/fastsse-50k.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  sleep 1
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  # The servers' logs stay with the report (a run that lost something is read from them).
  cp "$work/fastsse.log" "$work/nginx-error.log" "$OUT/" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

per=$(( N / PROCESSES + N / PROCESSES / 4 + 100 ))
cat > "$work/fastsse.toml" <<CONF
[server]
listen = ["unix:$work/fastsse.sock"]
socket_mode = "0666"
processes = $PROCESSES
max_streams = $per
max_connections = $(( per + 100 ))

[journal]
dir = "$work/data"

[[route]]
path = "/events"
type = "topics"
CONF
sup=
case "$UPSTREAM" in
  # The floor starts writing when the ramp is over, as the bench starts publishing then.
  floor) "$bin" bench floor --listen "unix:$work/fastsse.sock" --rate "$RATE" --processes "$PROCESSES" \
           --delay "$(( N / RAMP + 2 ))s" 2> "$work/fastsse.log" & sup=$! ;;
  fastsse) "$server_bin" serve --config "$work/fastsse.toml" 2> "$work/fastsse.log" & sup=$! ;;
esac
if [ -n "$sup" ]; then
  pids+=("$sup")
  for _ in $(seq 100); do [ -S "$work/fastsse.sock" ] && break; sleep 0.1; done
  chmod 666 "$work/fastsse.sock"
fi

port=$((10000 + RANDOM % 20000))
snippet=$(sed "s#unix:/run/fastsse/fastsse.sock#unix:$work/fastsse.sock#" conf/nginx-fastsse.conf)
# nchan: the same server block with nchan's locations in place of the snippet (a channel that
# keeps the last 100 messages, as fastsse keeps its history for Last-Event-ID).
[ "$UPSTREAM" = nchan ] && snippet="location = /events { nchan_subscriber eventsource; nchan_channel_id fifty; }
        location = /pub { nchan_publisher; nchan_channel_id fifty; nchan_message_buffer_length 100; }"
user=""
[ "$(id -u)" = 0 ] && user="user root;"
{
  echo "$user"
  [ "$UPSTREAM" = nchan ] && echo "load_module $nchan_module;"
  echo "pid $work/nginx.pid; error_log $work/nginx-error.log warn;"
  awk -v snippet="$snippet" -v port="$port" -v w="$work" '
    /include snippets\/fastsse.conf;/ { print snippet; next }
    /listen 80 reuseport/ { sub(/listen 80/, "listen 127.0.0.1:" port) }
    /access_log off;/ { print; print "    client_body_temp_path " w "/cb; fastcgi_temp_path " w "/ft; proxy_temp_path " w "/pt; uwsgi_temp_path " w "/ut; scgi_temp_path " w "/st;"; next }
    { print }' conf/nginx-50k.conf
} > "$work/nginx.conf"
nginx -c "$work/nginx.conf" -p "$work" -g "daemon off;" &
ngx=$!
pids+=("$ngx")
for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done

kids() { ps -o pid= --ppid "$1" | tr -d ' '; }
sum_kb() { # field pids... -> sum of a /proc/PID/smaps_rollup field in kB
  local f=$1; shift; local t=0
  for p in "$@"; do t=$(( t + $(awk -v f="$f:" '$1==f{print $2}' /proc/$p/smaps_rollup 2>/dev/null || echo 0) )); done
  echo $t
}
ticks() { local t=0; for p in "$@"; do t=$(( t + $(awk '{print $14+$15}' /proc/$p/stat 2>/dev/null || echo 0) )); done; echo $t; }
hz=$(getconf CLK_TCK)
fpids() { [ -n "$sup" ] && echo "$sup" && kids "$sup"; true; }  # the supervisor (or the first floor process) and its workers; none for nchan
npids() { echo "$ngx"; kids "$ngx"; }
base_f=$(sum_kb Pss $(fpids)); base_n=$(sum_kb Pss $(npids))
cpu_f0=$(ticks $(fpids)); cpu_n0=$(ticks $(npids))

# Memory is sampled every 5 s; the peak is reported (events are tiny, so it is the streams',
# flat once the ramp is over). Reading smaps_rollup of a 600 MB nginx walks its page tables:
# sampled every 2 s, it took 1.8% of the box (perf) from the stack it measures.
: > "$work/mem"
( while sleep 5; do echo "$(sum_kb Pss $(fpids)) $(sum_kb Rss $(fpids)) $(sum_kb Pss $(npids))" >> "$work/mem"; done ) &
sampler=$!
pids+=("$sampler")

url="http://127.0.0.1:$port/events?topic=fifty"
sources=127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4
echo "bench-50k: $N streams x $RATE/s for $DURATION; $UPSTREAM processes=$PROCESSES, nginx 8 workers, bench $BENCH_PROCESSES processes" >&2
# fastsse is published to (and nothing may be lost); the floor ticks by itself.
publish=(--publish-url "$url" --min-delivered 100)
[ "$UPSTREAM" = nchan ] && publish=(--publish-url "http://127.0.0.1:$port/pub" --min-delivered 100)
[ "$UPSTREAM" = floor ] && publish=()
set +e
# The bench's own CPU (its processes share the 2 cores): bash's `time`, into its own file.
TIMEFORMAT='%U %S'
{ time "$bin" bench sse --url "$url" "${publish[@]}" -n "$N" --rate "$RATE" --duration "$DURATION" \
  --ramp "$RAMP" --drain 5s --processes "$BENCH_PROCESSES" --source "$sources" --json \
  --report "$OUT/report.html" --max-p99 1s > "$OUT/report.json" 2>&3 ; } 3>&2 2> "$work/bench-cpu"
code=$?
set -e
cpu_f1=$(ticks $(fpids)); cpu_n1=$(ticks $(npids))
kill "$sampler" 2>/dev/null || true
"$bin" bench report -o "$OUT/report.html" --svg-dir "$OUT" --title "$UPSTREAM: $N streams x $RATE event/s on 2 cores" "50k=$OUT/report.json"
python3 - "$OUT/report.json" "$work/mem" "$base_f" "$base_n" "$N" "$(( cpu_f1 - cpu_f0 ))" "$(( cpu_n1 - cpu_n0 ))" "$hz" "$UPSTREAM" "$(tail -n 1 "$work/bench-cpu")" <<'PY' | tee "$OUT/summary.txt"
import json, sys
up = sys.argv[9]
bench_cpu = sum(float(x) for x in sys.argv[10].split()) if sys.argv[10].strip() else float("nan")
r = json.load(open(sys.argv[1]))
rows = [l.split() for l in open(sys.argv[2]) if l.strip()]
base_f, base_n, n = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
cpu_f, cpu_n, hz = int(sys.argv[6]), int(sys.argv[7]), int(sys.argv[8])
peak_f = max((int(x[0]) for x in rows), default=0)
peak_rss = max((int(x[1]) for x in rows), default=0)
peak_n = max((int(x[2]) for x in rows), default=0)
exp, lost = r["events_expected"], r["events_lost"]
print(f"streams            {r['connections_established']} established of {n} ({r['protocol']})")
if up == "floor":
    print(f"received           {r['events_received']} events (the floor publishes by itself: no loss count)")
else:
    print(f"delivered          {exp - lost} of {exp} ({100.0 * (exp - lost) / max(exp, 1):.3f}%), lost {lost}, duplicated {r['events_duplicated']}")
l = r["latency_ms"]
print(f"latency ms         p50 {l['p50']:.1f}  p99 {l['p99']:.1f}  p99.9 {l['p999']:.1f}  max {l['max']:.1f}")
if up == "nchan":
    print("nchan memory       (in nginx)")
else:
    print(f"{up + ' memory':<19}peak PSS {peak_f/1024:.0f} MB (RSS {peak_rss/1024:.0f} MB): {(peak_f - base_f) * 1024 / max(n, 1):.0f} bytes per stream above its start")
print(f"nginx memory       peak PSS {peak_n/1024:.0f} MB: {(peak_n - base_n) * 1024 / max(n, 1):.0f} bytes per stream")
recv = r["events_received"]
server_cpu = "(in nginx)" if up == "nchan" else f"{cpu_f/hz:.1f}"
print(f"CPU seconds        {up} {server_cpu}, nginx {cpu_n/hz:.1f} ({(cpu_f + cpu_n) / hz / max(recv, 1) * 1e6:.1f} s per million deliveries together), bench {bench_cpu:.1f}")
print("verdict            " + ("pass" if not r["failures"] else "FAIL: " + "; ".join(r["failures"])))
PY
echo "report: $OUT/report.html (charts: $OUT/latency.svg connected.svg events.svg)" >&2
exit $code
