# pimail: `make run` starts a dev instance, `make test` runs every test.
CARGO ?= cargo
VAR ?= var
PORT_BASE ?= 10000
DEMO_USER ?= demo@pimail.test
DEMO_PASSWORD ?= demo-password

TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)
# Where the arm64 root file system of the image is cached between builds.
IMAGE_CACHE ?= /var/cache/pimail-image
IMAGE_DIR ?= $(TARGET_DIR)/image
# How `make image-test` reads the test message back: pop3 or imap.
IMAGE_TEST_READ ?= imap

.PHONY: build release run test lint bench bench-spam clean \
	hot-text aarch64 armv7 armv6 test-aarch64 test-armv7 test-armv6 image image-test image-boot image-deps

build:
	$(CARGO) build --locked

release:
	$(CARGO) build --locked --release
	@ls -l target/release/pimail

# A dev instance in ./var: loopback only, ports PORT_BASE + standard port.
run: build
	@if [ ! -f $(VAR)/pimail.toml ]; then \
		./target/debug/pimail init --data-dir $(VAR) --domain pimail.test --dev --port-base $(PORT_BASE) && \
		echo '$(DEMO_PASSWORD)' | ./target/debug/pimail user add $(DEMO_USER) --password-stdin --config $(VAR)/pimail.toml; \
	fi
	@echo "demo user: $(DEMO_USER)  password: $(DEMO_PASSWORD)"
	@echo "SMTP 127.0.0.1:$$(( $(PORT_BASE) + 25 ))  submission :$$(( $(PORT_BASE) + 587 ))/:$$(( $(PORT_BASE) + 465 ))  IMAP :$$(( $(PORT_BASE) + 143 ))/:$$(( $(PORT_BASE) + 993 ))  POP3 :$$(( $(PORT_BASE) + 110 ))/:$$(( $(PORT_BASE) + 995 ))"
	@echo "try: swaks --server 127.0.0.1:$$(( $(PORT_BASE) + 25 )) --to $(DEMO_USER)"
	./target/debug/pimail serve --config $(VAR)/pimail.toml

test:
	$(CARGO) build --locked
	$(CARGO) test --locked -- --test-threads=2

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

bench:
	bash benches/run.sh

# Refreshes board/hot-text.ld, the functions linked first (see build.rs),
# from what a scan of the scanner benchmark's corpus executes: run
# `bash benches/scan/run.sh` once first for the corpus. Needs valgrind.
HOT_TARGET_DIR ?= $(TARGET_DIR)/hot-text
SCAN_BENCH_DIR ?= $(TARGET_DIR)/scan-bench
hot-text:
	CARGO_TARGET_DIR=$(HOT_TARGET_DIR) CARGO_PROFILE_RELEASE_STRIP=false \
		CC_x86_64_unknown_linux_musl=gcc $(CARGO) build --locked --release --target x86_64-unknown-linux-musl
	python3 board/hot-text.py -- $(HOT_TARGET_DIR)/x86_64-unknown-linux-musl/release/pimail \
		scan --signatures $(SCAN_BENCH_DIR)/sigs-1x $(SCAN_BENCH_DIR)/corpus

# Spam filter against bogofilter on the SpamAssassin corpus (fetched, cached).
bench-spam: release
	bash benches/spam/run.sh

# Static ARM binaries (musl); board/cross.sh says how each is built (the
# 32-bit ones compile std from source: rustup has no std for them) and
# checks the result under qemu-user.
aarch64:  # Pi 3/4/Zero 2 W with a 64-bit OS, generic arm64 boards
	bash board/cross.sh build aarch64-unknown-linux-musl
armv7:    # Pi 2/3/Zero 2 W with 32-bit Raspberry Pi OS
	bash board/cross.sh build armv7-unknown-linux-musleabihf
armv6:    # Pi 1, Zero W (ARMv6, soft float)
	bash board/cross.sh build arm-unknown-linux-musleabi

# The unit tests (library and binary) for each ARM target, under qemu-user.
test-aarch64:
	bash board/cross.sh test aarch64-unknown-linux-musl
test-armv7:
	bash board/cross.sh test armv7-unknown-linux-musleabihf
test-armv6:
	bash board/cross.sh test arm-unknown-linux-musleabi

# Host packages for the image (needs root): mmdebstrap with qemu-user
# binfmt for the arm64 maintainer scripts, image tools, qemu-system for
# image-test, qemu-user for board/cross.sh's checks. qemu comes from
# bookworm-backports where Debian 12 has it, so that bookworm's 7.2 does
# not replace (and remove) a backports qemu-utils.
image-deps:
	bash image/host-deps.sh

# The flashable SD image: $(IMAGE_DIR)/pimail-arm64.img.zst (+ .sha256).
# The root file system is cached in $(IMAGE_CACHE); a new binary does not rebuild it.
image: image-deps aarch64
	IMAGE_CACHE=$(IMAGE_CACHE) bash image/assemble.sh \
		$(TARGET_DIR)/aarch64-unknown-linux-musl/release/pimail $(IMAGE_DIR)

# Boots the image under qemu and sends and reads back a message.
image-test: image
	@$(MAKE) --no-print-directory image-boot

# The boot test alone, of the image `make image` last built.
image-boot:
	READ_BACK=$(IMAGE_TEST_READ) bash image/boottest.sh $(IMAGE_DIR)/pimail-arm64.img

clean:
	$(CARGO) clean
	rm -rf $(VAR)
