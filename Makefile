# brick — see README.md. Every target is safe to re-run.
GO       ?= go
BIN      ?= bin
DEV_DIR  ?= $(CURDIR)/.brick-dev
PKGS_UNIT = $(shell $(GO) list ./... | grep -v /chaos)

.PHONY: build test unit chaos up down proto lint fuzz bench clean deps

build:
	$(GO) build -o $(BIN)/brickd ./cmd/brickd
	$(GO) build -o $(BIN)/brick ./cmd/brick

# The README's test command: lint, unit tests with -race, then the chaos
# scenarios against real processes.
test:
	bash scripts/test.sh

unit:
	$(GO) test -race -count=1 $(PKGS_UNIT)

chaos:
	$(GO) test -count=1 -timeout 30m -v ./chaos/...

# The README's main-job command: a three-daemon cluster on 127.0.0.1-3.
up: build
	BRICK_DEV_DIR=$(DEV_DIR) bash scripts/up.sh

down:
	BRICK_DEV_DIR=$(DEV_DIR) bash scripts/down.sh

proto:
	bash scripts/proto.sh

lint:
	bash scripts/lint.sh

# Short fuzzing of every decoder (longer: FUZZTIME=5m make fuzz).
fuzz:
	bash scripts/fuzz.sh

# Go micro-benchmarks, then the file-system workload on local disk, the go-fuse
# ceiling and a replica-3 brick volume (scripts/bench.sh, docs/benchmarks.md).
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...
	bash scripts/bench.sh

# The managed Docker plugin, built locally from a static brickd and created
# with docker plugin create (PLUGIN=name, default brick; docs/docker.md).
.PHONY: docker-plugin
docker-plugin:
	bash scripts/docker-plugin.sh $(PLUGIN)

clean:
	rm -rf $(BIN)
