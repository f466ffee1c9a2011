# postern — build, test, benchmark, lint.
# Go is used as installed (no toolchain download).
export GOTOOLCHAIN := local

GO        ?= go
GEO_DIR   ?= $(CURDIR)/testdata/geo
GEO_VER   ?= 2.3.2026061719
FUZZTIME  ?= 30s
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: build test test-short test-all bench lint fuzz testdata clean

build:
	$(GO) build -trimpath -ldflags "-X main.version=$$(git describe --always --dirty 2>/dev/null || echo dev)" -o bin/postern ./cmd/postern

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

lint:
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzCompile     -fuzztime $(FUZZTIME) ./internal/patterns
	$(GO) test -run '^$$' -fuzz FuzzIncludeFile -fuzztime $(FUZZTIME) ./internal/patterns
	$(GO) test -run '^$$' -fuzz FuzzParse       -fuzztime $(FUZZTIME) ./internal/config
	$(GO) test -run '^$$' -fuzz FuzzLoadCSV     -fuzztime $(FUZZTIME) ./internal/geoip
	$(GO) test -run '^$$' -fuzz FuzzLoadMMDB    -fuzztime $(FUZZTIME) ./internal/geoip
	$(GO) test -run '^$$' -fuzz FuzzLoadZone    -fuzztime $(FUZZTIME) ./internal/geoip
	$(GO) test -run '^$$' -fuzz FuzzParseImport -fuzztime $(FUZZTIME) ./internal/admin
	$(GO) test -run '^$$' -fuzz FuzzAllowPath   -fuzztime $(FUZZTIME) ./internal/policy
	$(GO) test -run '^$$' -fuzz FuzzServeHTTP   -fuzztime $(FUZZTIME) ./internal/webproxy
	$(GO) test -run '^$$' -fuzz FuzzFormFields  -fuzztime $(FUZZTIME) ./internal/webproxy
	$(GO) test -run '^$$' -fuzz FuzzDotScanner  -fuzztime $(FUZZTIME) ./internal/smtpproxy
	$(GO) test -run '^$$' -fuzz FuzzContentInspector -fuzztime $(FUZZTIME) ./internal/smtpproxy
	$(GO) test -run '^$$' -fuzz FuzzParsePath   -fuzztime $(FUZZTIME) ./internal/mailaddr
	$(GO) test -run '^$$' -fuzz FuzzParseArg    -fuzztime $(FUZZTIME) ./internal/mailaddr

# The country dataset for the whole-dataset tests and benchmarks
# (ip-location-db geo-whois-asn-country, CC BY 4.0, credit NRO), from the
# npm registry with npm's own client.
testdata: $(GEO_DIR)/geo-whois-asn-country.mmdb $(GEO_DIR)/geo-whois-asn-country-ipv4.csv

$(GEO_DIR)/geo-whois-asn-country.mmdb:
	mkdir -p $(GEO_DIR)
	cd $(GEO_DIR) && npm pack --silent @ip-location-db/geo-whois-asn-country-mmdb@$(GEO_VER) >/dev/null \
		&& tar -xzf geo-whois-asn-country-mmdb-$(GEO_VER).tgz --strip-components=1 package/geo-whois-asn-country.mmdb \
		&& rm -f geo-whois-asn-country-mmdb-$(GEO_VER).tgz

$(GEO_DIR)/geo-whois-asn-country-ipv4.csv:
	mkdir -p $(GEO_DIR)
	cd $(GEO_DIR) && npm pack --silent @ip-location-db/geo-whois-asn-country@$(GEO_VER) >/dev/null \
		&& tar -xzf geo-whois-asn-country-$(GEO_VER).tgz --strip-components=1 \
			package/geo-whois-asn-country-ipv4.csv package/geo-whois-asn-country-ipv6.csv \
		&& rm -f geo-whois-asn-country-$(GEO_VER).tgz

clean:
	rm -rf bin
