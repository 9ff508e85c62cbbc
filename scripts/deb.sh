#!/usr/bin/env bash
# Builds the Debian package from a built binary:  scripts/deb.sh BINARY VERSION OUTDIR [ARCH]
# (ARCH is Debian's name of the binary's CPU: amd64, the default, or arm64)
# (scripts/release.sh calls it with the stripped static binary of the tarball, so the .deb and
# the tarball ship the same bytes). Plain dpkg-deb over a tree made here from conf/ — every
# installed file and maintainer script is in the repository (conf/debian/), and the build needs
# nothing dpkg does not have. Prints the path of the .deb.
#
#   /usr/bin/fastsse
#   /lib/systemd/system/fastsse.{service,socket}   conf/fastsse.{service,socket}, run as the
#                                                  fastsse user from /usr/bin
#   /usr/lib/tmpfiles.d/fastsse.conf               /run/fastsse at boot
#   /etc/fastsse/fastsse.toml                      conf/fastsse.toml, journal in /var/lib/fastsse (conffile)
#   /etc/nginx/snippets/fastsse.conf               conf/nginx-fastsse.conf (conffile)
#   /usr/share/doc/fastsse/                        copyright, changelog, README, docs/, examples (conf/)
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 3 ] || [ $# -eq 4 ] || { echo "usage: scripts/deb.sh BINARY VERSION OUTDIR [ARCH]" >&2; exit 2; }
bin=$1 version=$2 out=$3 arch=${4:-amd64}
deb_version="$version-1"
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
chmod 0755 "$root"

install -D -m 0755 "$bin" "$root/usr/bin/fastsse"
# The units: the package's binary, its own user (in group www-data, so that a socket it binds
# itself can be handed to the web server), the socket given to www-data by systemd.
sed -e 's#/usr/local/bin/fastsse#/usr/bin/fastsse#g' \
    -e 's#^User=www-data#User=fastsse#' \
    -e 's#^Group=www-data#Group=fastsse\nSupplementaryGroups=www-data#' \
    -e '/^# systemd unit for the fastsse daemon. Install:/,/^#   sudo systemctl daemon-reload/c\# systemd unit for the fastsse daemon (Debian package: enabled and started on install\n# where systemd runs; `systemctl edit fastsse` to override).' \
    conf/fastsse.service > "$root/fastsse.service"
grep -q '^User=fastsse' "$root/fastsse.service" || { echo "deb.sh: fastsse.service has no User=www-data line to adapt" >&2; exit 1; }
sed -e 's#^SocketUser=www-data#SocketUser=fastsse#' \
    -e '/^# systemd socket unit: systemd holds/,/^#   sudo systemctl restart fastsse /c\# systemd socket unit: systemd holds the listening socket, so it outlives every restart and\n# upgrade of fastsse (connections wait in its backlog). Enabled by the Debian package.' \
    conf/fastsse.socket > "$root/fastsse.socket"
install -D -m 0644 "$root/fastsse.service" "$root/lib/systemd/system/fastsse.service"
install -D -m 0644 "$root/fastsse.socket" "$root/lib/systemd/system/fastsse.socket"
rm "$root/fastsse.service" "$root/fastsse.socket"
install -D -m 0644 conf/debian/tmpfiles.conf "$root/usr/lib/tmpfiles.d/fastsse.conf"
install -d -m 0755 "$root/etc/fastsse"
sed -e 's#^dir = "fastsse-data"#dir = "/var/lib/fastsse"#' conf/fastsse.toml > "$root/etc/fastsse/fastsse.toml"
chmod 0644 "$root/etc/fastsse/fastsse.toml"
grep -q '^dir = "/var/lib/fastsse"' "$root/etc/fastsse/fastsse.toml" || { echo "deb.sh: conf/fastsse.toml has no journal dir line to adapt" >&2; exit 1; }
install -D -m 0644 conf/nginx-fastsse.conf "$root/etc/nginx/snippets/fastsse.conf"

doc="$root/usr/share/doc/fastsse"
install -D -m 0644 conf/debian/copyright "$doc/copyright"
sed "s/@VERSION@/$deb_version/" conf/debian/changelog | gzip -9n > "$doc/changelog.Debian.gz"
gzip -9n < README.md > "$doc/README.md.gz"
install -d -m 0755 "$doc/docs"
for f in docs/*.md; do gzip -9n < "$f" > "$doc/docs/$(basename "$f").gz"; done
chmod 0644 "$doc"/docs/*.gz
install -d -m 0755 "$doc/examples"
find conf -maxdepth 1 -type f ! -name '*.asis' -exec install -m 0644 {} "$doc/examples/" \;
chmod 0644 "$doc"/*.gz

install -D -m 0644 conf/debian/lintian-overrides "$root/usr/share/lintian/overrides/fastsse"

install -d -m 0755 "$root/DEBIAN"
for s in postinst prerm postrm; do install -m 0755 "conf/debian/$s" "$root/DEBIAN/$s"; done
printf '/etc/fastsse/fastsse.toml\n/etc/nginx/snippets/fastsse.conf\n' > "$root/DEBIAN/conffiles"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$deb_version/" -e "s/@SIZE@/$size/" -e "s/@ARCH@/$arch/" conf/debian/control > "$root/DEBIAN/control"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) > "$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/conffiles" "$root/DEBIAN/md5sums"
find "$root" -type d -exec chmod 0755 {} +

mkdir -p "$out"
deb="$out/fastsse_${deb_version}_$arch.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
