#!/usr/bin/env bash
# Static ARM builds of pimail (`make aarch64|armv7|armv6`, `make
# test-aarch64|test-armv7|test-armv6`). Installs what the target needs,
# builds, and for `build` checks the binary (static, the right ARM
# architecture) and runs --version, init and check-config under qemu-user
# emulating the oldest CPU of the target's boards (Cortex-A53 of the Pi 3,
# Cortex-A7 of the Pi 2, ARM1176 of the Pi 1/Zero: an instruction that CPU
# lacks stops the run with SIGILL); prints the stripped size.
#
# usage: board/cross.sh build|test TRIPLE   (as root when packages are missing)
#
# aarch64-unknown-linux-musl: rustup's std, which ships musl's libc.a and crt
# objects; Debian's glibc cross gcc links it (.cargo/config.toml).
#
# The 32-bit ARM musl targets: rustup has no std for them with Rust 1.95
# (static.rust-lang.org answers 404 for rust-std-1.95.0-armv7-unknown-linux-
# musleabihf, arm-unknown-linux-musleabihf and arm-unknown-linux-musleabi),
# so std is compiled from the rust-src component (`-Z build-std`, allowed on
# the stable compiler by RUSTC_BOOTSTRAP=1) and linked against Debian's musl
# for the matching Debian architecture (multiarch musl-dev), with gcc's
# libgcc_eh as the unwinder:
#   armv7-unknown-linux-musleabihf  musl-dev:armhf (ARMv7, VFPv3-D16, hard float)
#   arm-unknown-linux-musleabi      musl-dev:armel (ARMv5TE, soft float)
# armv6 (Pi 1, Zero W) is the soft-float musleabi target because every
# hard-float library Debian ships (armhf) is ARMv7 code, which a Pi 1 cannot
# run; soft float costs a mail server little.
set -euo pipefail
mode=$1 triple=$2
cd "$(dirname "$0")/.."
target_dir=${CARGO_TARGET_DIR:-target}
cargo=${CARGO:-cargo}
export DEBIAN_FRONTEND=noninteractive

case $triple in
    aarch64-unknown-linux-musl)     gnu=aarch64-linux-gnu   debarch=arm64 qemu=qemu-aarch64 cpu=cortex-a53 arch=AArch64 ;;
    armv7-unknown-linux-musleabihf) gnu=arm-linux-gnueabihf debarch=armhf qemu=qemu-arm     cpu=cortex-a7  arch=v7 ;;
    arm-unknown-linux-musleabi)     gnu=arm-linux-gnueabi   debarch=armel qemu=qemu-arm     cpu=arm1176    arch=v6 ;;
    *) echo "cross.sh: unknown target $triple" >&2; exit 2 ;;
esac

# apt-get with retries: Debian's mirrors sometimes serve an index mid-sync.
apt_retry() {
    local try
    for try in 1 2 3; do
        "$@" && return 0
        echo "cross.sh: '$*' failed (try $try of 3)" >&2
        sleep $((try * 10))
    done
    return 1
}
need=""
command -v "$gnu-gcc" >/dev/null || need="$need gcc-$gnu"
# The C library headers ring's C files include (a recommends of gcc-$gnu).
[ -e "/usr/$gnu/include/stdint.h" ] || need="$need libc6-dev-$debarch-cross"
command -v "$qemu" >/dev/null || need="$need qemu-user"
std_from_source=""
if [ "$debarch" != arm64 ]; then
    std_from_source=1
    musl_dir=/usr/lib/${gnu/gnu/musl}
    [ -e "$musl_dir/libc.a" ] || need="$need musl-dev:$debarch"
fi
if [ -n "$need" ]; then
    if [ -n "$std_from_source" ] && ! dpkg --print-foreign-architectures | grep -qx "$debarch"; then
        dpkg --add-architecture "$debarch"
    fi
    # An index of another architecture that fails to download is no reason
    # to stop; the install below says whether what we need was found.
    apt_retry apt-get update -qq || true
    # shellcheck disable=SC2086
    apt_retry apt-get install -y -qq --no-install-recommends $need >/dev/null
fi

env_triple=$(echo "$triple" | tr 'a-z-' 'A-Z_')
build_std=()
if [ -z "$std_from_source" ]; then
    rustup target list --installed | grep -qx "$triple" || rustup target add "$triple"
else
    rustup component list --installed | grep -q '^rust-src' || rustup component add rust-src
    # std's unwind crate links a static libunwind on musl; gcc's libgcc_eh
    # is that unwinder (ARM EHABI) for this very architecture.
    unwind_dir=$target_dir/$triple-unwind
    mkdir -p "$unwind_dir"
    ln -sf "$("$gnu-gcc" -print-file-name=libgcc_eh.a)" "$unwind_dir/libunwind.a"
    # Not self-contained: gcc links, -B puts musl's crt1.o/crti.o/crtn.o
    # ahead of glibc's, -L musl's libc.a ahead of glibc's.
    export "CARGO_TARGET_${env_triple}_RUSTFLAGS=-C link-self-contained=no -C link-arg=-B$musl_dir -L native=$musl_dir -L native=$(realpath "$unwind_dir")"
    export RUSTC_BOOTSTRAP=1
    build_std=(-Z build-std=std,panic_abort)
fi

if [ "$mode" = test ]; then
    # The runner in .cargo/config.toml runs each test binary under qemu-user,
    # on the same CPU as above. Optimized: emulation makes unoptimized code
    # some 20 times slower than native, past the time bounds some tests set
    # (scan's pathological_gaps_stay_bounded); debug assertions stay on.
    export CARGO_PROFILE_DEV_OPT_LEVEL=2
    exec "$cargo" test --locked --target "$triple" "${build_std[@]}" --lib --bins -- --test-threads=2
fi

"$cargo" build --locked --release --target "$triple" "${build_std[@]}"
bin=$target_dir/$triple/release/pimail
"$gnu-strip" -o "$bin.stripped" "$bin"

# The binary must be one a board runs: static, for the right architecture.
fail() { echo "cross.sh: $bin: $*" >&2; exit 1; }
if "$gnu-readelf" -l "$bin" | grep -q INTERP; then fail "dynamically linked"; fi
if [ "$arch" = AArch64 ]; then
    "$gnu-readelf" -h "$bin" | grep -q 'Machine: *AArch64' || fail "not an AArch64 ELF"
else
    found=$("$gnu-readelf" -A "$bin" | sed -n 's/^ *Tag_CPU_arch: *//p')
    if [ "$arch" = v6 ] && [ "$found" = v7 ]; then
        # ring's assembly files (OpenSSL perlasm) declare `.arch armv7-a` for
        # their NEON routines, which ring runs only when the kernel reports
        # NEON (AT_HWCAP), so the linked binary's merged tag says v7. Any
        # other input tagged v7 would be a real ARMv7 dependency.
        for o in "$target_dir/$triple"/release/build/ring-*/out/*.o; do
            tag=$("$gnu-readelf" -A "$o" | sed -n 's/^ *Tag_CPU_arch: *//p')
            case $tag:$(basename "$o") in
                v7:*-linux32.o) ;;
                v7:*) fail "$o is ARMv7 code" ;;
            esac
        done
        found="v6 (tag v7 from ring's NEON assembly)"
    elif [ "$found" != "$arch" ]; then
        fail "Tag_CPU_arch is '$found', expected $arch"
    fi
    arch=$found
fi
# build.rs links the functions in board/hot-text.ld first; a linker that
# ignored the script would cost the scanner megabytes of resident code.
hot=$("$gnu-readelf" -SW "$bin" | sed -n 's/.* \.text\.hot *PROGBITS *[0-9a-f]* [0-9a-f]* \([0-9a-f]*\) .*/\1/p')
[ -n "$hot" ] && [ $((16#$hot)) -gt 65536 ] || fail "no .text.hot section of hot functions (build.rs)"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
emulate=("$qemu" -cpu "$cpu")
"${emulate[@]}" "$bin" --version | grep -q '^pimail ' || fail "--version under ${emulate[*]}"
# init makes a key pair and a self-signed certificate: ring's assembly runs.
"${emulate[@]}" "$bin" init --data-dir "$scratch/var" --domain pimail.test --dev >/dev/null \
    || fail "init under ${emulate[*]}"
"${emulate[@]}" "$bin" check-config --config "$scratch/var/pimail.toml" >/dev/null \
    || fail "check-config under ${emulate[*]}"
size=$(stat -c %s "$bin.stripped")
echo "$triple: $bin, $arch, static; --version, init and check-config ran under ${emulate[*]}"
echo "$triple: stripped $size bytes ($((size / 1024)) KiB), hot functions first: $((16#$hot / 1024)) KiB"
