package geoip

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"

	"github.com/postern/postern/internal/diag"
)

// maxLineErrors is how many bad lines a CSV or zone file may have before
// the loader stops reading it.
const maxLineErrors = 20

// maxLineLen is the longest line the CSV and zone readers accept.
const maxLineLen = 64 << 10

// A lineReader reads a text file line by line, counting lines and
// collecting errors.
type lineReader struct {
	path  string
	r     *bufio.Reader
	line  int   // number of the line last returned
	bytes int64 // bytes read so far
	errs  diag.List
}

func newLineReader(path string, r io.Reader) *lineReader {
	return &lineReader{path: path, r: bufio.NewReaderSize(r, maxLineLen)}
}

// next returns the next line without its line ending and surrounding
// space, or ok == false at the end of the file or after too many errors.
// The line is valid until the next call.
func (lr *lineReader) next() (line []byte, ok bool) {
	for !lr.tooMany() {
		b, err := lr.r.ReadSlice('\n')
		if len(b) == 0 && err != nil {
			if err != io.EOF {
				lr.errs.Add(dataErr(lr.path, lr.line+1, "read error: %w", err))
			}
			return nil, false
		}
		lr.line++
		lr.bytes += int64(len(b))
		if errors.Is(err, bufio.ErrBufferFull) {
			lr.errorf("line longer than %d bytes", maxLineLen)
			lr.skipLine()
			continue
		}
		if lr.line == 1 {
			b = stripBOM(b)
		}
		return bytes.TrimSpace(b), true
	}
	return nil, false
}

// skipLine discards the rest of an overlong line.
func (lr *lineReader) skipLine() {
	for {
		_, err := lr.r.ReadSlice('\n')
		if !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

// errorf records an error at the current line.
func (lr *lineReader) errorf(format string, args ...any) {
	lr.errs.Add(dataErr(lr.path, lr.line, format, args...))
	if lr.tooMany() {
		lr.errs.Add(dataErr(lr.path, lr.line, "too many errors, giving up on this file"))
	}
}

func (lr *lineReader) tooMany() bool { return len(lr.errs) >= maxLineErrors }

// err returns the collected errors, or nil.
func (lr *lineReader) err() error {
	switch len(lr.errs) {
	case 0:
		return nil
	case 1:
		return lr.errs[0]
	}
	return lr.errs
}

// checkContext returns a context error every ctxCheckEvery lines.
func (lr *lineReader) checkContext(ctx context.Context) error {
	if lr.line%ctxCheckEvery != 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return dataErr(lr.path, lr.line, "loading interrupted: %w", err)
	}
	return nil
}

// isComment reports whether a trimmed line carries no data.
func isComment(line []byte) bool {
	return len(line) == 0 || line[0] == '#'
}

// loadCSV loads a file of "start,end,country" lines: inclusive ranges,
// which may nest or overlap, with the most specific range winning. Blank
// lines and lines starting with # are ignored, and so is a header on line
// 1 whose first field is not an address.
//
// size is the size of the file, or 0 if unknown; it is used to allocate
// the rows at once.
func loadCSV(ctx context.Context, path string, r io.Reader, size int64) (*source, error) {
	lr := newLineReader(path, r)
	var rows4, rows6 []rangeRow
	for {
		if lr.line == sampleLines {
			rows4 = growRows(rows4, lr.bytes, size)
			rows6 = growRows(rows6, lr.bytes, size)
		}
		line, ok := lr.next()
		if !ok {
			break
		}
		if err := lr.checkContext(ctx); err != nil {
			return nil, err
		}
		if isComment(line) {
			continue
		}
		row, is4, ok := parseCSVLine(lr, line)
		if !ok {
			continue
		}
		row.seq = uint32(len(rows4) + len(rows6))
		if is4 {
			rows4 = append(rows4, row)
		} else {
			rows6 = append(rows6, row)
		}
	}
	if err := lr.err(); err != nil {
		return nil, err
	}
	b := newBuilder(len(rows4) + len(rows6))
	for _, fam := range []struct {
		rows []rangeRow
		is4  bool
	}{{rows4, true}, {rows6, false}} {
		flatten(fam.rows, fam.is4, func(first, last u128, label uint32) {
			b.add(first, last, fam.is4, label)
		})
	}
	country, err := b.finish()
	if err != nil {
		// flatten emits sorted, disjoint ranges; this is a bug.
		return nil, dataErr(path, 0, "internal error: %w", err)
	}
	info := Info{Description: "CSV ranges", Records: len(rows4) + len(rows6)}
	return newSource(info, country, table{}), nil
}

// sampleLines is how many lines loadCSV reads before it estimates how many
// rows the file has.
const sampleLines = 1000

// growRows makes room for the rows of a file of the given size, judging by
// the rows read from its first n bytes.
func growRows(rows []rangeRow, n, size int64) []rangeRow {
	if n <= 0 || size <= n || len(rows) == 0 {
		return rows
	}
	est := float64(len(rows)) * float64(size) / float64(n) * 1.05
	return slices.Grow(rows, max(0, min(int(est), 1<<26)-len(rows)))
}

// parseCSVLine parses one data line, reporting errors to lr. It returns
// ok == false for a bad line or a header.
func parseCSVLine(lr *lineReader, line []byte) (row rangeRow, is4, ok bool) {
	if lr.line == 1 && isHeader(line) {
		return row, false, false
	}
	var fields [3][]byte
	n := 0
	for f := range bytes.SplitSeq(line, []byte(",")) {
		if n < len(fields) {
			fields[n] = trimField(f)
		}
		n++
	}
	if n != len(fields) {
		lr.errorf("want 3 fields (start,end,country), got %d", n)
		return row, false, false
	}
	start, err := parseAddr(fields[0])
	if err != nil {
		lr.errorf("invalid start address: %v", err)
		return row, false, false
	}
	end, err := parseAddr(fields[1])
	if err != nil {
		lr.errorf("invalid end address: %v", err)
		return row, false, false
	}
	if start.Is4In6() && end.Is4In6() {
		start, end = start.Unmap(), end.Unmap()
	}
	switch {
	case start.Is4() != end.Is4():
		lr.errorf("start %s and end %s are of different address families", start, end)
		return row, false, false
	case end.Less(start):
		lr.errorf("start %s is after end %s", start, end)
		return row, false, false
	}
	label, ok := dataCountryLabel(fields[2])
	if !ok {
		lr.errorf("invalid country code %q", fields[2])
		return row, false, false
	}
	return rangeRow{first: u128From(start), last: u128From(end), label: label}, start.Is4(), true
}

// trimField removes space and double quotes around a CSV field.
func trimField(f []byte) []byte {
	f = bytes.TrimSpace(f)
	if len(f) >= 2 && f[0] == '"' && f[len(f)-1] == '"' {
		f = bytes.TrimSpace(f[1 : len(f)-1])
	}
	return f
}

// isHeader reports whether line is a header such as
// "ip_range_start,ip_range_end,country_code": its first field is a word,
// not an address. A first field that looks like a broken address (with a
// digit first, or a '.', ':' or '/') is data, so that the error is
// reported instead of the line being skipped.
func isHeader(line []byte) bool {
	f, _, _ := bytes.Cut(line, []byte(","))
	f = trimField(f)
	if len(f) == 0 || !isASCIILetter(f[0]) || bytes.ContainsAny(f, ".:/") {
		return false
	}
	_, err := parseAddr(f)
	return err != nil
}

// errZone rejects scoped addresses, which cannot be in a dataset.
var errZone = errors.New("address has a zone")

// parseAddr parses an IPv4 or IPv6 address without a zone. Dotted-quad
// IPv4 addresses, most of any dataset, are parsed without allocating.
func parseAddr(b []byte) (netip.Addr, error) {
	if a, ok := parseIPv4(b); ok {
		return a, nil
	}
	a, err := netip.ParseAddr(string(b))
	if err != nil {
		return netip.Addr{}, err
	}
	if a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("%q: %w", b, errZone)
	}
	return a, nil
}

// parseIPv4 parses a canonical dotted-quad address. It returns ok == false
// for anything else, including forms netip.ParseAddr rejects, so that the
// caller can fall back to it for the error message.
func parseIPv4(b []byte) (netip.Addr, bool) {
	var ip [4]byte
	part, digits, val := 0, 0, 0
	for _, c := range b {
		switch {
		case '0' <= c && c <= '9':
			if digits > 0 && val == 0 { // leading zero
				return netip.Addr{}, false
			}
			val = val*10 + int(c-'0')
			digits++
			if val > 255 {
				return netip.Addr{}, false
			}
		case c == '.' && digits > 0 && part < 3:
			ip[part] = byte(val)
			part, digits, val = part+1, 0, 0
		default:
			return netip.Addr{}, false
		}
	}
	if part != 3 || digits == 0 {
		return netip.Addr{}, false
	}
	ip[3] = byte(val)
	return netip.AddrFrom4(ip), true
}
