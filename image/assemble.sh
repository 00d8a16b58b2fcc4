#!/usr/bin/env bash
# Builds the flashable SD image from the cached root file system
# (image/build-rootfs.sh) and a pimail binary, without loop devices:
# mkfs.vfat + mtools for the boot partition, `mke2fs -d` for the root,
# sfdisk + dd to put them together. Writes OUT/pimail-arm64.img (kept for
# `make image-test`), OUT/pimail-arm64.img.zst and its .sha256.
#
# usage: image/assemble.sh PIMAIL_BINARY OUT_DIR   (as root)
set -euo pipefail
bin=$(realpath "$1")
out=$(realpath -m "$2")
cd "$(dirname "$0")/.."
repo=$PWD

boot_mib=256
start=$(date +%s)
rootfs=$(image/build-rootfs.sh)
work="$out/work"
rm -rf "$work"
mkdir -p "$work" "$out"

# The staging tree shares file data with the cache through hard links; only
# /etc is copied, because it is the one place files get rewritten. Every
# other change below adds or renames entries, which leaves the cache intact.
stage="$work/root"
cp -al "$rootfs" "$stage"
rm -rf "$stage/etc"
cp -a "$rootfs/etc" "$stage/etc"

# The product: binary, units, service user, marker for `pimail firstboot`.
install -m 755 "$bin" "$stage/usr/bin/pimail"
install -m 644 systemd/pimail.service systemd/pimail-firstboot.service systemd/pimail.socket "$stage/usr/lib/systemd/system/"
install -D -m 644 systemd/pimail.sysusers "$stage/usr/lib/sysusers.d/pimail.conf"
# Create the user now rather than trusting systemd-sysusers.service's
# ConditionNeedsUpdate= on the first boot.
systemd-sysusers --root="$stage"
mkdir -p "$stage/etc/systemd/system/multi-user.target.wants" "$stage/etc/pimail"
for unit in pimail.service pimail-firstboot.service; do
    ln -sf "/usr/lib/systemd/system/$unit" "$stage/etc/systemd/system/multi-user.target.wants/$unit"
done
# `pimail user add ...` without --config finds the image's config.
ln -sf /var/lib/pimail/pimail.toml "$stage/etc/pimail/pimail.toml"
printf 'pimail image\nbuilt %s from %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    "$(git -C "$repo" describe --always --dirty 2>/dev/null || echo unknown)" > "$stage/etc/pimail-image"

# Boot partition: what raspi-firmware put in /boot/firmware, the settings
# file, and U-Boot's extlinux.conf for generic arm64 boards.
mv "$stage/boot/firmware" "$work/firm"
mkdir -m 755 "$stage/boot/firmware"
cp board/pimail.txt "$work/firm/pimail.txt"
kver=$(ls "$work/firm" | sed -n 's/^vmlinuz-//p' | sort -V | tail -1)
[ -n "$kver" ] || { echo "assemble.sh: no vmlinuz-* in /boot/firmware of $rootfs" >&2; exit 1; }
mkdir -p "$work/firm/extlinux"
sed "s/@KVER@/$kver/g" board/generic-arm64/extlinux.conf > "$work/firm/extlinux/extlinux.conf"
mkfs.vfat -F 32 -n RASPIFIRM -C "$work/boot.vfat" $((boot_mib * 1024)) >/dev/null
mcopy -s -p -m -i "$work/boot.vfat" "$work/firm"/* ::

# Root: what it holds plus a quarter and 64 MiB; firstboot grows it to the card.
used_mib=$(( $(du -s -B1M "$stage" | cut -f1) ))
root_mib=$(( used_mib + used_mib / 4 + 64 ))
mke2fs -q -t ext4 -L RASPIROOT -m 1 -E root_owner=0:0 -d "$stage" "$work/root.ext4" "${root_mib}M"
e2fsck -fn "$work/root.ext4" >/dev/null

img="$out/pimail-arm64.img"
rm -f "$img"
truncate -s $(( 4 + boot_mib + root_mib ))M "$img"
# MBR, not GPT: the Pi 3's boot ROM reads only MBR.
sfdisk -q "$img" <<SFDISK
label: dos
unit: sectors
start=8192, size=$((boot_mib * 2048)), type=c, bootable
start=$(( (4 + boot_mib) * 2048 )), size=$((root_mib * 2048)), type=83
SFDISK
dd if="$work/boot.vfat" of="$img" bs=1M seek=4 conv=notrunc,sparse status=none
dd if="$work/root.ext4" of="$img" bs=1M seek=$((4 + boot_mib)) conv=notrunc,sparse status=none
rm -rf "$work"

zstd -q -f -T2 -10 "$img" -o "$img.zst"
(cd "$out" && sha256sum "$(basename "$img").zst" > "$(basename "$img").zst.sha256")
echo "image: $img.zst ($(du -h --apparent-size "$img.zst" | cut -f1); raw $(du -h --apparent-size "$img" | cut -f1)), kernel $kver, $(( $(date +%s) - start )) s"
