# The two commands a newcomer needs: `make demo` and `make test`.
GO      ?= go
BIN     := bin
# Stamped into both binaries (internal/buildinfo); the Dockerfile passes them as build args.
VERSION ?= $(shell git describe --tags --match 'v[0-9]*' --dirty 2>/dev/null || echo v0.0.0-dev)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
DATE    ?= $(shell TZ=UTC git log -1 --format=%cd --date=format-local:%Y-%m-%dT%H:%M:%SZ 2>/dev/null || echo unknown)
BUILDINFO := github.com/certprov/certprov-adapter/internal/buildinfo
LDFLAGS := -s -w -X $(BUILDINFO).version=$(VERSION) -X $(BUILDINFO).commit=$(COMMIT) -X $(BUILDINFO).date=$(DATE)
# Static, reproducible binaries: the same build the Dockerfile performs.
export CGO_ENABLED ?= 0

STATICCHECK_VERSION := v0.8.2

.PHONY: all build demo test test-short test-deploy fuzz vet lint fmt-check clean image image-emulator release bench bench-load

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/certprov-adapter ./cmd/certprov-emulator

# Emulator + adapter + built-in CA as separate processes on loopback; exits 0 only if every
# simulated device and user received a verified certificate.
demo: build
	bash deploy/local/demo.sh

# Every test, under the race detector (which needs cgo), then the deployment tests.
test: vet
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 25m ./...
	$(MAKE) test-deploy

# Dockerfile build, Kubernetes manifests, Helm chart, systemd unit, release archives
# (deploy/test, a module of its own so that the daemon's go.mod does not pull Helm).
test-deploy:
	cd deploy/test && $(GO) vet ./... && $(GO) test -count=1 -timeout 15m ./...

test-short:
	CGO_ENABLED=1 $(GO) test -race -short -count=1 ./...

# Every fuzz target for FUZZTIME each (FUZZTIME=5m for a longer run). go test -fuzz takes one
# package and one target at a time, so the targets are listed first (-short: crashtest's TestMain
# builds the adapter otherwise); a new FuzzXxx runs without being named here. A failing input is
# written to the package's testdata/fuzz/FuzzXxx/, where it stays as a regression seed.
FUZZTIME ?= 10s
fuzz:
	@list=$$(mktemp) && trap 'rm -f "$$list"' EXIT && \
	$(GO) test -short -list '^Fuzz' ./... > "$$list" || { cat "$$list"; exit 1; }; \
	targets=$$(awk '/^Fuzz/ { t[n++] = $$1 } /^ok / { for (i = 0; i < n; i++) print $$2 ":" t[i]; n = 0 }' "$$list"); \
	count=0; failed=; start=$$(date +%s); \
	for pt in $$targets; do \
		pkg=$${pt%:*}; target=$${pt#*:}; count=$$((count + 1)); \
		echo "== $$target ($$pkg)"; \
		$(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) "$$pkg" || failed="$$failed $$target"; \
	done; \
	echo "fuzz: $$count targets, $(FUZZTIME) each, $$(( $$(date +%s) - start ))s"; \
	if [ -n "$$failed" ]; then echo "fuzz: failed:$$failed"; exit 1; fi

# Go benchmarks of the hot paths (CSR, templates, notifications, local CA ledger, journal, …),
# benchstat-comparable: make bench > old.txt; change; make bench > new.txt; benchstat old.txt new.txt.
# BENCH selects benchmarks, BENCHCOUNT repeats them (benchstat wants several).
BENCH      ?= .
BENCHCOUNT ?= 6
BENCHPKGS  ?= ./internal/...
bench:
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchmem -count $(BENCHCOUNT) $(BENCHPKGS)

# The load harness (docs/performance.md): the emulator, the adapter and the reference driver as
# processes on loopback, every scenario at LOAD_SCALE (0.1: about 10 minutes on 2 cores; 1: the
# full 20,000/10,000 processes), report in LOAD_OUT. PostgreSQL scenarios need
# CERTPROV_TEST_POSTGRES_DSN (eval "$$(deploy/local/postgres.sh start)"). More flags: LOAD_FLAGS,
# e.g. LOAD_FLAGS='--scenarios a-sqlite --runs 3 --profile-seconds 20'.
LOAD_SCALE ?= 0.1
LOAD_OUT   ?= load-report
LOAD_FLAGS ?=
bench-load: build
	$(BIN)/certprov-emulator load --adapter $(BIN)/certprov-adapter --scale $(LOAD_SCALE) --out $(LOAD_OUT) $(LOAD_FLAGS)

vet: fmt-check
	$(GO) vet ./...

# staticcheck at a pinned version, installed into GOPATH/bin on first use.
STATICCHECK := $(shell $(GO) env GOPATH)/bin/staticcheck
lint: vet
	@$(STATICCHECK) -version 2>/dev/null | grep -q '($(STATICCHECK_VERSION:v%=%))' || \
		$(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	$(STATICCHECK) ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# The container image (needs a Docker engine). IMAGE_TAG defaults to the version without its "v".
IMAGE     ?= certprov-adapter
IMAGE_TAG ?= $(VERSION:v%=%)
DOCKER    ?= docker
DOCKER_BUILD = $(DOCKER) build --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) --build-arg DATE=$(DATE)
image:
	$(DOCKER_BUILD) --target adapter -t $(IMAGE):$(IMAGE_TAG) .
image-emulator:
	$(DOCKER_BUILD) --target emulator -t $(IMAGE)-emulator:$(IMAGE_TAG) .

# Release archives for Linux: dist/certprov-adapter_VERSION_linux_ARCH.tar.gz and SHA256SUMS.
# Reproducible: the same commit gives the same bytes (no VCS stamp beyond COMMIT and DATE; file
# times are the commit's).
DIST       ?= dist
PLATFORMS  ?= linux/amd64 linux/arm64
EPOCH      := $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
RELEASE_FILES := LICENSE README.md configs/example.yaml deploy/systemd/certprov-adapter.service
release:
	rm -rf $(DIST) && mkdir -p $(DIST)
	set -e; for p in $(PLATFORMS); do \
		os=$${p%/*}; arch=$${p#*/}; name=certprov-adapter_$(VERSION)_$${os}_$${arch}; \
		GOFLAGS=-buildvcs=false GOOS=$$os GOARCH=$$arch $(MAKE) --no-print-directory build BIN=$(DIST)/$$name; \
		cp $(RELEASE_FILES) $(DIST)/$$name/; \
		tar -C $(DIST) --sort=name --owner=0 --group=0 --numeric-owner --mtime=@$(EPOCH) \
			-cf - $$name | gzip -9n > $(DIST)/$$name.tar.gz; \
		rm -rf $(DIST)/$$name; \
	done
	cd $(DIST) && sha256sum *.tar.gz > SHA256SUMS

clean:
	rm -rf $(BIN) .demo $(DIST) $(LOAD_OUT)
