#!/usr/bin/env bash
# Installs what `make image` and `make image-test` need on a Debian 12 (or
# newer) x86_64 host, as root, and registers qemu-user for arm64 binaries
# (binfmt_misc), which mmdebstrap needs to configure arm64 packages.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
need=""
for tool in mmdebstrap:mmdebstrap mcopy:mtools mkfs.vfat:dosfstools sfdisk:fdisk \
            arch-test:arch-test zstd:zstd python3:python3 aarch64-linux-gnu-gcc:gcc-aarch64-linux-gnu; do
    command -v "${tool%%:*}" >/dev/null || need="$need ${tool#*:}"
done
qemu_need=""
for tool in qemu-system-aarch64 qemu-aarch64 qemu-img; do command -v $tool >/dev/null || qemu_need=1; done
if [ -n "$need$qemu_need" ]; then
    apt-get update -qq
    [ -z "$need" ] || apt-get install -y -qq --no-install-recommends $need >/dev/null
fi
if [ -n "$qemu_need" ]; then
    . /etc/os-release
    if [ "${VERSION_CODENAME:-}" = bookworm ]; then
        [ -e /etc/apt/sources.list.d/pimail-backports.sources ] || cat > /etc/apt/sources.list.d/pimail-backports.sources <<SOURCES
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends -t bookworm-backports \
            qemu-system-arm qemu-utils qemu-user qemu-user-static >/dev/null
    else
        apt-get install -y -qq --no-install-recommends qemu-system-arm qemu-utils qemu-user qemu-user-static >/dev/null
    fi
fi
# binfmt_misc is not always mounted (containers, VMs without systemd).
mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    if [ -r /usr/lib/binfmt.d/qemu-aarch64.conf ]; then
        cat /usr/lib/binfmt.d/qemu-aarch64.conf > /proc/sys/fs/binfmt_misc/register
    else
        update-binfmts --enable qemu-aarch64
    fi
fi
arch-test arm64 >/dev/null || { echo "host-deps.sh: arm64 binaries do not run here (binfmt_misc)" >&2; exit 1; }
