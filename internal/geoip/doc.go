// Package geoip loads country (and AS number) IP datasets so that
// configuration patterns such as `country:MY` can be expanded into IP
// prefixes, and answers "which country is this address in" for `postern
// explain` and logs.
//
// # Sources
//
// Three formats are read; Load takes any number of sources and keeps them
// apart, in configured order:
//
//   - MMDB (MaxMind DB), read with maxminddb-golang. The record layout is
//     detected per record: a flat "country_code" (ip-location-db), or a
//     nested "country.iso_code" falling back to
//     "registered_country.iso_code" (GeoLite2/GeoIP2 Country and City).
//     "autonomous_system_number" (GeoLite2-ASN, ip-location-db asn) gives
//     AS numbers. Networks with an unknown country code are skipped and
//     counted in Info.Skipped. IPv4 networks come out as IPv4 prefixes.
//     Before the networks are walked, the search tree is checked to really
//     be a tree, so a corrupt file fails fast instead of making the walk
//     take exponential time.
//   - CSV: "start,end,country" lines with inclusive ranges (any address
//     netip.ParseAddr accepts, not necessarily CIDR-aligned), # comments,
//     blank lines and an optional header on line 1 (a first field that is
//     a word, not an address). Ranges may nest or overlap: every address
//     gets the country of the smallest range that contains it, and of
//     equal ranges the later line. The loader sweeps over the range
//     boundaries with a heap of the ranges in force, merges adjacent
//     ranges of the same country and splits the result into prefixes.
//     For nested rows this is what the upstream ip-location-db MMDB does;
//     where two rows overlap only partially, upstream lets the later row
//     win, so the CSV and the MMDB built from it differ on about 200 of a
//     million networks.
//   - Zone files: one CIDR or address a line, all in one country (from
//     Source.Country or the file name), # comments. Overlaps are merged.
//
// FormatAuto picks the format by extension (.mmdb, .csv, .zone/.txt/.cidr)
// and otherwise by content: the MMDB metadata marker in the last 128 KiB,
// else the first data line (three comma-separated fields: CSV; a CIDR or
// address: zone file).
//
// Within one source the prefixes of a country (or AS) are disjoint and
// sorted, and adjacent networks of the same country are merged before the
// split into prefixes, so that equal data gives equal prefixes whatever
// the format.
//
// IPv4 addresses are always IPv4 prefixes: IPv4-mapped rows and zone
// entries are unmapped, and IPv6 data never covers ::ffff:0:0/96 (the part
// of a wider IPv6 range that overlaps it is dropped). Lookups unmap
// IPv4-mapped addresses, so InCountry(addr, cc) is true exactly when the
// unmapped addr is in CountryPrefixes(cc).
//
// # Country codes
//
// ValidCountryCode accepts the 249 assigned ISO 3166-1 alpha-2 codes and
// AN (Netherlands Antilles, still in RIR data), AP (Asia/Pacific), EU
// (European Union), XK (Kosovo) and ZZ (unknown), which datasets use.
// Codes in data files may be lower case; query methods take upper case.
//
// # Memory
//
// Each source keeps one table per kind of label (country, AS): a single
// []netip.Prefix grouped by label, each group in address order, so that
// CountryPrefixes returns a sub-slice without copying, and a []uint32 of
// positions in address order, so that Country and ASN are one binary
// search. That is 36 bytes per prefix and nothing is duplicated: about
// 36 MB for the million networks of a whole-Internet country database.
// Files are not kept open or mapped after Load. When several sources have
// a country, CountryPrefixes allocates their concatenation on each call.
//
// # Errors
//
// Errors are *diag.Error values naming the data file, and the line for
// CSV and zone files; problems with the source as configured (missing
// file, unknown format) are reported at Source.Pos when it is set. A CSV
// or zone file reports up to 20 bad lines at once, as a diag.List.
package geoip
