#!/usr/bin/env bash
# The release binary runs where no C library is (issue 20): builds it with scripts/release.sh,
# then checks that it has no NEEDED entry and no interpreter, fits the 12 MiB budget, and serves
# — inside an empty root holding only itself, its config and a writable folder — a clock and a
# topics publish -> replay as CGI, and a publish -> replay as FastCGI on fd 0 (as mod_fcgid and
# spawn-fcgi start it), talked to by Debian's cgi-fcgi. Needs root (chroot).
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { echo "test-portable: FAIL: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "test-portable: skipped (chroot needs root)"; exit 0; }

bash scripts/release.sh >/dev/null
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
bin="dist/fastsse-$version-x86_64-linux-musl/fastsse"

readelf -d "$bin" | grep -q NEEDED && fail "the binary needs shared libraries: $(readelf -d "$bin" | grep NEEDED)"
readelf -l "$bin" | grep -q INTERP && fail "the binary names an interpreter"
size=$(stat -c %s "$bin")
[ "$size" -le $((12 * 1024 * 1024)) ] || fail "the binary is $size bytes, over the 12 MiB budget"
(cd dist && sha256sum --quiet -c SHA256SUMS) || fail "SHA256SUMS does not match"

root=$(mktemp -d)
fcgi_pid=
cleanup() { [ -n "$fcgi_pid" ] && kill "$fcgi_pid" 2>/dev/null; rm -rf "$root"; }
trap cleanup EXIT
cp "$bin" "$root/fastsse"
mkdir "$root/data"
cat > "$root/fastsse.toml" <<'TOML'
[journal]
dir = "/data"

[[route]]
path = "/clock"
type = "clock"
interval = "200ms"

[[route]]
path = "/events"
type = "topics"
TOML
# env -i empties PATH: the tools by their full names.
chroot=$(command -v chroot || echo /usr/sbin/chroot)
timeout=$(command -v timeout)
in_root() { env -i GATEWAY_INTERFACE=CGI/1.1 FASTSSE_CONFIG=/fastsse.toml "$@"; }

# CGI: a clock, then a publish and its replay.
out=$(in_root REQUEST_METHOD=GET PATH_INFO=/clock "$timeout" 1 "$chroot" "$root" /fastsse || true)
grep -q '^data: ' <<<"$out" || fail "clock as CGI in an empty root: $out"
body='hello from an empty root'
out=$(printf '%s' "$body" | in_root REQUEST_METHOD=POST PATH_INFO=/events QUERY_STRING=topic=t \
  CONTENT_TYPE=text/plain CONTENT_LENGTH=${#body} "$chroot" "$root" /fastsse)
grep -q '^Status: 200' <<<"$out" || fail "publish as CGI: $out"
out=$(in_root REQUEST_METHOD=GET PATH_INFO=/events QUERY_STRING=topic=t HTTP_LAST_EVENT_ID=0 \
  "$timeout" 1.5 "$chroot" "$root" /fastsse || true)
grep -q "^data: $body" <<<"$out" || fail "replay as CGI: $out"

# FastCGI on fd 0: a listening socket handed over as stdin, as mod_fcgid does.
python3 - "$root" "$chroot" <<'PY' &
import os, socket, sys
root, chroot = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX)
s.bind(os.path.join(root, "fcgi.sock"))
s.listen(16)
os.dup2(s.fileno(), 0)
os.execve(chroot, [chroot, root, "/fastsse"], {"FASTSSE_CONFIG": "/fastsse.toml"})
PY
fcgi_pid=$!
for _ in $(seq 50); do [ -S "$root/fcgi.sock" ] && break; sleep 0.1; done
second='and over FastCGI'
out=$(printf '%s' "$second" | env -i REQUEST_METHOD=POST SCRIPT_NAME=/events QUERY_STRING=topic=t \
  REQUEST_URI=/events?topic=t CONTENT_TYPE=text/plain CONTENT_LENGTH=${#second} \
  "$(command -v cgi-fcgi)" -bind -connect "$root/fcgi.sock")
grep -q '^Status: 200' <<<"$out" || fail "publish over FastCGI on fd 0: $out"
out=$(env -i REQUEST_METHOD=GET SCRIPT_NAME=/events QUERY_STRING=topic=t REQUEST_URI=/events?topic=t \
  HTTP_LAST_EVENT_ID=0 "$timeout" 1.5 "$(command -v cgi-fcgi)" -bind -connect "$root/fcgi.sock" || true)
grep -q "^data: $body" <<<"$out" && grep -q "^data: $second" <<<"$out" ||
  fail "replay over FastCGI on fd 0: $out"

echo "test-portable: ok ($bin, $size bytes, static, served CGI and FastCGI in an empty root)"
