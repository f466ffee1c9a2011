# postern — build, test, benchmark, lint.
# Go is used as installed (no toolchain download).
export GOTOOLCHAIN := local

GO        ?= go
GEO_DIR   ?= $(CURDIR)/testdata/geo
GEO_VER   ?= 2.3.2026061719
FUZZTIME  ?= 30s
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2

# What 'postern version' reports, from git in a checkout; set them by hand
# to build from a source tarball. Without them the binary reports what the
# Go toolchain recorded (nothing for go run and go test).
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null)
REVISION    ?= $(shell git rev-parse -q --verify HEAD >/dev/null 2>&1 && { git rev-parse HEAD | tr -d '\n'; git diff --quiet HEAD -- || printf -- -dirty; })
COMMIT_TIME ?= $(shell TZ=UTC git log -1 --date=format-local:%Y-%m-%dT%H:%M:%SZ --format=%cd 2>/dev/null)
LDFLAGS      = -X main.version=$(VERSION) -X main.revision=$(REVISION) -X main.commitTime=$(COMMIT_TIME)

# Packages: see packaging/nfpm.yaml and docs/INSTALL.md. nfpm is pinned in
# tools/go.mod, a module of its own, so postern's go.mod lists none of it.
PKG_DIR        ?= build/pkg
PKG_ARCH       ?= $(shell $(GO) env GOARCH)
PKG_VERSION    ?= $(shell packaging/version.sh)
PKG_MAINTAINER ?= postern maintainers <postern@example.org>
PKG_FORMATS    ?= deb rpm
NFPM           ?= $(GO) tool -modfile=tools/go.mod nfpm
# Man pages and packages carry the commit's date, not today's.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null)
export SOURCE_DATE_EPOCH

.PHONY: build man completion package test test-short test-all bench bench-peers lint cross fuzz testdata clean

build:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/postern ./cmd/postern

# One page per command, generated from the command tree by the hidden
# 'postern gen-man' (not committed: they cannot drift from the flags).
man: build
	rm -rf build/man
	bin/postern gen-man build/man

# Shell completion scripts (cobra's 'postern completion bash|zsh|fish').
completion: build
	mkdir -p build/completion
	for sh in bash zsh fish; do bin/postern completion $$sh >build/completion/postern.$$sh; done

# build/postern_<version>-1_<arch>.deb and build/postern-<version>-1.<arch>.rpm:
# a static binary for linux/PKG_ARCH at /usr/bin/postern, the configuration
# 'postern init' writes (state moved to /var/lib/postern), a hardened systemd
# unit, the man pages and completions.
# The packaged binary reports the package's version.
package: VERSION = $(PKG_VERSION)
package:
	@test -n "$(PKG_VERSION)" || { echo "PKG_VERSION is empty: build in a git checkout or set it"; exit 1; }
	rm -rf $(PKG_DIR) build/postern_*.deb build/postern-*.rpm && mkdir -p $(PKG_DIR)/man $(PKG_DIR)/completion
	CGO_ENABLED=0 GOOS=linux GOARCH=$(PKG_ARCH) $(GO) build -trimpath -ldflags "-s -w $(LDFLAGS)" -o $(PKG_DIR)/postern ./cmd/postern
	@# The pages, completions and configuration come from a binary of this machine.
	gen=$(PKG_DIR)/postern; [ "$(PKG_ARCH)" = "$$($(GO) env GOARCH)" ] || { gen=bin/postern; \
	  $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $$gen ./cmd/postern || exit 1; }; \
	  $$gen gen-man $(PKG_DIR)/man && gzip -9n $(PKG_DIR)/man/*.1 && \
	  for sh in bash zsh fish; do $$gen completion $$sh >$(PKG_DIR)/completion/postern.$$sh || exit 1; done && \
	  packaging/mkconfig.sh $$gen $(PKG_DIR)/postern.yaml
	for f in $(PKG_FORMATS); do \
	  PKG_VERSION='$(PKG_VERSION)' PKG_ARCH='$(PKG_ARCH)' PKG_MAINTAINER='$(PKG_MAINTAINER)' \
	    $(NFPM) package --config packaging/nfpm.yaml --packager $$f --target build/ || exit 1; \
	done

# The README's test command: unit tests, plus the whole-dataset tests when
# POSTERN_GEO_DIR points at the GeoIP dataset (see 'make testdata').
test:
	$(GO) test ./...

test-short:
	$(GO) test -short ./...

# Everything, with the race detector and the GeoIP dataset.
test-all: testdata
	POSTERN_GEO_DIR=$(GEO_DIR) $(GO) test -race -count=1 ./...

bench: testdata
	POSTERN_GEO_DIR=$(GEO_DIR) $(GO) test -run '^$$' -bench . -benchmem ./...

# postern side by side with nginx and haproxy in front of the harness's
# Dovecot and Postfix (root; bench/README.md): writes the table between the
# bench-peers markers of docs/BENCHMARKS.md and README.md, and the charts
# docs/img/bench-peers.png and bench-peers-cpu.png. PEERS_FLAGS adds flags
# (e.g. PEERS_FLAGS="-rounds 3").
bench-peers:
	bench/peers.sh -docs $(PEERS_FLAGS)

lint: cross
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

# postern builds for the Linux architectures it may be packaged for (arm64
# and 386 stand for the 64- and 32-bit others; CROSS_ARCHS="arm riscv64" for more):
# the raw-syscall code differs per architecture (arm64 has no epoll_wait,
# 386 reaches recvfrom through socketcall).
CROSS_ARCHS ?= arm64 386
# Other systems: postern and its tests compile there (vet), with its
# sessions on goroutines and without the nftables export; they are not run.
CROSS_OSES ?= darwin freebsd
cross:
	for a in $(CROSS_ARCHS); do echo "build linux/$$a"; CGO_ENABLED=0 GOOS=linux GOARCH=$$a $(GO) build ./... || exit 1; done
	for o in $(CROSS_OSES); do echo "vet $$o/amd64"; CGO_ENABLED=0 GOOS=$$o GOARCH=amd64 $(GO) vet ./... || exit 1; done

fuzz:
	FUZZTIME=$(FUZZTIME) GO=$(GO) scripts/fuzz.sh

# The country dataset for the whole-dataset tests and benchmarks
# (ip-location-db geo-whois-asn-country, CC BY 4.0, credit NRO), from the
# npm registry with npm's own client.
testdata: $(GEO_DIR)/geo-whois-asn-country.mmdb $(GEO_DIR)/geo-whois-asn-country-ipv4.csv

$(GEO_DIR)/geo-whois-asn-country.mmdb:
	mkdir -p $(GEO_DIR)
	cd $(GEO_DIR) && npm pack --silent @ip-location-db/geo-whois-asn-country-mmdb@$(GEO_VER) >/dev/null \
		&& tar -xzf ip-location-db-geo-whois-asn-country-mmdb-$(GEO_VER).tgz --strip-components=1 package/geo-whois-asn-country.mmdb \
		&& rm -f ip-location-db-geo-whois-asn-country-mmdb-$(GEO_VER).tgz

$(GEO_DIR)/geo-whois-asn-country-ipv4.csv:
	mkdir -p $(GEO_DIR)
	cd $(GEO_DIR) && npm pack --silent @ip-location-db/geo-whois-asn-country@$(GEO_VER) >/dev/null \
		&& tar -xzf ip-location-db-geo-whois-asn-country-$(GEO_VER).tgz --strip-components=1 \
			package/geo-whois-asn-country-ipv4.csv package/geo-whois-asn-country-ipv6.csv \
		&& rm -f ip-location-db-geo-whois-asn-country-$(GEO_VER).tgz

clean:
	rm -rf bin build
