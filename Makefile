# pimail: `make run` starts a dev instance, `make test` runs every test.
CARGO ?= cargo
VAR ?= var
PORT_BASE ?= 10000
DEMO_USER ?= demo@pimail.test
DEMO_PASSWORD ?= demo-password

.PHONY: build release run test lint bench bench-spam clean

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
	@echo "SMTP: 127.0.0.1:$$(( $(PORT_BASE) + 25 ))   (try: swaks --server 127.0.0.1:$$(( $(PORT_BASE) + 25 )) --to $(DEMO_USER))"
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

clean:
	$(CARGO) clean
	rm -rf $(VAR)
