#!/usr/bin/env bash
# The release binaries run where no C library is (issue 20): builds them with scripts/release.sh
# (x86_64 and aarch64, or ARCHES), then checks for each that it has no NEEDED entry and no
# interpreter, fits the 12 MiB budget, and serves — inside an empty root holding only itself, its
# config and a writable folder — a clock and a topics publish -> replay as CGI, and a publish ->
# replay as FastCGI on fd 0 (as mod_fcgid and spawn-fcgi start it), talked to by Debian's
# cgi-fcgi. The aarch64 binary runs under Debian's qemu-user-static, copied into the root beside
# it. Needs root (chroot).
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { echo "test-portable: FAIL: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "test-portable: skipped (chroot needs root)"; exit 0; }
ARCHES=${ARCHES:-"x86_64 aarch64"}
export ARCHES

bash scripts/release.sh >/dev/null
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
(cd dist && sha256sum --quiet -c SHA256SUMS) || fail "SHA256SUMS does not match"
# env -i empties PATH: the tools by their full names.
chroot=$(command -v chroot || echo /usr/sbin/chroot)
timeout=$(command -v timeout)
cgi_fcgi=$(command -v cgi-fcgi)

root=
fcgi_pid=
cleanup() {
  [ -n "$fcgi_pid" ] && kill "$fcgi_pid" 2>/dev/null
  [ -n "$root" ] && rm -rf "$root"
  return 0
}
trap cleanup EXIT

# check ARCH: the binary of ARCH, in an empty root.
check() {
  local arch=$1 bin="dist/fastsse-$version-$1-linux-musl/fastsse" emu=() out size
  readelf -d "$bin" | grep -q NEEDED && fail "$arch: the binary needs shared libraries: $(readelf -d "$bin" | grep NEEDED)"
  readelf -l "$bin" | grep -q INTERP && fail "$arch: the binary names an interpreter"
  readelf -h "$bin" | grep -q "Machine:.*$( [ "$arch" = aarch64 ] && echo AArch64 || echo X86-64)" ||
    fail "$arch: the binary is for another CPU: $(readelf -h "$bin" | grep Machine)"
  size=$(stat -c %s "$bin")
  [ "$size" -le $((12 * 1024 * 1024)) ] || fail "$arch: the binary is $size bytes, over the 12 MiB budget"

  root=$(mktemp -d)
  cp "$bin" "$root/fastsse"
  if [ "$arch" != "$(uname -m)" ]; then
    [ -x /usr/bin/qemu-$arch-static ] || fail "$arch: needs qemu-user-static (scripts/test.sh installs it)"
    cp "/usr/bin/qemu-$arch-static" "$root/qemu"
    emu=(/qemu)
  fi
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
  in_root() { env -i GATEWAY_INTERFACE=CGI/1.1 FASTSSE_CONFIG=/fastsse.toml "$@"; }

  # CGI: a clock, then a publish and its replay.
  out=$(in_root REQUEST_METHOD=GET PATH_INFO=/clock "$timeout" 2 "$chroot" "$root" "${emu[@]}" /fastsse || true)
  grep -q '^data: ' <<<"$out" || fail "$arch: clock as CGI in an empty root: $out"
  local body="hello from an empty root ($arch)"
  out=$(printf '%s' "$body" | in_root REQUEST_METHOD=POST PATH_INFO=/events QUERY_STRING=topic=t \
    CONTENT_TYPE=text/plain CONTENT_LENGTH=${#body} "$chroot" "$root" "${emu[@]}" /fastsse)
  grep -q '^Status: 200' <<<"$out" || fail "$arch: publish as CGI: $out"
  out=$(in_root REQUEST_METHOD=GET PATH_INFO=/events QUERY_STRING=topic=t HTTP_LAST_EVENT_ID=0 \
    "$timeout" 2 "$chroot" "$root" "${emu[@]}" /fastsse || true)
  grep -q "^data: $body" <<<"$out" || fail "$arch: replay as CGI: $out"

  # FastCGI on fd 0: a listening socket handed over as stdin, as mod_fcgid does.
  python3 - "$root" "$chroot" "${emu[@]}" <<'PY' &
import os, socket, sys
root, chroot, emu = sys.argv[1], sys.argv[2], sys.argv[3:]
s = socket.socket(socket.AF_UNIX)
s.bind(os.path.join(root, "fcgi.sock"))
s.listen(16)
os.dup2(s.fileno(), 0)
os.execve(chroot, [chroot, root] + emu + ["/fastsse"], {"FASTSSE_CONFIG": "/fastsse.toml"})
PY
  fcgi_pid=$!
  for _ in $(seq 50); do [ -S "$root/fcgi.sock" ] && break; sleep 0.1; done
  local second="and over FastCGI ($arch)"
  out=$(printf '%s' "$second" | env -i REQUEST_METHOD=POST SCRIPT_NAME=/events QUERY_STRING=topic=t \
    REQUEST_URI=/events?topic=t CONTENT_TYPE=text/plain CONTENT_LENGTH=${#second} \
    "$cgi_fcgi" -bind -connect "$root/fcgi.sock")
  grep -q '^Status: 200' <<<"$out" || fail "$arch: publish over FastCGI on fd 0: $out"
  out=$(env -i REQUEST_METHOD=GET SCRIPT_NAME=/events QUERY_STRING=topic=t REQUEST_URI=/events?topic=t \
    HTTP_LAST_EVENT_ID=0 "$timeout" 2 "$cgi_fcgi" -bind -connect "$root/fcgi.sock" || true)
  grep -q "^data: $body" <<<"$out" && grep -q "^data: $second" <<<"$out" ||
    fail "$arch: replay over FastCGI on fd 0: $out"
  kill "$fcgi_pid" 2>/dev/null || true
  wait "$fcgi_pid" 2>/dev/null || true
  fcgi_pid=
  rm -rf "$root"
  root=
  echo "test-portable: ok ($bin, $size bytes, static, served CGI and FastCGI in an empty root${emu:+ under qemu-$arch-static})"
}

for arch in $ARCHES; do check "$arch"; done
