package admin

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"time"

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

// block validates a record; where names it in errors.
func (r *record) block(where string) (store.Block, error) {
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
	if b.Reason, err = store.ParseReason(r.Reason); err != nil {
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
	if r.Hits < 0 {
		return b, bad("hits", fmt.Errorf("%d is negative", r.Hits))
	}
	if r.Level < 0 {
		return b, bad("level", fmt.Errorf("%d is negative", r.Level))
	}
	b.Service, b.Detail, b.Hits, b.Node, b.By, b.Comment, b.Level = r.Service, r.Detail, r.Hits, r.Node, r.By, r.Comment, r.Level
	return b, nil
}

// dedup refuses a second row for the same prefix.
type dedup map[netip.Prefix]string

func (d dedup) add(p netip.Prefix, where string) error {
	if first, ok := d[p]; ok {
		return &rowError{where: where, field: "target", err: fmt.Errorf("%s is already in %s", FormatTarget(p), first)}
	}
	d[p] = where
	return nil
}

// ParseCSV reads blocks in the CSV format. The header row names the
// columns (any order; target and reason are required, the others may be
// left out); errors name the line and the field.
func ParseCSV(data []byte) ([]store.Block, error) {
	data = bytes.TrimPrefix(data, []byte("\uFEFF"))
	cr := csv.NewReader(bytes.NewReader(data))
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
	var out []store.Block
	seen := dedup{}
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			return out, nil
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
		r := record{
			Target: get("target"), Reason: get("reason"), Service: get("service"), Detail: get("detail"),
			FirstSeen: get("first_seen"), LastSeen: get("last_seen"), Node: get("node"), By: get("by"), Comment: get("comment"),
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
		b, err := r.block(where)
		if err != nil {
			return nil, err
		}
		if err := seen.add(b.Prefix, where); err != nil {
			return nil, err
		}
		out = append(out, b)
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

// ParseJSON reads blocks in the JSON format: {"blocks":[…]} as exported, or
// a bare array of blocks. Unknown fields are errors; reason_name and expired
// are accepted and ignored (they are derived). Errors name the element, its
// line and the field.
func ParseJSON(data []byte) ([]store.Block, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	fail := func(err error) error {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return fmt.Errorf("line %d: %w", lineAt(data, se.Offset), err)
		}
		if err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) {
			return errors.New("unexpected end of JSON")
		}
		return fmt.Errorf("line %d: %w", lineAt(data, dec.InputOffset()), err)
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
				return nil, fmt.Errorf("line %d: unexpected key %q: want {\"blocks\": […]}", lineAt(data, dec.InputOffset()), key)
			}
			found = true
			if tok, err = dec.Token(); err != nil {
				return nil, fail(err)
			}
			if tok == nil { // "blocks": null
				continue
			}
			if tok != json.Delim('[') {
				return nil, fmt.Errorf("line %d: \"blocks\" must be an array", lineAt(data, dec.InputOffset()))
			}
			if out, err = parseJSONArray(dec, data); err != nil {
				return nil, err
			}
		}
		if _, err := dec.Token(); err != nil { // '}'
			return nil, fail(err)
		}
		return out, endOfJSON(dec, data)
	}
	if tok != json.Delim('[') {
		return nil, errors.New("want {\"blocks\": […]} or an array of blocks")
	}
	out, err := parseJSONArray(dec, data)
	if err != nil {
		return nil, err
	}
	return out, endOfJSON(dec, data)
}

// parseJSONArray reads the elements of an array whose '[' was read, and
// its ']'.
func parseJSONArray(dec *json.Decoder, data []byte) ([]store.Block, error) {
	var out []store.Block
	seen := dedup{}
	for i := 0; dec.More(); i++ {
		start := dec.InputOffset()
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			var se *json.SyntaxError
			if errors.As(err, &se) {
				return nil, fmt.Errorf("line %d: %w", lineAt(data, se.Offset), err)
			}
			return nil, fmt.Errorf("blocks[%d]: %w", i, err)
		}
		// The offset before Decode is at the separator; skip to the element.
		for start < int64(len(data)) && (data[start] == ',' || isSpace(data[start])) {
			start++
		}
		where := fmt.Sprintf("blocks[%d] (line %d)", i, lineAt(data, start))
		var r record
		rd := json.NewDecoder(bytes.NewReader(raw))
		rd.DisallowUnknownFields()
		if err := rd.Decode(&r); err != nil {
			return nil, &rowError{where: where, err: jsonFieldError(err)}
		}
		b, err := r.block(where)
		if err != nil {
			return nil, err
		}
		if err := seen.add(b.Prefix, where); err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	if _, err := dec.Token(); err != nil { // ']'
		if err == io.EOF {
			return nil, errors.New("unexpected end of JSON")
		}
		return nil, fmt.Errorf("line %d: %w", lineAt(data, dec.InputOffset()), err)
	}
	return out, nil
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
func endOfJSON(dec *json.Decoder, data []byte) error {
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("line %d: unexpected data after the end of the JSON document", lineAt(data, dec.InputOffset()))
	}
	return nil
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// lineAt returns the 1-based line of a byte offset.
func lineAt(data []byte, off int64) int {
	off = min(max(off, 0), int64(len(data)))
	return bytes.Count(data[:off], []byte("\n")) + 1
}
