#!/usr/bin/env bash
# Builds the release artifacts into dist/ (build output, never committed), for each of ARCHES
# (default "x86_64 aarch64"; Debian's name for aarch64 is arm64):
#   dist/fastsse-VERSION-ARCH-linux-musl.tar.gz  the static binary (no libc needed: any Linux on
#                                                 that CPU, CentOS 7 era shared hosts included),
#                                                 stripped, with conf/ and INSTALL
#   dist/fastsse_VERSION-1_DEBARCH.deb           the same binary as a Debian package: systemd
#                                                 units, /etc/fastsse, the nginx snippet, a
#                                                 fastsse user (scripts/deb.sh)
#   dist/debug/fastsse-VERSION-ARCH-linux-musl.debug  its debug info, split off, not shipped
#   dist/SHA256SUMS
# x86_64 builds with Debian's musl-tools; aarch64 cross-builds with cargo-zigbuild and zig (PyPI
# `cargo-zigbuild`, `ziglang`) and strips with Debian's binutils-aarch64-linux-gnu. The rustup
# targets and these tools are installed here when missing (Debian packages as root). Prints
# where each artifact is and its size.
set -euo pipefail
cd "$(dirname "$0")/.."
ARCHES=${ARCHES:-"x86_64 aarch64"}
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)

need_deb() { # PACKAGE COMMAND
  command -v "$2" >/dev/null 2>&1 && return
  if [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$1" >/dev/null
  else
    echo "release.sh: needs $2 (sudo apt-get install $1)" >&2
    exit 1
  fi
}

# build ARCH: builds the binary, prints its path.
build() {
  local target="$1-unknown-linux-musl"
  rustup target list --installed | grep -qx "$target" || rustup target add "$target" >&2
  case $1 in
    x86_64)
      need_deb musl-tools musl-gcc
      cargo build --profile dist --locked --target "$target" >&2 ;;
    aarch64)
      command -v cargo-zigbuild >/dev/null 2>&1 && python3 -c 'import ziglang' 2>/dev/null ||
        python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore cargo-zigbuild ziglang >&2
      cargo zigbuild --profile dist --locked --target "$target" >&2 ;;
    *) echo "release.sh: unknown arch $1 (x86_64 or aarch64)" >&2; exit 2 ;;
  esac
  echo "${CARGO_TARGET_DIR:-target}/$target/dist/fastsse"
}

sums=()
for arch in $ARCHES; do
  case $arch in
    x86_64) debarch=amd64 tools="" ;;
    aarch64) debarch=arm64 tools="aarch64-linux-gnu-"
      need_deb binutils-aarch64-linux-gnu aarch64-linux-gnu-strip ;;
    *) echo "release.sh: unknown arch $arch" >&2; exit 2 ;;
  esac
  bin=$(build "$arch")
  name="fastsse-$version-$arch-linux-musl"
  rm -rf "dist/$name" "dist/$name.tar.gz"
  mkdir -p "dist/$name" dist/debug
  "${tools}objcopy" --only-keep-debug "$bin" "dist/debug/$name.debug"
  cp "$bin" "dist/$name/fastsse"
  "${tools}strip" --strip-all --remove-section=.comment "dist/$name/fastsse"
  "${tools}objcopy" --add-gnu-debuglink="dist/debug/$name.debug" "dist/$name/fastsse"
  cp -r conf "dist/$name/conf"
  rm -rf "dist/$name/conf/debian"
  cat > "dist/$name/INSTALL" <<TXT
fastsse $version, a static $arch Linux binary (no C library needed).

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
  deb=$(bash scripts/deb.sh "dist/$name/fastsse" "$version" dist "$debarch")
  sums+=("$name.tar.gz" "$(basename "$deb")")
  for f in "dist/$name/fastsse" "dist/$name.tar.gz" "$deb" "dist/debug/$name.debug"; do
    printf '%-58s %s bytes\n' "$f" "$(stat -c %s "$f")"
  done
done
(cd dist && sha256sum "${sums[@]}" > SHA256SUMS)
printf '%-58s %s bytes\n' dist/SHA256SUMS "$(stat -c %s dist/SHA256SUMS)"
