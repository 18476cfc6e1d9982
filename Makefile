# The two commands a newcomer needs: `make demo` and `make test`.
GO      ?= go
BIN     := bin
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
# Static, reproducible binaries: the same build the Dockerfile performs.
export CGO_ENABLED ?= 0

STATICCHECK_VERSION := v0.8.2

.PHONY: all build demo test test-short fuzz vet lint fmt-check clean

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/certprov-adapter ./cmd/certprov-emulator

# Emulator + adapter + built-in CA as separate processes on loopback; exits 0 only if every
# simulated device and user received a verified certificate.
demo: build
	bash deploy/local/demo.sh

# Every test, under the race detector (which needs cgo).
test: vet
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 25m ./...

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

clean:
	rm -rf $(BIN) .demo
