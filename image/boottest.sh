#!/usr/bin/env bash
# `make image-test`: boots a copy of the SD image under qemu-system-aarch64
# (virt machine, 2 vCPUs, 512 MB, user networking with guest ports
# forwarded to 127.0.0.1 only), the way a user would: the settings file on
# the boot partition is filled in first. Then checks that pimail greets on
# SMTP, POP3 and IMAP, takes a message for the first-boot admin over SMTP
# and gives it back (image/mailcheck.py); and, after power-off, that the
# password was scrubbed from the card, the DNS records were written beside
# it and the root partition was grown. Prints `N passed, N failed`.
#
# usage: image/boottest.sh IMAGE   (READ_BACK=imap|pop3, PORT_BASE, BOOT_TIMEOUT)
set -uo pipefail
img=$(realpath "$1")
cd "$(dirname "$0")/.."
# How the test reads the message back: pop3, or imap once it is served.
read_back=${READ_BACK:-pop3}
# Forwarded ports: PORT_BASE + guest port, on a base where all of them are
# free (the tests of `make test` use 20000-59000 in steps of 1000).
port_base=${PORT_BASE:-$(python3 - <<'PY'
import random, socket
for _ in range(200):
    base = random.randrange(60000, 64000)
    try:
        for p in (25, 110, 143, 465, 587, 993, 995):
            with socket.socket() as s:
                s.bind(("127.0.0.1", base + p))
        print(base)
        break
    except OSError:
        pass
PY
)}
timeout=${BOOT_TIMEOUT:-420}
work=$(dirname "$img")/image-test
rm -rf "$work"; mkdir -p "$work"
pass=0; fail=0; skip=0
check() {  # check NAME CONDITION...
    local name=$1; shift
    if "$@"; then echo "ok $name"; pass=$((pass + 1)); else echo "FAIL $name"; fail=$((fail + 1)); fi
}
start=$(date +%s)

# The card: a sparse copy, 512 MiB larger than the image, as a bigger SD card would be.
disk="$work/sd.img"
cp --sparse=always "$img" "$disk"
truncate -s +512M "$disk"
p2_before=$(sfdisk -d "$disk" | sed -n 's/.*start= *\([0-9]*\), size= *\([0-9]*\), type=83.*/\2/p')
password="it-$(head -c 9 /dev/urandom | base64 | tr '+/' 'xy')"
user=admin@pimail.test
sed -e 's/^domain = .*/domain = pimail.test/' -e "s/^admin = .*/admin = $user/" \
    -e "s/^admin_password =.*/admin_password = $password/" board/pimail.txt > "$work/pimail.txt"
mcopy -o -i "$disk@@4M" "$work/pimail.txt" ::pimail.txt
kernel=$(mdir -b -i "$disk@@4M" :: | sed -n 's|^::/||; /^vmlinuz-/p' | sort -V | tail -1)
initrd=initrd.img-${kernel#vmlinuz-}
mcopy -o -i "$disk@@4M" "::$kernel" "::$initrd" "$work/"

fwd=""
for p in 25 110 143 465 587 993 995; do fwd="$fwd,hostfwd=tcp:127.0.0.1:$((port_base + p))-:$p"; done
# restrict=on: the guest reaches nothing but these forwards (no NTP, no DNS
# to the outside), DHCP still works.
qemu-system-aarch64 -M virt -cpu cortex-a53 -smp 2 -m 512M -nographic -no-reboot \
    -kernel "$work/$kernel" -initrd "$work/$initrd" \
    -append "$(cat board/generic-arm64/cmdline.txt | sed 's/ console=tty0//') panic=-1" \
    -drive if=none,id=hd,file="$disk",format=raw -device virtio-blk-pci,drive=hd \
    -netdev "user,id=n0,restrict=on$fwd" -device virtio-net-pci,netdev=n0,romfile= \
    -monitor none -serial "file:$work/console.log" -display none &
qemu=$!
trap 'kill $qemu 2>/dev/null' EXIT
sleep 2
kill -0 $qemu 2>/dev/null || { echo "FAIL qemu did not start"; echo "0 passed, 1 failed"; exit 1; }

python3 image/mailcheck.py --port-base "$port_base" --user "$user" --password "$password" \
    --read-back "$read_back" --timeout "$timeout" --qemu-pid $qemu --hostname mail.pimail.test | tee "$work/mailcheck.log"
pass=$((pass + $(grep -c '^ok ' "$work/mailcheck.log")))
fail=$((fail + $(grep -c '^FAIL ' "$work/mailcheck.log")))
skip=$((skip + $(grep -c '^skip ' "$work/mailcheck.log")))
boot_s=$(( $(date +%s) - start ))
check "firstboot printed the DNS records on the console" grep -q "IN MX 10 mail.pimail.test" "$work/console.log"

# Power off (the guest fsynced what firstboot wrote), then look at the card.
kill $qemu 2>/dev/null; wait $qemu 2>/dev/null
mtype -i "$disk@@4M" ::pimail.txt > "$work/pimail.after.txt" 2>/dev/null
check "password scrubbed from the boot partition" \
    bash -c "grep -q '^admin_password =\s*\$' '$work/pimail.after.txt' && ! grep -qF -- '$password' '$work/pimail.after.txt'"
check "DNS records written to the boot partition" \
    bash -c "mtype -i '$disk@@4M' ::pimail-dns.txt | grep -q 'v=spf1'"
p2_after=$(sfdisk -d "$disk" | sed -n 's/.*start= *\([0-9]*\), size= *\([0-9]*\), type=83.*/\2/p')
check "root partition grown to the card ($p2_before -> $p2_after sectors)" test "${p2_after:-0}" -gt "${p2_before:-0}"

if [ "$fail" -gt 0 ]; then
    echo "--- last 60 lines of $work/console.log"
    tail -n 60 "$work/console.log" | tr -d '\r'
fi
echo "image-test: mail checks done after ${boot_s} s, all done after $(( $(date +%s) - start )) s"
echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
