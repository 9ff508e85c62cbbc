#!/usr/bin/env bash
# Installs what the tests need (Debian packages, when root) and runs every test:
# formatting, clippy, unit tests, doc tests, and the integration suites against real nginx and
# cgi-fcgi. CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

# Real peers the integration tests start: nginx, cgi-fcgi (libfcgi-bin), curl, Apache (with
# mod_fcgid), lighttpd, h2o, systemd (systemd-socket-activate), chromium (a real browser, driven
# headless by npm puppeteer-core; nothing downloads a browser of its own), openssl (test
# certificates and keys), PyJWT with cryptography (tokens made independently of fastsse),
# php-cli with php-curl (the README's PHP publisher), php-fpm (the application hooks call over
# FastCGI), redis-server (topics shared by instances),
# musl-tools and binutils (the static release binary: musl-gcc for ring's C, strip, readelf);
# lintian, adduser and procps (the Debian package: checked, installed, its daemon found);
# qemu-user-static and binutils-aarch64-linux-gnu (the aarch64 binary: run under emulation,
# stripped; scripts/release.sh cross-builds it with PyPI's cargo-zigbuild and ziglang);
# node and npm for
# the npm `eventsource` client (a WHATWG EventSource) when the machine has no node of its own.
packages=(nginx libfcgi-bin curl apache2 libapache2-mod-fcgid lighttpd h2o systemd chromium openssl
  python3-jwt python3-cryptography php-cli php-curl php-fpm redis-server musl-tools binutils lintian
  adduser procps qemu-user-static binutils-aarch64-linux-gnu)
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || packages+=(nodejs npm)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "test.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "test.sh: missing packages ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
fi
# The nginx package starts a system nginx on port 80 where it can; the tests run their own.

# The Prometheus text parser the metrics test checks fastsse's output with (PyPI).
python3 -c 'import prometheus_client' 2>/dev/null ||
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore 'prometheus_client>=0.20'

# The npm eventsource client and puppeteer-core (pinned in tests/node/package-lock.json).
(cd tests/node && npm ci --no-audit --no-fund --loglevel=error >/dev/null)

# Tests that open many streams need file descriptors.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
# The CGI-only build (no bench/check client, no Redis) keeps compiling too.
cargo clippy --no-default-features -- -D warnings
# The static release binary (musl): no shared library, no interpreter, serves CGI and FastCGI
# in an empty root (needs root for chroot; says so and skips otherwise).
bash scripts/test-portable.sh
# The Debian package scripts/release.sh built beside it: lintian, install, the daemon through
# Debian's nginx, an upgrade over a running daemon, remove, purge (root only; skips otherwise).
bash scripts/test-deb.sh
# A hung test must fail CI rather than eat its 90 minutes.
FASTSSE_REQUIRE_PEERS=1 timeout 1800 cargo test -- --test-threads=2
