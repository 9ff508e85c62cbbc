#!/usr/bin/env bash
# Builds the release artifacts into dist/ (build output, never committed):
#   dist/fastsse-VERSION-x86_64-linux-musl.tar.gz  the static binary (no libc needed: any x86_64
#                                                   Linux, CentOS 7 era shared hosts included),
#                                                   stripped, with conf/ and INSTALL
#   dist/fastsse_VERSION-1_amd64.deb               the same binary as a Debian package: systemd
#                                                   units, /etc/fastsse, the nginx snippet, a
#                                                   fastsse user (scripts/deb.sh)
#   dist/SHA256SUMS
#   dist/debug/fastsse-VERSION-x86_64-linux-musl.debug  its debug info, split off, not shipped
# Needs Debian's musl-tools and rustup's x86_64-unknown-linux-musl target (installed here when
# missing, as root). Prints where each artifact is and its size.
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-musl
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
name="fastsse-$version-x86_64-linux-musl"

if ! command -v musl-gcc >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends musl-tools >/dev/null
  else
    echo "release.sh: needs musl-gcc (sudo apt-get install musl-tools)" >&2
    exit 1
  fi
fi
rustup target list --installed | grep -qx "$target" || rustup target add "$target"

cargo build --release --locked --target "$target"
bin="${CARGO_TARGET_DIR:-target}/$target/release/fastsse"

rm -rf "dist/$name" "dist/$name.tar.gz"
mkdir -p "dist/$name" dist/debug
objcopy --only-keep-debug "$bin" "dist/debug/$name.debug"
cp "$bin" "dist/$name/fastsse"
strip --strip-all --remove-section=.comment "dist/$name/fastsse"
objcopy --add-gnu-debuglink="dist/debug/$name.debug" "dist/$name/fastsse"
cp -r conf "dist/$name/conf"
cat > "dist/$name/INSTALL" <<TXT
fastsse $version, a static x86_64 Linux binary (no C library needed).

As a daemon behind nginx:
  sudo install -m 755 fastsse /usr/local/bin/
  sudo install -D -m 644 conf/fastsse.toml /etc/fastsse/fastsse.toml
  sudo install -m 644 conf/fastsse.service conf/fastsse.socket /etc/systemd/system/
  sudo systemctl enable --now fastsse.socket
  include conf/nginx-fastsse.conf in your server block (see conf/nginx.conf)

On shared hosting (CGI): upload fastsse as events.cgi (mode 755) into a folder with
conf/htaccess as .htaccess, and conf/fastsse-cgi.toml as events.toml beside it.

Check a config first: ./fastsse check-config conf/fastsse.toml
The README of the project has the rest.
TXT
tar -C dist -czf "dist/$name.tar.gz" "$name"
# The Debian package, of the same stripped binary (scripts/deb.sh says what it holds).
deb=$(bash scripts/deb.sh "dist/$name/fastsse" "$version" dist)
(cd dist && sha256sum "$name.tar.gz" "$(basename "$deb")" > SHA256SUMS)
for f in "dist/$name/fastsse" "dist/$name.tar.gz" "$deb" "dist/debug/$name.debug" dist/SHA256SUMS; do
  printf '%-55s %s bytes\n' "$f" "$(stat -c %s "$f")"
done
