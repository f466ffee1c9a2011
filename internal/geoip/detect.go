package geoip

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"path/filepath"
	"strings"
)

// mmdbMarker starts the metadata section of every MaxMind DB file.
const mmdbMarker = "\xab\xcd\xefMaxMind.com"

const (
	// sniffHead is how much of the start of a file detection reads.
	sniffHead = 4 << 10
	// sniffTail is how much of the end of a file detection reads: the MMDB
	// specification caps the metadata section at 128 KiB.
	sniffTail = 128 << 10
)

// formatFromExt maps a file name extension (lower case, with the dot) to a
// format.
func formatFromExt(ext string) Format {
	switch ext {
	case ".mmdb":
		return FormatMMDB
	case ".csv":
		return FormatCSV
	case ".zone", ".txt", ".cidr":
		return FormatZone
	}
	return FormatAuto
}

// detectFormat determines the format of the file at path, of the given
// size, readable through r. It trusts the extension first and the content
// second, and explains in its error why it could not decide.
func detectFormat(path string, r io.ReaderAt, size int64) (Format, error) {
	if f := formatFromExt(strings.ToLower(filepath.Ext(path))); f != FormatAuto {
		return f, nil
	}
	head, err := readAt(r, 0, min(size, sniffHead))
	if err != nil {
		return FormatAuto, err
	}
	tailLen := min(size, sniffTail)
	tail, err := readAt(r, size-tailLen, tailLen)
	if err != nil {
		return FormatAuto, err
	}
	if f := sniffFormat(head, tail); f != FormatAuto {
		return f, nil
	}
	if isGzip(head) {
		return FormatAuto, errors.New("the file is gzip-compressed; decompress it first")
	}
	return FormatAuto, errors.New("cannot detect the format (not MMDB, CSV or a zone file); set it explicitly")
}

// readAt reads n bytes at off.
func readAt(r io.ReaderAt, off, n int64) ([]byte, error) {
	buf := make([]byte, n)
	if _, err := r.ReadAt(buf, off); err != nil && err != io.EOF {
		return nil, err
	}
	return buf, nil
}

// sniffFormat recognises a format from the first bytes (head) and the last
// bytes (tail) of a file: the MMDB metadata marker in the tail means MMDB;
// otherwise the first line that is not blank or a comment decides: three
// comma-separated fields mean CSV, a CIDR or address means a zone file. It
// returns FormatAuto when it cannot tell.
func sniffFormat(head, tail []byte) Format {
	if bytes.Contains(tail, []byte(mmdbMarker)) {
		return FormatMMDB
	}
	for line := range bytes.Lines(head) {
		line = bytes.TrimSpace(stripBOM(line))
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		if bytes.Count(line, []byte(",")) == 2 {
			return FormatCSV
		}
		if field, _, _ := bytes.Cut(line, []byte("#")); isPrefixOrAddr(string(bytes.TrimSpace(field))) {
			return FormatZone
		}
		return FormatAuto
	}
	return FormatAuto
}

// isPrefixOrAddr reports whether s parses as a CIDR prefix or an address.
func isPrefixOrAddr(s string) bool {
	if _, err := netip.ParsePrefix(s); err == nil {
		return true
	}
	_, err := netip.ParseAddr(s)
	return err == nil
}

// stripBOM removes a leading UTF-8 byte order mark.
func stripBOM(b []byte) []byte {
	return bytes.TrimPrefix(b, []byte("\ufeff"))
}

// isGzip reports whether head starts with the gzip magic number.
func isGzip(head []byte) bool {
	return len(head) >= 2 && head[0] == 0x1f && head[1] == 0x8b
}
