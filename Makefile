# cropq — see README.md. Every target works on a fresh machine: `make tools`
# installs what the tests need into .tools/bin (and redis-server from Debian).

SHELL        := bash
TOOLS        := $(CURDIR)/.tools/bin
export PATH  := $(TOOLS):$(PATH)
GO           ?= go
PKGS         := ./...
# Two cores: run two test binaries at a time. The end-to-end package
# (cmd/cropq) takes about 9 minutes alone here: its timeout leaves room
# for a slower machine.
TEST_FLAGS   ?= -p 2 -timeout 20m
# An execution count, not a duration: Go 1.26's fuzz coordinator can fail a
# duration run at its deadline with "context deadline exceeded" and no crasher
# (golang/go#75804, fixed in Go 1.27).
FUZZTIME     ?= 30000x

.PHONY: all build run test test-unit fuzz fuzz-long lint vuln tools bench bench-tracing bench-quota bench-enqueue bench-backlog bench-backlog-flood bench-ui bench-dedup bench-report bench-replay bench-resync bench-manifest chaos clean help

all: lint test

help:
	@echo "make run    - run the whole system locally (Redis, S3, API emulator, worker) and crop the samples"
	@echo "make test   - install test servers if missing, then run every test and short fuzz runs"
	@echo "make test-unit - the fast tier alone (go test -short): no servers, under a minute"
	@echo "make lint   - gofmt, go vet, staticcheck"
	@echo "make vuln   - govulncheck (needs vuln.go.dev)"
	@echo "make bench  - pipeline, tracing overhead and memory benchmark table (ratios against baselines of the same run)"
	@echo "make bench-tracing - the pipeline with tracing on (100 % sampled, OTLP to a discarding endpoint) vs off, CPU-bound and with the vendor's latency: target ≤ 2 % fewer crops/s (about 3½ minutes)"
	@echo "make bench-quota - the fleet against a shared API quota (about 5 minutes)"
	@echo "make bench-enqueue - bulk enqueue: library and HTTP vs raw asynq; Redis memory with and without the claim check"
	@echo "make bench-backlog - priority lanes, tenant shares, ETA, Redis bytes per queued request (backlog vs one FIFO queue)"
	@echo "make bench-backlog-flood - part 6 of bench-backlog alone (about 2 minutes): one tenant's urgent flood against another's normal requests"
	@echo "make bench-ui - the web UI's batch grid: server time of a 200-result page in a 100,000-request batch, the index's Redis bytes"
	@echo "make bench-report - a 1,000,000-line batch report: streamed, over HTTP and into S3, lines/s and peak heap vs reading the records one by one and the whole list"
	@echo "make bench-replay - replaying 100,000 failed requests: admission time against enqueueing as many, the dry run, the failures page"
	@echo "make bench-dedup - result reuse and coalescing: paid calls and throughput over a catalogue with repeats (off vs on vs fetch)"
	@echo "make bench-resync - the nightly re-sync: 10,000 new ids over 200 stored crops at Q = 5/s (vs the paid window and a bare CopyObject loop), new listings behind it, 5 % photos replaced, an origin without validators"
	@echo "make bench-manifest - manifests: Redis bytes per waiting line of a 1,000,000-line manifest, and the reader's lines per second (vs enqueue --file)"
	@echo "make chaos  - about 1,430 requests (200 of them a manifest) through worker kills, a frozen worker, clocks off by 10 min, kill -9 of Redis, Redis at maxmemory, a MinIO outage, faults, a rolling restart"
	@echo "make fuzz-long - longer fuzzing"

tools:
	@bash scripts/install-tools.sh

build:
	$(GO) build -o bin/cropq ./cmd/cropq
	$(GO) build -o bin/cropq-dev ./cmd/cropq-dev

run: tools
	$(GO) run ./cmd/cropq-dev dev

test: tools
	$(GO) test $(TEST_FLAGS) $(PKGS)
	cd deploy && $(GO) test $(TEST_FLAGS) ./...
	@$(MAKE) --no-print-directory fuzz

# The fast tier alone: no server started, no binary built (README, "Tests").
test-unit:
	$(GO) test -short $(TEST_FLAGS) $(PKGS)
	cd deploy && $(GO) test -short $(TEST_FLAGS) ./...

# Each fuzz target for FUZZTIME (a few seconds in CI; `make fuzz-long` for more).
FUZZ_TARGETS := ./cropapi:FuzzDecodeResponse ./cropapi:FuzzValidate ./tasks:FuzzParseAndValidate ./internal/httpapi:FuzzDecodeRequest ./internal/strictjson:FuzzUnmarshal ./internal/netguard:FuzzCanonical
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; fn=$${t##*:}; \
		echo "fuzz $$pkg $$fn ($(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) $$pkg > /tmp/cropq-fuzz.log 2>&1 || { cat /tmp/cropq-fuzz.log; exit 1; }; \
	done

fuzz-long:
	@$(MAKE) --no-print-directory fuzz FUZZTIME=3000000x

lint: tools
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	staticcheck $(PKGS)
	cd deploy && $(GO) vet ./... && staticcheck ./...

# Needs vuln.go.dev, which this project's CI machine cannot reach: its own target.
vuln: tools
	govulncheck $(PKGS)

# The full chaos run: 1,000 requests (+200 read from a manifest, +100 enqueued during the maxmemory phase), MinIO away 30 s (a reduced run is part of make test).
chaos: tools
	CROPQ_CHAOS_N=1000 CROPQ_CHAOS_OUTAGE=30s $(GO) test -count=1 -timeout 30m -run '^TestChaos$$' -v ./cmd/cropq

bench-enqueue: tools
	$(GO) run ./cmd/cropq-bench enqueue

bench-backlog: tools
	$(GO) run ./cmd/cropq-bench backlog

bench-backlog-flood: tools
	$(GO) run ./cmd/cropq-bench backlog-flood

bench-ui: tools
	$(GO) run ./cmd/cropq-bench ui

bench-report: tools
	$(GO) run ./cmd/cropq-bench report

bench-replay: tools
	$(GO) run ./cmd/cropq-bench replay

bench-dedup: tools
	$(GO) run ./cmd/cropq-bench dedup

bench-manifest: tools
	$(GO) run ./cmd/cropq-bench manifest

bench-resync: tools
	$(GO) run ./cmd/cropq-bench resync

bench-quota: tools
	$(GO) run ./cmd/cropq-bench quota

bench-tracing: tools
	$(GO) run ./cmd/cropq-bench tracing

bench: tools
	$(GO) run ./cmd/cropq-bench all

clean:
	rm -rf bin
