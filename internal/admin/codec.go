package admin

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/postern/postern/internal/reason"
	"github.com/postern/postern/internal/store"
)

// Block is a block as the API shows it. Times are UTC.
type Block struct {
	Target     string       `json:"target"` // the address alone for a /32 or /128, else the prefix
	Prefix     netip.Prefix `json:"prefix"`
	Reason     string       `json:"reason"`      // the one-letter code
	ReasonName string       `json:"reason_name"` // "failed logins"
	Service    string       `json:"service"`
	Detail     string       `json:"detail"`
	FirstSeen  time.Time    `json:"first_seen"`
	LastSeen   time.Time    `json:"last_seen"`
	Hits       int64        `json:"hits"`
	Expires    *time.Time   `json:"expires"` // nil: never
	Expired    bool         `json:"expired"` // at the engine's clock when answered
	Node       string       `json:"node"`
	By         string       `json:"by"`
	Comment    string       `json:"comment"`
	Level      int          `json:"level"`
}

// newBlock converts a store block for the API at the engine's time now.
func newBlock(b store.Block, now time.Time) Block {
	out := Block{
		Target:     FormatTarget(b.Prefix),
		Prefix:     b.Prefix,
		Reason:     b.Reason.String(),
		ReasonName: b.Reason.Name(),
		Service:    b.Service,
		Detail:     b.Detail,
		FirstSeen:  b.FirstSeen.UTC(),
		LastSeen:   b.LastSeen.UTC(),
		Hits:       b.Hits,
		Expired:    b.Expired(now),
		Node:       b.Node,
		By:         b.By,
		Comment:    b.Comment,
		Level:      b.Level,
	}
	if !b.Expires.IsZero() {
		e := b.Expires.UTC()
		out.Expires = &e
	}
	return out
}

// AuditEntry is an audit-log entry as the API shows it.
type AuditEntry struct {
	Time   time.Time `json:"time"`
	Actor  string    `json:"actor"`
	Action string    `json:"action"`
	Target string    `json:"target"`
	Detail string    `json:"detail"`
}

func newAuditEntry(e store.AuditEntry) AuditEntry {
	return AuditEntry{Time: e.Time.UTC(), Actor: e.Actor, Action: e.Action, Target: e.Target, Detail: e.Detail}
}

// Export formats.
const (
	FormatCSV  = "csv"
	FormatJSON = "json"
)

// CSVHeader is the header row of the CSV format: its columns, in order.
const CSVHeader = "target,reason,service,detail,first_seen,last_seen,hits,expires,node,by,comment,level"

// csvColumns are the columns of CSVHeader; never modified.
var csvColumns = strings.Split(CSVHeader, ",")

// writeCSV writes blocks in the CSV format: a header row, then one row a
// block. Empty timestamps are unknown (expires: never).
func writeCSV(w io.Writer, bs []store.Block) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(csvColumns); err != nil {
		return err
	}
	for _, b := range bs {
		rec := []string{
			FormatTarget(b.Prefix), b.Reason.String(), b.Service, b.Detail,
			formatTime(b.FirstSeen), formatTime(b.LastSeen), strconv.FormatInt(b.Hits, 10),
			formatTime(b.Expires), b.Node, b.By, b.Comment, strconv.Itoa(b.Level),
		}
		if err := cw.Write(rec); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// formatTime writes a CSV timestamp: RFC 3339 UTC with as many fractional
// digits as needed, or "" for the zero time.
func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// parseTime reads a timestamp; "" is the zero time.
func parseTime(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("bad time %q: want RFC 3339 such as 2026-05-01T12:00:00Z", s)
	}
	return t.UTC(), nil
}

// rowError names the place of a bad import row and, when known, the field.
type rowError struct {
	where string // "line 7" or "blocks[3] (line 40)"
	field string
	err   error
}

func (e *rowError) Error() string {
	if e.field == "" {
		return e.where + ": " + e.err.Error()
	}
	return e.where + ": " + e.field + ": " + e.err.Error()
}

func (e *rowError) Unwrap() error { return e.err }

// record is one import row as written, before validation.
type record struct {
	Target     string  `json:"target"`
	Prefix     string  `json:"prefix"`
	Reason     string  `json:"reason"`
	ReasonName string  `json:"reason_name"` // ignored: derived from reason
	Service    string  `json:"service"`
	Detail     string  `json:"detail"`
	FirstSeen  string  `json:"first_seen"`
	LastSeen   string  `json:"last_seen"`
	Hits       int64   `json:"hits"`
	Expires    *string `json:"expires"`
	Expired    bool    `json:"expired"` // ignored: derived from expires
	Node       string  `json:"node"`
	By         string  `json:"by"`
	Comment    string  `json:"comment"`
	Level      int     `json:"level"`
}

// Limits on imported times. A block expires at most MaxImportAhead after
// the engine's clock (a longer block is a permanent one: leave expires
// empty); its first_seen and last_seen may be up to MaxImportSkew ahead of
// the clock (another node's clock); no time is before 1970-01-01T00:00:01Z.
const (
	MaxImportAhead = 10 * 365 * 24 * time.Hour
	MaxImportSkew  = 24 * time.Hour
)

// MaxImportBlocks bounds the rows of one import (memory grows with them;
// see docs/BENCHMARKS.md).
const MaxImportBlocks = 500_000

// maxImportRow bounds one CSV line or one JSON element: a real block is a
// few hundred bytes.
const maxImportRow = 1 << 20

// lineLimit fails a stream with a line longer than maxImportRow, so the CSV
// reader never gathers a huge line.
type lineLimit struct {
	r    io.Reader
	run  int // bytes since the last new line
	line int
}

func (l *lineLimit) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	for _, c := range p[:n] {
		if c == '\n' {
			l.run = 0
			l.line++
			continue
		}
		l.run++
		if l.run > maxImportRow {
			return 0, fmt.Errorf("line %d: longer than %d bytes", l.line+1, maxImportRow)
		}
	}
	return n, err
}

var earliestImport = time.Unix(1, 0).UTC()

// block validates a record at the engine's time now; where names it in
// errors.
func (r *record) block(where string, now time.Time) (store.Block, error) {
	bad := func(field string, err error) error { return &rowError{where: where, field: field, err: err} }
	var b store.Block
	target := r.Target
	if target == "" {
		target = r.Prefix
	}
	p, err := ParseTarget(target)
	if err != nil {
		return b, bad("target", err)
	}
	if r.Target != "" && r.Prefix != "" {
		q, err := ParseTarget(r.Prefix)
		if err != nil {
			return b, bad("prefix", err)
		}
		if q != p {
			return b, bad("prefix", fmt.Errorf("%s does not match target %s", r.Prefix, r.Target))
		}
	}
	b.Prefix = p
	if strings.TrimSpace(r.Reason) == "" {
		return b, bad("reason", errors.New("missing: want a code such as L or U"))
	}
	if b.Reason, err = reason.Parse(r.Reason); err != nil {
		return b, bad("reason", err)
	}
	if b.FirstSeen, err = parseTime(r.FirstSeen); err != nil {
		return b, bad("first_seen", err)
	}
	if b.LastSeen, err = parseTime(r.LastSeen); err != nil {
		return b, bad("last_seen", err)
	}
	if r.Expires != nil {
		if b.Expires, err = parseTime(*r.Expires); err != nil {
			return b, bad("expires", err)
		}
	}
	for _, f := range []struct {
		name string
		t    time.Time
	}{{"first_seen", b.FirstSeen}, {"last_seen", b.LastSeen}, {"expires", b.Expires}} {
		if !f.t.IsZero() && f.t.Before(earliestImport) {
			return b, bad(f.name, fmt.Errorf("%s is before %s", formatTime(f.t), formatTime(earliestImport)))
		}
	}
	if latest := now.Add(MaxImportSkew); b.FirstSeen.After(latest) {
		return b, bad("first_seen", fmt.Errorf("%s is in the future (the engine's clock says %s)", formatTime(b.FirstSeen), formatTime(now)))
	}
	if latest := now.Add(MaxImportSkew); b.LastSeen.After(latest) {
		return b, bad("last_seen", fmt.Errorf("%s is in the future (the engine's clock says %s)", formatTime(b.LastSeen), formatTime(now)))
	}
	if !b.FirstSeen.IsZero() && !b.LastSeen.IsZero() && b.LastSeen.Before(b.FirstSeen) {
		return b, bad("last_seen", fmt.Errorf("%s is before first_seen %s", formatTime(b.LastSeen), formatTime(b.FirstSeen)))
	}
	if !b.Expires.IsZero() {
		if latest := now.Add(MaxImportAhead); b.Expires.After(latest) {
			return b, bad("expires", fmt.Errorf("%s is more than 10 years ahead (latest %s); leave expires empty for a block that never expires", formatTime(b.Expires), formatTime(latest)))
		}
		if !b.FirstSeen.IsZero() && b.Expires.Before(b.FirstSeen) {
			return b, bad("expires", fmt.Errorf("%s is before first_seen %s", formatTime(b.Expires), formatTime(b.FirstSeen)))
		}
	}
	if r.Hits < 0 {
		return b, bad("hits", fmt.Errorf("%d is negative", r.Hits))
	}
	if r.Level < 0 {
		return b, bad("level", fmt.Errorf("%d is negative", r.Level))
	}
	b.Service, b.Detail, b.Hits, b.Node, b.By, b.Comment, b.Level = r.Service, r.Detail, r.Hits, r.Node, r.By, r.Comment, r.Level
	return b, nil
}

// rowPos is where a row was: its element index (JSON) and line.
type rowPos struct{ index, line int32 }

// collector gathers validated rows; duplicates are found at the end by
// sorting, so a large import needs no map of every prefix.
type collector struct {
	json   bool
	out    []store.Block
	pos    []rowPos
	intern map[string]string // repeated short values (service, node, by) share one string
}

func (c *collector) where(p rowPos) string {
	if c.json {
		return fmt.Sprintf("blocks[%d] (line %d)", p.index, p.line)
	}
	return "line " + strconv.Itoa(int(p.line))
}

func (c *collector) add(b store.Block, p rowPos) error {
	if len(c.out) >= MaxImportBlocks {
		return &rowError{where: c.where(p), err: fmt.Errorf("more than %d blocks in one import: split the file", MaxImportBlocks)}
	}
	if c.intern == nil {
		c.intern = make(map[string]string)
	}
	for _, s := range []*string{&b.Service, &b.Node, &b.By} {
		if len(*s) > 32 {
			continue
		}
		if v, ok := c.intern[*s]; ok {
			*s = v
		} else if len(c.intern) < 1024 {
			c.intern[*s] = *s
		}
	}
	c.out = append(c.out, b)
	c.pos = append(c.pos, rowPos{int32(min(p.index, 1<<31-1)), p.line})
	return nil
}

// finish refuses a prefix given twice, naming the first repetition in file
// order and the row it repeats.
func (c *collector) finish() ([]store.Block, error) {
	idx := make([]int32, len(c.out))
	for i := range idx {
		idx[i] = int32(i)
	}
	slices.SortFunc(idx, func(a, b int32) int {
		if d := comparePrefix(c.out[a].Prefix, c.out[b].Prefix); d != 0 {
			return d
		}
		return cmp.Compare(a, b)
	})
	dup, first := int32(-1), int32(-1)
	for k := 1; k < len(idx); k++ {
		a, b := idx[k-1], idx[k]
		if c.out[a].Prefix == c.out[b].Prefix && (dup < 0 || b < dup) {
			dup, first = b, a
		}
	}
	if dup >= 0 {
		return nil, &rowError{where: c.where(c.pos[dup]), field: "target",
			err: fmt.Errorf("%s is already in %s", FormatTarget(c.out[dup].Prefix), c.where(c.pos[first]))}
	}
	return c.out, nil
}

func comparePrefix(a, b netip.Prefix) int {
	if d := a.Addr().Compare(b.Addr()); d != 0 {
		return d
	}
	return cmp.Compare(a.Bits(), b.Bits())
}

// ParseCSV reads blocks in the CSV format, with times checked against the
// current time; see DecodeCSV.
func ParseCSV(data []byte) ([]store.Block, error) {
	return DecodeCSV(bytes.NewReader(data), time.Now())
}

// DecodeCSV reads blocks in the CSV format as they stream in, with times
// checked against now (the engine's clock). The header row names the
// columns (any order; target and reason are required, the others may be
// left out); errors name the line and the field.
func DecodeCSV(in io.Reader, now time.Time) ([]store.Block, error) {
	br := bufio.NewReaderSize(&lineLimit{r: in}, 64<<10)
	if bom, err := br.Peek(3); err == nil && string(bom) == "\uFEFF" {
		br.Discard(3)
	}
	cr := csv.NewReader(br)
	cr.ReuseRecord = true
	header, err := cr.Read()
	if err == io.EOF {
		return nil, fmt.Errorf("empty file: want a header row %s", CSVHeader)
	}
	if err != nil {
		return nil, fmt.Errorf("csv: %w", err)
	}
	col := map[string]int{}
	for i, h := range header {
		h = strings.ToLower(strings.TrimSpace(h))
		if !isCSVColumn(h) {
			return nil, fmt.Errorf("line 1: unknown column %q: want the header %s", h, CSVHeader)
		}
		if _, dup := col[h]; dup {
			return nil, fmt.Errorf("line 1: column %q appears twice", h)
		}
		col[h] = i
	}
	for _, need := range []string{"target", "reason"} {
		if _, ok := col[need]; !ok {
			return nil, fmt.Errorf("line 1: no %q column: want the header %s", need, CSVHeader)
		}
	}
	c := &collector{}
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			return c.finish()
		}
		if err != nil {
			return nil, fmt.Errorf("csv: %w", err)
		}
		line, _ := cr.FieldPos(0)
		where := "line " + strconv.Itoa(line)
		get := func(name string) string {
			if i, ok := col[name]; ok {
				return rec[i]
			}
			return ""
		}
		// The reader's fields share one string per row; the kept ones are
		// copied so that the rest of the row can go.
		r := record{
			Target: get("target"), Reason: get("reason"), Service: strings.Clone(get("service")), Detail: strings.Clone(get("detail")),
			FirstSeen: get("first_seen"), LastSeen: get("last_seen"), Node: strings.Clone(get("node")), By: strings.Clone(get("by")), Comment: strings.Clone(get("comment")),
		}
		if e := get("expires"); e != "" {
			r.Expires = &e
		}
		if r.Hits, err = parseCount(get("hits"), 63); err != nil {
			return nil, &rowError{where: where, field: "hits", err: err}
		}
		level, err := parseCount(get("level"), 31)
		if err != nil {
			return nil, &rowError{where: where, field: "level", err: err}
		}
		r.Level = int(level)
		b, err := r.block(where, now)
		if err != nil {
			return nil, err
		}
		if err := c.add(b, rowPos{line: int32(min(line, 1<<31-1))}); err != nil {
			return nil, err
		}
	}
}

// parseCount reads a CSV number of at most bits bits; "" is 0.
func parseCount(s string, bits int) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(s, 10, bits+1)
	if err != nil {
		return 0, fmt.Errorf("bad number %q", s)
	}
	return n, nil
}

func isCSVColumn(name string) bool {
	for _, c := range csvColumns {
		if c == name {
			return true
		}
	}
	return false
}

// ParseJSON reads blocks in the JSON format, with times checked against the
// current time; see DecodeJSON.
func ParseJSON(data []byte) ([]store.Block, error) {
	return DecodeJSON(bytes.NewReader(data), time.Now())
}

// DecodeJSON reads blocks in the JSON format as they stream in, with times
// checked against now (the engine's clock): {"blocks":[…]} as exported, or
// a bare array of blocks. Unknown fields are errors; reason_name and expired
// are accepted and ignored (they are derived). Errors name the element, its
// line and the field.
func DecodeJSON(in io.Reader, now time.Time) ([]store.Block, error) {
	lt := &lineTracker{r: in}
	dec := json.NewDecoder(lt)
	fail := func(err error) error {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return fmt.Errorf("line %d: %w", lt.lineAt(se.Offset), err)
		}
		if err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) {
			return errors.New("unexpected end of JSON")
		}
		if lt.err != nil {
			return lt.err // the body's own error (too large, cut off)
		}
		return fmt.Errorf("line %d: %w", lt.lineAt(dec.InputOffset()), err)
	}
	tok, err := dec.Token()
	if err != nil {
		return nil, fail(err)
	}
	if tok == json.Delim('{') {
		var out []store.Block
		found := false
		for dec.More() {
			key, err := dec.Token()
			if err != nil {
				return nil, fail(err)
			}
			if key != "blocks" || found {
				return nil, fmt.Errorf("line %d: unexpected key %q: want {\"blocks\": […]}", lt.lineAt(dec.InputOffset()), key)
			}
			found = true
			if tok, err = dec.Token(); err != nil {
				return nil, fail(err)
			}
			if tok == nil { // "blocks": null
				continue
			}
			if tok != json.Delim('[') {
				return nil, fmt.Errorf("line %d: \"blocks\" must be an array", lt.lineAt(dec.InputOffset()))
			}
			if out, err = parseJSONArray(dec, lt, now); err != nil {
				return nil, err
			}
		}
		if _, err := dec.Token(); err != nil { // '}'
			return nil, fail(err)
		}
		return out, endOfJSON(dec, lt)
	}
	if tok != json.Delim('[') {
		return nil, errors.New("want {\"blocks\": […]} or an array of blocks")
	}
	out, err := parseJSONArray(dec, lt, now)
	if err != nil {
		return nil, err
	}
	return out, endOfJSON(dec, lt)
}

// parseJSONArray reads the elements of an array whose '[' was read, and
// its ']'.
func parseJSONArray(dec *json.Decoder, lt *lineTracker, now time.Time) ([]store.Block, error) {
	c := &collector{json: true}
	for i := 0; dec.More(); i++ {
		base := lt.afterComma(dec.InputOffset())
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			var se *json.SyntaxError
			if errors.As(err, &se) {
				// The decoder's offset leaves out the separators it
				// consumed; find the place again in the element's bytes.
				off := base + se.Offset
				var se2 *json.SyntaxError
				if err2 := json.NewDecoder(bytes.NewReader(lt.bytesFrom(base))).Decode(&raw); errors.As(err2, &se2) {
					off = base + se2.Offset
				}
				return nil, fmt.Errorf("line %d: %w", lt.lineAt(off), err)
			}
			if lt.err != nil {
				return nil, lt.err
			}
			return nil, fmt.Errorf("blocks[%d]: %w", i, err)
		}
		if len(raw) > maxImportRow {
			return nil, fmt.Errorf("blocks[%d]: longer than %d bytes", i, maxImportRow)
		}
		// RawMessage holds the element's bytes exactly, so it began
		// len(raw) before the decoder's offset.
		pos := rowPos{index: int32(min(i, 1<<31-1)), line: int32(min(lt.lineAt(dec.InputOffset()-int64(len(raw))), 1<<31-1))}
		where := c.where(pos)
		var r record
		rd := json.NewDecoder(bytes.NewReader(raw))
		rd.DisallowUnknownFields()
		if err := rd.Decode(&r); err != nil {
			return nil, &rowError{where: where, err: jsonFieldError(err)}
		}
		b, err := r.block(where, now)
		if err != nil {
			return nil, err
		}
		if err := c.add(b, pos); err != nil {
			return nil, err
		}
	}
	if _, err := dec.Token(); err != nil { // ']'
		if err == io.EOF {
			return nil, errors.New("unexpected end of JSON")
		}
		if lt.err != nil {
			return nil, lt.err
		}
		return nil, fmt.Errorf("line %d: %w", lt.lineAt(dec.InputOffset()), err)
	}
	return c.finish()
}

// jsonFieldError rewords the decoder's type errors to name the field.
func jsonFieldError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return fmt.Errorf("%s: want a %s, got a JSON %s", te.Field, jsonKind(te.Type.Kind().String()), te.Value)
	}
	if s, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return fmt.Errorf("unknown field %s", s)
	}
	return err
}

func jsonKind(k string) string {
	switch k {
	case "int", "int64":
		return "whole number"
	case "string":
		return "string"
	}
	return k
}

// endOfJSON refuses anything after the document but white space.
func endOfJSON(dec *json.Decoder, lt *lineTracker) error {
	if _, err := dec.Token(); err != io.EOF {
		if lt.err != nil {
			return lt.err
		}
		return fmt.Errorf("line %d: unexpected data after the end of the JSON document", lt.lineAt(dec.InputOffset()))
	}
	return nil
}

// lineTracker passes a stream to the JSON decoder and answers which line an
// offset is on. It keeps only the bytes the decoder may still ask about:
// offsets asked for never decrease, so everything before the last one
// asked is reduced to a count of lines.
type lineTracker struct {
	r        io.Reader
	err      error    // the first read error other than EOF
	chunks   [][]byte // bytes read from base on
	base     int64    // offset of chunks[0]
	baseLine int      // new lines before base
}

func (t *lineTracker) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if n > 0 {
		t.chunks = append(t.chunks, bytes.Clone(p[:n]))
	}
	if err != nil && err != io.EOF && t.err == nil {
		t.err = err
	}
	return n, err
}

// byteAt returns the byte at off, if it is still kept.
func (t *lineTracker) byteAt(off int64) (byte, bool) {
	rest := off - t.base
	if rest < 0 {
		return 0, false
	}
	for _, c := range t.chunks {
		if rest < int64(len(c)) {
			return c[rest], true
		}
		rest -= int64(len(c))
	}
	return 0, false
}

// bytesFrom returns the kept bytes from off on.
func (t *lineTracker) bytesFrom(off int64) []byte {
	var out []byte
	rest := off - t.base
	for _, c := range t.chunks {
		if rest >= int64(len(c)) {
			rest -= int64(len(c))
			continue
		}
		out = append(out, c[max(rest, 0):]...)
		rest = 0
	}
	return out
}

// afterComma returns the offset after the ',' that follows off across
// white space, or off when there is none.
func (t *lineTracker) afterComma(off int64) int64 {
	for i := off; ; i++ {
		c, ok := t.byteAt(i)
		switch {
		case ok && isSpace(c):
			continue
		case ok && c == ',':
			return i + 1
		}
		return off
	}
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// lineAt returns the 1-based line of a byte offset.
func (t *lineTracker) lineAt(off int64) int {
	for len(t.chunks) > 0 && t.base+int64(len(t.chunks[0])) <= off {
		t.baseLine += bytes.Count(t.chunks[0], []byte("\n"))
		t.base += int64(len(t.chunks[0]))
		t.chunks[0] = nil
		t.chunks = t.chunks[1:]
	}
	line := t.baseLine + 1
	rest := off - t.base
	for _, c := range t.chunks {
		if rest <= 0 {
			break
		}
		k := min(rest, int64(len(c)))
		line += bytes.Count(c[:k], []byte("\n"))
		rest -= k
	}
	return line
}
