# The two commands a newcomer needs: `make run` and `make test`. Both install what they need.
CARGO ?= cargo
EXAMPLES ?= examples/specs

.PHONY: run test test-repeat bench build deps schemas clean

deps:
	@scripts/ensure-postgres.sh
	@scripts/ensure-rust-tools.sh

build:
	$(CARGO) build --release

## run: pgsched on examples/specs/ with the embedded default PostgreSQL (under .pgsched/).
run: deps build
	@scripts/run-examples.sh $(EXAMPLES)

## test: formatting, lints, and every test (unit and integration, against a private PostgreSQL).
test: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) test --all-targets

## test-repeat: the integration tests N times each, printing every failure (N=30, TESTS="timeouts", HOG=1 for a CPU hog beside every other run).
test-repeat: deps
	@scripts/test-repeat.sh

## bench: the benchmarks; they print their figures.
bench: deps
	$(CARGO) bench

## schemas: regenerate schemas/ after changing the spec model.
schemas:
	$(CARGO) run -q -- schema --out schemas

clean:
	$(CARGO) clean
	@# The embedded cluster's files live under /var/tmp when the postgres user cannot enter this
	@# directory (see the README); .pgsched/data is then a link to them.
	if [ -L .pgsched/data ]; then rm -rf "$$(dirname "$$(readlink .pgsched/data)")"; fi
	rm -rf .pgsched
