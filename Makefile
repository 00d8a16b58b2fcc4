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
	aarch64 armv7 armv6 cross test-aarch64 image image-test image-deps

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

# Spam filter against bogofilter on the SpamAssassin corpus (fetched, cached).
bench-spam: release
	bash benches/spam/run.sh

# Static ARM binaries (musl), each with its Debian cross compiler as linker
# and as ring's C compiler (see .cargo/config.toml).
aarch64:  # Pi 3/4/Zero 2 W with a 64-bit OS, generic arm64 boards
	@$(MAKE) --no-print-directory cross TRIPLE=aarch64-unknown-linux-musl GNU=aarch64-linux-gnu
armv7:    # Pi 2/3/Zero 2 W with 32-bit Raspberry Pi OS
	@$(MAKE) --no-print-directory cross TRIPLE=armv7-unknown-linux-musleabihf GNU=arm-linux-gnueabihf
armv6:    # Pi 1, Zero W
	@$(MAKE) --no-print-directory cross TRIPLE=arm-unknown-linux-musleabihf GNU=arm-linux-gnueabihf

cross:
	@command -v $(GNU)-gcc >/dev/null || apt-get install -y -qq --no-install-recommends gcc-$(GNU) >/dev/null
	@rustup target list --installed | grep -qx $(TRIPLE) || rustup target add $(TRIPLE)
	$(CARGO) build --locked --release --target $(TRIPLE)
	@bin=$(TARGET_DIR)/$(TRIPLE)/release/pimail; \
	$(GNU)-strip -o $$bin.stripped $$bin; \
	if $(GNU)-readelf -l $$bin | grep -q INTERP; then link=dynamic; else link=static; fi; \
	echo "$(TRIPLE): $$bin, $$link, stripped $$(stat -c %s $$bin.stripped) bytes ($$(( $$(stat -c %s $$bin.stripped) / 1024 )) KiB)"

# The unit tests (library and binary) for aarch64, run under qemu-user.
test-aarch64:
	@command -v aarch64-linux-gnu-gcc >/dev/null || apt-get install -y -qq --no-install-recommends gcc-aarch64-linux-gnu >/dev/null
	@command -v qemu-aarch64 >/dev/null || apt-get install -y -qq --no-install-recommends qemu-user >/dev/null
	@rustup target list --installed | grep -qx aarch64-unknown-linux-musl || rustup target add aarch64-unknown-linux-musl
	$(CARGO) test --locked --target aarch64-unknown-linux-musl --lib --bins -- --test-threads=2

# Host packages for the image (needs root): mmdebstrap with qemu-user
# binfmt for the arm64 maintainer scripts, image tools, qemu-system for
# image-test. qemu comes from bookworm-backports where Debian 12 has it,
# so that bookworm's 7.2 does not replace (and remove) a backports qemu-utils.
image-deps:
	bash image/host-deps.sh

# The flashable SD image: $(IMAGE_DIR)/pimail-arm64.img.zst (+ .sha256).
# The root file system is cached in $(IMAGE_CACHE); a new binary does not rebuild it.
image: image-deps aarch64
	IMAGE_CACHE=$(IMAGE_CACHE) bash image/assemble.sh \
		$(TARGET_DIR)/aarch64-unknown-linux-musl/release/pimail $(IMAGE_DIR)

# Boots the image under qemu and sends and reads back a message.
image-test: image
	READ_BACK=$(IMAGE_TEST_READ) bash image/boottest.sh $(IMAGE_DIR)/pimail-arm64.img

clean:
	$(CARGO) clean
	rm -rf $(VAR)
