#!/bin/bash
# Build the second v1 -> v2 OS-image corpus for the delta benchmark (issue 14), so that no
# encoder setting is tuned to the first pair (/work/shared/corpus/make-image-pair.sh).
#
# Differs from pair 1 in role, slot size and update cadence:
#   v1 = debootstrap --variant=minbase bookworm + a "gateway" package set (MQTT broker,
#        chrony, ifupdown/dhcp, wpasupplicant/iw, bluez, avahi, nftables, dnsmasq, lua,
#        python3 + venv, busybox, dropbear, sqlite3), bookworm main only
#   v2 = a larger "quarterly" update of v1: apt-get upgrade with bookworm-updates and
#        bookworm-security, then packages ADDED (V2_ADD: nodejs, lighttpd, tcpdump, socat,
#        python3-paho-mqtt, ...) and REMOVED (V2_REMOVE, purged + autoremove: bluez,
#        wireless-tools, avahi-daemon), and a config/data change (V2_DATA=1: the broker's
#        config rewritten and a 2 MB sqlite "device catalog" replaced by a newer one).
#
# Each version is written in 4 forms under OUT: vN.tar, vN.ext4 (fixed IMG_SIZE, default
# 768 MiB, mke2fs -d), vN.sqfs (zstd), vN.raw.sqfs (uncompressed). Same ext4 UUID and hash
# seed for both versions, as one image pipeline would produce.
#
# Needs root and the Debian mirror of the apt sources. The mirror moves (point releases,
# security), so a re-run gives a corpus of the same shape, not the same bytes; vN.packages
# and packages.diff record what went in.
#
# Usage: make-image-pair-2.sh DIR              # full build (about 5 minutes on 2 cores)
#        SKIP_ROOTFS=1 make-image-pair-2.sh DIR # only regenerate image forms from the trees
#                                               # in DIR/build (no apt, no network)
#        SKIP_ROOTFS=1 VERSIONS=v2 make-image-pair-2.sh DIR
#                                               # only v2's images; checked against the
#                                               # SHA256SUMS of the full build
# The image step is only partly reproducible from the trees: the squashfs forms are (fixed
# mkfs time, no atimes), but tar (pax headers, because of --xattrs) and ext4 (mke2fs -d)
# record each file's atime, and the first build's own reads of the tree moved the atimes
# (relatime). So a partial rebuild after the full one gives other tar/ext4 bytes; the check
# below says so, and then only a full image rebuild (unset VERSIONS) gives a consistent pair.
set -euo pipefail

OUT=${1:?usage: make-image-pair-2.sh OUTPUT_DIR}
mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
BUILD=$OUT/build
apt_uri() {  # first URI in the apt sources whose path ends in $1
  { cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null || true; } |
    grep -oE '(URIs:|deb)[[:space:]]+[^[:space:]]+' | awk '{print $2}' | grep -E "/$1/?\$" | head -n 1 || true
}
MIRROR=${MIRROR:-$(apt_uri debian)}
SECMIRROR=${SECMIRROR:-$(apt_uri debian-security)}
if [ -z "${SKIP_ROOTFS:-}" ] && { [ -z "$MIRROR" ] || [ -z "$SECMIRROR" ]; }; then
  echo "set MIRROR and SECMIRROR (no Debian mirror found in apt sources)" >&2; exit 2
fi
IMG_SIZE=${IMG_SIZE:-768M}
PKGS=${PKGS:-systemd,systemd-sysv,udev,dbus,kmod,iproute2,ifupdown,isc-dhcp-client,chrony,mosquitto,mosquitto-clients,lua5.4,python3,python3-venv,busybox,dropbear-bin,bluez,wireless-tools,wpasupplicant,iw,nftables,dnsmasq-base,avahi-daemon,sqlite3,ca-certificates,logrotate,cron}
V2_ADD=${V2_ADD:-"nodejs lighttpd tcpdump socat python3-paho-mqtt python3-serial jq"}
V2_REMOVE=${V2_REMOVE:-"bluez wireless-tools avahi-daemon"}
V2_DATA=${V2_DATA:-1}
VERSIONS=${VERSIONS:-v1 v2}

mkdir -p "$BUILD"
export DEBIAN_FRONTEND=noninteractive
if [ -z "${SKIP_ROOTFS:-}" ]; then
  apt-get update -q
  apt-get install -y -q debootstrap squashfs-tools e2fsprogs tar sqlite3 >/dev/null
fi

clean_tree() {  # strip what a real image build would not ship
  local r=$1
  rm -f "$r"/var/cache/apt/archives/*.deb "$r"/var/cache/apt/*.bin
  rm -rf "$r"/var/lib/apt/lists/*
  mkdir -p "$r"/var/lib/apt/lists/partial
}

catalog() {  # DB SEED ROWS: a deterministic sqlite "device catalog" (application data)
  python3 - "$@" <<'PY'
import random, sqlite3, sys
db, seed, rows = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rnd = random.Random(seed)
c = sqlite3.connect(db)
c.execute("create table device(id integer primary key, model text, fw text, topic text, cal blob)")
for i in range(rows):
    c.execute("insert into device values (?,?,?,?,?)", (
        i, f"model-{rnd.randrange(40)}", f"{rnd.randrange(9)}.{rnd.randrange(20)}",
        f"site/{rnd.randrange(300)}/dev/{i}", rnd.randbytes(24)))
c.commit(); c.execute("vacuum"); c.close()
PY
}

if [ -z "${SKIP_ROOTFS:-}" ]; then
  rm -rf "$BUILD/rootfs-v1" "$BUILD/rootfs-v2"
  # ---- v1 -----------------------------------------------------------------------------
  debootstrap --variant=minbase --include="$PKGS" bookworm "$BUILD/rootfs-v1" "$MIRROR" \
    > "$BUILD/debootstrap.log" 2>&1
  mkdir -p "$BUILD/rootfs-v1/var/lib/gateway"
  [ "$V2_DATA" = 1 ] && catalog "$BUILD/rootfs-v1/var/lib/gateway/catalog.db" 1 20000
  clean_tree "$BUILD/rootfs-v1"

  # ---- v2 = v1 + upgrade + packages added and removed + data/config change ----------------
  cp -a "$BUILD/rootfs-v1" "$BUILD/rootfs-v2"
  R=$BUILD/rootfs-v2
  cat > "$R/etc/apt/sources.list" <<EOS
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb $SECMIRROR bookworm-security main
EOS
  printf '#!/bin/sh\nexit 101\n' > "$R/usr/sbin/policy-rc.d"; chmod +x "$R/usr/sbin/policy-rc.d"
  mount -t proc proc "$R/proc"
  trap 'umount "$R/proc" 2>/dev/null || true' EXIT
  {
    chroot "$R" apt-get update -q
    chroot "$R" apt-get -y -q upgrade
    chroot "$R" apt-get -y -q install --no-install-recommends $V2_ADD
    chroot "$R" apt-get -y -q purge $V2_REMOVE
    chroot "$R" apt-get -y -q autoremove --purge
  } > "$BUILD/v2-upgrade.log" 2>&1
  umount "$R/proc"; trap - EXIT
  rm -f "$R/usr/sbin/policy-rc.d"
  if [ "$V2_DATA" = 1 ]; then
    rm -f "$R/var/lib/gateway/catalog.db"
    catalog "$R/var/lib/gateway/catalog.db" 2 21000
    printf 'listener 1883 127.0.0.1\nlistener 8883\nallow_anonymous false\npassword_file /etc/mosquitto/passwd\npersistence true\n' \
      > "$R/etc/mosquitto/conf.d/gateway.conf"
  fi
  clean_tree "$R"
fi

# ---- image forms ---------------------------------------------------------------------
export E2FSPROGS_FAKE_TIME=1700000000   # deterministic ext4 superblock times
for v in $VERSIONS; do
  R=$BUILD/rootfs-$v
  [ -d "$R" ] || { echo "no tree $R: run without SKIP_ROOTFS first" >&2; exit 2; }
  chroot "$R" dpkg-query -W -f='${Package} ${Version}\n' > "$OUT/$v.packages"
  tar --sort=name --numeric-owner --xattrs -C "$R" -cf "$OUT/$v.tar" .
  rm -f "$OUT/$v.ext4"
  mke2fs -q -t ext4 -b 4096 -L rootfs \
    -U 6f1c0c4e-4a3b-4c55-9d1e-2b7a1f0e0101 \
    -E hash_seed=6f1c0c4e-4a3b-4c55-9d1e-2b7a1f0e0102,root_owner=0:0 \
    -d "$R" "$OUT/$v.ext4" "$IMG_SIZE"
  mksquashfs "$R" "$OUT/$v.sqfs" -noappend -comp zstd -processors 2 \
    -mkfs-time 1700000000 -no-progress -quiet
  mksquashfs "$R" "$OUT/$v.raw.sqfs" -noappend -noI -noD -noF -noX -processors 2 \
    -mkfs-time 1700000000 -no-progress -quiet
done

cd "$OUT"
if [ "$VERSIONS" = "v1 v2" ]; then
  ls -l v1.* v2.*
  sha256sum v1.tar v2.tar v1.ext4 v2.ext4 v1.sqfs v2.sqfs v1.raw.sqfs v2.raw.sqfs > SHA256SUMS
  diff v1.packages v2.packages > packages.diff || true
else
  # a partial rebuild must give the bytes of the full build it completes
  [ -f SHA256SUMS ] || { echo "no SHA256SUMS in $OUT to check the rebuilt images against" >&2; exit 2; }
  pat=$(printf '%s\\.|' $VERSIONS); pat=${pat%|}
  grep -E "  ($pat)" SHA256SUMS | sha256sum -c - ||
    { echo "rebuilt images differ from SHA256SUMS: rebuild all versions (unset VERSIONS)" >&2; exit 1; }
fi
echo "corpus ready in $OUT"
