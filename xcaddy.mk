# Vigil's build, run, test and benchmark targets.
#
#   make -f xcaddy.mk run     build ./caddy with Vigil and run Caddyfile.example
#   make -f xcaddy.mk test    unit, fuzz-seed and integration tests (what CI runs)
#   make -f xcaddy.mk bench   Go benchmarks and the wrk load test against plain Caddy
#   make -f xcaddy.mk lint    gofmt, go vet, staticcheck
#   make -f xcaddy.mk nab     score the anomaly detector on the NAB corpus in ../shared/nab

CADDY_VERSION ?= v2.11.9
# The zero pseudo-version lets xcaddy use this checkout for the module.
VIGIL_MODULE  := github.com/vigilgw/vigil@v0.0.0-00010101000000-000000000000=.
GO            ?= go
GOTESTFLAGS   ?= -race -count=1 -timeout 40m
SOURCES       := $(shell find . -name '*.go' -not -name '*_test.go' -not -path './integration/*' -not -path './bench/*') go.mod go.sum

.PHONY: build run test unit integration bench bench-go bench-load lint nab clean

build: caddy

caddy: $(SOURCES)
	$(GO) tool xcaddy build $(CADDY_VERSION) --with $(VIGIL_MODULE) --output ./caddy

run: build
	./caddy run --config Caddyfile.example --adapter caddyfile

test: build
	VIGIL_CADDY=$(CURDIR)/caddy $(GO) test $(GOTESTFLAGS) ./...

unit:
	$(GO) test $(GOTESTFLAGS) $$($(GO) list ./... | grep -v /integration)

integration: build
	VIGIL_CADDY=$(CURDIR)/caddy $(GO) test $(GOTESTFLAGS) ./integration/...

bench: bench-go bench-load

bench-go:
	$(GO) test -run '^$$' -bench . -benchmem $$($(GO) list ./... | grep -v /integration)

bench-load: build
	VIGIL_CADDY=$(CURDIR)/caddy $(GO) run ./bench/load

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt: not formatted:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

nab: build
	VIGIL_CADDY=$(CURDIR)/caddy $(GO) run ./bench/nab

clean:
	rm -f caddy
