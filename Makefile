# The two commands of the README, and a few conveniences.
.PHONY: run test build bench

run:
	scripts/run.sh

test:
	scripts/test.sh

build:
	scripts/setup.sh

bench: build
	. scripts/env.sh && $$CARGO_TARGET_DIR/release/oni bench env --env keyroom-small --threads 1
	. scripts/env.sh && $$CARGO_TARGET_DIR/release/oni bench e2e --config configs/keyroom.toml --seconds 30
