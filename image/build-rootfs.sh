#!/usr/bin/env bash
# Builds the arm64 Debian bookworm root file system of the pimail image with
# mmdebstrap (root mode, qemu-user for the foreign maintainer scripts) and
# caches it: the cache key is a hash of everything that goes into it (this
# script, image/overlay, image/initramfs, board/raspi), so a new pimail
# binary or unit never rebuilds it. Prints the cached directory's path.
#
# usage: image/build-rootfs.sh   (as root; IMAGE_CACHE picks the cache dir)
set -euo pipefail
cd "$(dirname "$0")/.."

cache=${IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pimail-image}
suite=bookworm
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
packages=systemd,systemd-sysv,systemd-resolved,systemd-timesyncd,udev,dbus,kmod,iproute2,netbase,ca-certificates,\
initramfs-tools,zstd,linux-image-arm64,raspi-firmware,fdisk,e2fsprogs,dosfstools,openssh-server,wpasupplicant,firmware-brcm80211

# Kernel modules a headless mail server has no use for (graphics, video and
# sound, InfiniBand, industrial sensors, staging drivers such as the Pi's
# camera and audio). dpkg matches these against the paths in the package,
# and bookworm's linux-image ships /lib/modules/... (the /usr/lib path only
# exists through the usrmerge symlink), so the /lib form is the one that
# works; the /usr/lib form is for trixie, whose packages ship under /usr.
trim_modules="drivers/gpu drivers/media drivers/infiniband drivers/iio drivers/staging sound"
trim_opts=()
for dir in $trim_modules; do
    trim_opts+=("--dpkgopt=path-exclude=/lib/modules/*/kernel/$dir/*"
                "--dpkgopt=path-exclude=/usr/lib/modules/*/kernel/$dir/*")
done

key=$( { echo "$suite $mirror $packages"; cat "$0";
         find image/overlay image/initramfs board/raspi -type f -print0 | sort -z \
           | xargs -0 sha256sum; find image/overlay image/initramfs -printf '%p %m\n' | sort; } \
       | sha256sum | cut -c1-16)
out="$cache/rootfs-$key"
if [ -d "$out" ]; then
    echo "rootfs cached: $out" >&2
    echo "$out"
    exit 0
fi
[ "$(id -u)" = 0 ] || { echo "build-rootfs.sh: needs root (mmdebstrap --mode=root)" >&2; exit 1; }
mkdir -p "$cache"
rm -rf "$out.tmp"
start=$(date +%s)
# Pi firmware is in non-free-firmware; so is the Wi-Fi firmware of the Pi 3/4/Zero 2 W.
mmdebstrap --mode=root --architectures=arm64 --variant=apt \
  --components="main non-free-firmware" \
  --include="$packages" \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  "${trim_opts[@]}" \
  --essential-hook='mkdir -p "$1/etc/initramfs-tools"' \
  --essential-hook='sync-in image/initramfs /etc/initramfs-tools' \
  --customize-hook='sync-in image/overlay /' \
  --customize-hook='echo pimail > "$1/etc/hostname"' \
  --customize-hook='printf "LABEL=RASPIROOT / ext4 rw,noatime,commit=60 0 1\nLABEL=RASPIFIRM /boot/firmware vfat rw,noatime,umask=0077 0 2\ntmpfs /tmp tmpfs nosuid,nodev,size=64M 0 0\n" > "$1/etc/fstab"' \
  --customize-hook='cat board/raspi/raspi-firmware >> "$1/etc/default/raspi-firmware"' \
  --customize-hook='copy-in board/raspi/raspi-firmware-custom /etc/default' \
  --customize-hook='chroot "$1" env DEB_MAINT_PARAMS=configure /etc/kernel/postinst.d/z50-raspi-firmware' \
  --customize-hook='chroot "$1" systemctl enable systemd-networkd systemd-resolved' \
  --customize-hook='chroot "$1" systemctl disable ssh.service' \
  --customize-hook='chroot "$1" systemctl enable ssh-hostkeys.service' \
  --customize-hook='ln -sf ../run/systemd/resolve/stub-resolv.conf "$1/etc/resolv.conf"' \
  --customize-hook='rm -f "$1/etc/machine-id" "$1"/var/lib/dbus/machine-id; touch "$1/etc/machine-id"; rm -f "$1"/etc/ssh/ssh_host_*' \
  "$suite" "$out.tmp" "$mirror" \
  "deb ${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security} $suite-security main non-free-firmware"
# The trim must really have happened (it silently did nothing while the
# patterns named /usr/lib/modules).
for dir in $trim_modules; do
    if compgen -G "$out.tmp/usr/lib/modules/*/kernel/$dir/*" >/dev/null; then
        echo "build-rootfs.sh: kernel/$dir was not trimmed from $out.tmp" >&2
        exit 1
    fi
done
mv "$out.tmp" "$out"
echo "rootfs built in $(( $(date +%s) - start )) s: $out ($(du -sh "$out" | cut -f1))" >&2
# Older cached trees are of no further use.
find "$cache" -maxdepth 1 -name 'rootfs-*' ! -name "rootfs-$key" -exec rm -rf {} + 2>/dev/null || true
echo "$out"
