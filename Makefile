# botd — the two commands a new machine needs are `make run` and `make test`.

PREFIX   ?= /usr/local
DATA_DIR ?= /var/lib/botd
CARGO    ?= cargo
BIN      := target/release/botd
# PostgreSQL support (several instances on one database): see Cargo.toml's `postgres` feature.
FEATURES ?= postgres

.PHONY: run build test test-deps check install bench bench-nlu pi test-arm smoke-arm clean

## run: build the release binary and serve ./data on http://localhost:3000
run: build
	./$(BIN) run --data ./data

build:
	$(CARGO) build --release --locked --features "$(FEATURES)"

## test: the whole suite (unit, engine transcripts, real-HTTP integration tests, several instances on a private PostgreSQL cluster), then the library's tests of the SQLite-only build
test: test-deps
	$(CARGO) test --locked --all-targets --features "$(FEATURES)"
	$(CARGO) test --locked --lib

## test-deps: the Debian packages the tests use (node-lodash), installed when missing
test-deps:
	tests/deps

## check: formatting, lints, and `botd check` on the bundled bots
check:
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets --features "$(FEATURES)" -- -D warnings
	$(CARGO) clippy --locked --all-targets -- -D warnings
	$(CARGO) run --locked --quiet -- check --data ./data

## install: binary, systemd unit, and the data folder, 0700 (an existing one is never overwritten)
install: build
	install -D -s -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/botd
	install -D -m 0644 README.md $(DESTDIR)$(PREFIX)/share/doc/botd/README.md
	install -D -m 0644 NOTICE $(DESTDIR)$(PREFIX)/share/doc/botd/NOTICE
	install -d $(DESTDIR)/etc/systemd/system
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@DATA_DIR@|$(DATA_DIR)|g' systemd/botd.service > $(DESTDIR)/etc/systemd/system/botd.service
	@if [ -e "$(DESTDIR)$(DATA_DIR)/bots" ]; then \
		echo "$(DESTDIR)$(DATA_DIR) exists: left as it is"; \
	else \
		install -d -m 0700 $(DESTDIR)$(DATA_DIR) && cp -R data/bots $(DESTDIR)$(DATA_DIR)/bots && echo "installed the bundled bots into $(DESTDIR)$(DATA_DIR)"; \
	fi
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ]; then \
		id -u botd >/dev/null 2>&1 || useradd --system --home-dir $(DATA_DIR) --shell /usr/sbin/nologin botd; \
		chown -R botd:botd $(DATA_DIR); \
		chmod 0700 $(DATA_DIR); \
		systemctl daemon-reload; \
		echo "now: systemctl enable --now botd"; \
	fi

## bench: speed, footprint and scale of botd against a bare ceiling on the same HTTP layer (and the ARM binary sizes), written to bench/RESULTS.md
bench:
	packaging/pi build
	$(CARGO) build --release --locked --features "$(FEATURES)" --bin botd --example bench --example bench-ceiling
	./target/release/examples/bench --botd $(BIN) --profile-botd $(BIN) --ceiling target/release/examples/bench-ceiling --out bench/RESULTS.md

## bench-nlu: NLU accuracy and speed on ../shared/nlu-bench, written to bench/NLU.md
bench-nlu:
	$(CARGO) run --release --locked --example nlu -- bench --data ../shared/nlu-bench --out bench/NLU.md

## pi: Raspberry Pi builds (aarch64, armv7): .deb packages and tarballs in target/pi/
pi:
	packaging/pi build

## test-arm: the whole test suite for aarch64, under qemu-user
test-arm: test-deps
	packaging/pi test

## smoke-arm: the aarch64 release binary end to end under qemu-user (Converse, Messenger, Telegram, SIGTERM)
smoke-arm:
	packaging/pi smoke

clean:
	$(CARGO) clean
