package smtpproxy

import (
	"bytes"
	"html"
	"mime"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"golang.org/x/text/encoding"
	"golang.org/x/text/encoding/htmlindex"
	"golang.org/x/text/encoding/ianaindex"
	xunicode "golang.org/x/text/encoding/unicode"
	"golang.org/x/text/transform"

	"github.com/postern/postern/internal/guard"
)

// Limits of what content rules look at. Every buffer the inspector keeps is
// bounded by one of them, whatever the message.
const (
	// maxInspectLine bounds how much of one line (as sent, or decoded)
	// content rules look at.
	maxInspectLine = 8 << 10
	// maxHeaderField bounds an unfolded header field.
	maxHeaderField = 32 << 10
	// defaultDecodeBudget is how many bytes of decoded text (header fields
	// and text parts) one message may make the inspector decode and match.
	defaultDecodeBudget = 4 << 20
	// maxMIMEDepth bounds nested multiparts and nested messages.
	maxMIMEDepth = 32
	// windowOverlap is how much two windows over a long decoded line
	// overlap.
	windowOverlap = 1 << 10
	// maxBoundary bounds a multipart boundary (RFC 2046 allows 70).
	maxBoundary = 200
)

// ambiguousMIME is reported like a rule name for a message whose structure
// mail readers may read in different ways (two different Content-Type or
// Content-Transfer-Encoding fields in one part, two boundaries): its
// decoded text cannot be known with certainty, so it is refused.
const ambiguousMIME = "ambiguous MIME structure"

// inspector matches content rules against a message as it streams by, in
// chunks that need not end at line ends, the way a mail reader shows it:
// header fields unfolded and with RFC 2047 encoded-words decoded; text
// parts with quoted-printable or base64 undone, converted from their
// charset to UTF-8, format=flowed lines joined, and for HTML with the tags
// removed and entities decoded. Each rule is matched against the decoded
// form and against the lines as sent (as before decoding existed), so a
// rule written for either matches. Decoding stops once the message has
// produced budget bytes of decoded text; the rest is matched as sent.
//
// Header rules see every header: the message's, each MIME part's and each
// attached message's (as Postfix applies header_checks to all of them).
type inspector struct {
	rules  []ContentRule
	budget int64 // decoded bytes; 0: defaultDecodeBudget
	failed string

	line      []byte // the current line as sent (up to maxInspectLine)
	streaming bool   // the current line is longer and goes to the decoder as it comes
	inBody    bool   // past the header of the current entity
	field     []byte // the header field being unfolded
	part      partHeader
	bounds    []string // open multipart boundaries, outermost first
	nested    int      // message/rfc822 entities entered
	dec       *textDecoder
	used      int64 // decoded bytes so far
	over      bool  // the budget is spent
	view      []byte
}

// partHeader collects what one entity's header says about its body.
type partHeader struct {
	ctype, cte   string // first values, lower case
	params       map[string]string
	ctSeen       bool
	cteSeen      bool
	contradicted bool
}

// feed takes the next bytes of the message and returns the name of the
// first rule that matched, or "".
func (in *inspector) feed(p []byte) string {
	if in.failed != "" {
		return ""
	}
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		part := p
		if i >= 0 {
			part = p[:i]
		}
		room := maxInspectLine - len(in.line)
		in.line = append(in.line, part[:min(len(part), room)]...)
		if rest := part[min(len(part), room):]; len(rest) > 0 {
			if r := in.longLine(rest); r != "" {
				in.failed = r
				return r
			}
		}
		if i < 0 {
			return ""
		}
		p = p[i+1:]
		rule := in.endLine()
		in.line, in.streaming = in.line[:0], false
		if rule != "" {
			in.failed = rule
			return rule
		}
	}
	return ""
}

// longLine takes the bytes of a line beyond the first maxInspectLine: rules
// do not see them as sent, but a base64 or quoted-printable text part's
// decoder does, so that a part sent as one long line is read whole.
func (in *inspector) longLine(rest []byte) string {
	if !in.inBody || in.dec == nil || in.dec.cte == 0 || in.over {
		return ""
	}
	if !in.streaming {
		l := in.line
		if bytes.HasPrefix(l, []byte("..")) {
			l = l[1:]
		}
		if len(in.bounds) > 0 && bytes.HasPrefix(l, []byte("--")) {
			if _, _, ok := in.boundary(l); ok {
				return "" // a delimiter line, however long
			}
		}
		in.streaming = true
		if r := in.dec.more(in, l); r != "" {
			return r
		}
	}
	return in.dec.more(in, rest)
}

// finish is called at the end of the message: what is still held (the
// last header field, a line without a line end, the rest of a base64 or
// charset sequence, a flowed paragraph) is matched. It returns the name of
// the rule that matched, or "".
func (in *inspector) finish() string {
	if in.failed != "" {
		return ""
	}
	rule := ""
	if len(in.line) > 0 {
		rule = in.endLine()
		in.line = in.line[:0]
	}
	if rule == "" {
		rule = in.endEntity()
	}
	if rule != "" {
		in.failed = rule
	}
	return rule
}

func (in *inspector) endLine() string {
	l := bytes.TrimSuffix(in.line, []byte("\r"))
	if bytes.HasPrefix(l, []byte("..")) {
		l = l[1:] // dot-stuffed
	}
	if len(in.bounds) > 0 && bytes.HasPrefix(l, []byte("--")) {
		if i, closing, ok := in.boundary(l); ok {
			if r := in.endEntity(); r != "" {
				return r
			}
			if closing {
				// The epilogue: text no reader shows, matched as sent.
				in.bounds = in.bounds[:i]
				in.inBody = true
			} else {
				in.bounds = in.bounds[:i+1]
				in.inBody = false
				in.part = partHeader{}
			}
			return in.match(false, l)
		}
	}
	if !in.inBody {
		return in.headerLine(l)
	}
	if r := in.match(false, l); r != "" {
		return r
	}
	if in.dec != nil && !in.over {
		if in.streaming {
			// The start of the line went to the decoder already.
			return in.dec.line(in, nil)
		}
		return in.dec.line(in, l)
	}
	return ""
}

// boundary reports whether l is a delimiter line of an open multipart
// (the innermost that matches wins), and whether it closes it. As Postfix
// and most readers, anything may follow the boundary on the line.
func (in *inspector) boundary(l []byte) (int, bool, bool) {
	for i := len(in.bounds) - 1; i >= 0; i-- {
		b := in.bounds[i]
		if len(l) >= 2+len(b) && string(l[2:2+len(b)]) == b {
			return i, bytes.HasPrefix(l[2+len(b):], []byte("--")), true
		}
	}
	return 0, false, false
}

// headerLine takes one line of an entity's header.
func (in *inspector) headerLine(l []byte) string {
	if len(l) > 0 && (l[0] == ' ' || l[0] == '\t') && len(in.field) > 0 {
		// A continuation line: unfolding removes the line end only.
		in.field = append(in.field, l[:min(len(l), maxHeaderField-len(in.field))]...)
		return ""
	}
	if r := in.endField(); r != "" {
		return r
	}
	if len(l) == 0 {
		return in.endHeader()
	}
	in.field = append(in.field, l...)
	return ""
}

// endField matches the header field collected and notes what it says of
// the body.
func (in *inspector) endField() string {
	f := in.field
	if len(f) == 0 {
		return ""
	}
	defer func() { in.field = in.field[:0] }()
	name, value, colon := bytes.Cut(f, []byte(":"))
	isField := colon && isFieldName(name)
	if isField {
		in.part.note(string(bytes.ToLower(bytes.TrimRight(name, " \t"))), string(value))
	}
	if r := in.match(true, f); r != "" {
		return r
	}
	if !isField {
		// Not a header field: a reader may show it as text.
		if r := in.match(false, f); r != "" {
			return r
		}
	}
	if !colon {
		return ""
	}
	// As a reader shows it: "Subject : x" is the subject (RFC 5322's
	// obsolete syntax), encoded-words decoded.
	trimmed := bytes.TrimRight(name, " \t")
	d := value
	if !in.over && bytes.Contains(value, []byte("=?")) {
		d = decodeWords(value)
		in.spend(len(d))
	}
	if len(trimmed) != len(name) || !bytes.Equal(d, value) {
		in.view = append(append(append(in.view[:0], trimmed...), ':'), d...)
		return in.match(true, in.view)
	}
	return ""
}

func isFieldName(b []byte) bool {
	b = bytes.TrimRight(b, " \t")
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c <= ' ' || c >= 127 {
			return false
		}
	}
	return true
}

func (p *partHeader) note(name, value string) {
	switch name {
	case "content-type":
		t, params, ok := parseContentType(value)
		if p.ctSeen && (t != p.ctype || params["boundary"] != p.params["boundary"] || params["charset"] != p.params["charset"]) || !ok {
			p.contradicted = true
		}
		if !p.ctSeen {
			p.ctype, p.params, p.ctSeen = t, params, true
		}
	case "content-transfer-encoding":
		v := strings.ToLower(strings.TrimSpace(value))
		if i := strings.IndexAny(v, " \t("); i >= 0 {
			v = v[:i]
		}
		if p.cteSeen && v != p.cte {
			p.contradicted = true
		}
		if !p.cteSeen {
			p.cte, p.cteSeen = v, true
		}
	}
}

// parseContentType reads "type/subtype; name=value; name="quoted"" leniently,
// as readers do; ok is false when one parameter is given twice with
// different values (readers differ on which one counts).
func parseContentType(v string) (string, map[string]string, bool) {
	if t, params, err := mime.ParseMediaType(v); err == nil {
		// Well-formed, RFC 2231 continuations and charsets included
		// (boundary*0="a"; boundary*1="b").
		return t, params, true
	}
	parts := splitParams(v)
	t := strings.ToLower(strings.TrimSpace(parts[0]))
	if i := strings.IndexAny(t, " \t("); i >= 0 {
		t = t[:i]
	}
	params := map[string]string{}
	ok := true
	for _, p := range parts[1:] {
		k, val, found := strings.Cut(p, "=")
		if !found {
			continue
		}
		k = strings.ToLower(strings.TrimSpace(k))
		val = strings.TrimSpace(val)
		if len(val) >= 2 && val[0] == '"' {
			val = unquote(val)
		}
		if old, dup := params[k]; dup && old != val || strings.Contains(k, "*") {
			// Readers differ on duplicates, and on RFC 2231 parameters
			// in a malformed field.
			ok = false
		}
		if _, dup := params[k]; !dup {
			params[k] = val
		}
	}
	return t, params, ok
}

// splitParams splits at semicolons outside quoted strings.
func splitParams(v string) []string {
	var out []string
	start, q := 0, false
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c == '\\' && q:
			i++
		case c == '"':
			q = !q
		case c == ';' && !q:
			out = append(out, v[start:i])
			start = i + 1
		}
	}
	return append(out, v[start:])
}

func unquote(v string) string {
	var b strings.Builder
	for i := 1; i < len(v); i++ {
		c := v[i]
		if c == '"' {
			break
		}
		if c == '\\' && i+1 < len(v) {
			i++
			c = v[i]
		}
		b.WriteByte(c)
	}
	return b.String()
}

// endHeader decides, at the empty line that ends an entity's header, how
// its body is read.
func (in *inspector) endHeader() string {
	p := in.part
	in.part = partHeader{}
	in.inBody, in.dec = true, nil
	if p.contradicted {
		return ambiguousMIME
	}
	identity := p.cte == "" || p.cte == "7bit" || p.cte == "8bit" || p.cte == "binary"
	switch {
	case strings.HasPrefix(p.ctype, "multipart/"):
		b := p.params["boundary"]
		if b == "" {
			// No reader can tell where its parts are.
			return ambiguousMIME
		}
		if len(b) <= maxBoundary && len(in.bounds) < maxMIMEDepth {
			in.bounds = append(in.bounds, b)
		}
	case (p.ctype == "message/rfc822" || p.ctype == "message/global") && identity && in.nested < maxMIMEDepth:
		in.nested++
		in.inBody = false // an attached message: its header follows
	case p.ctype == "" || strings.HasPrefix(p.ctype, "text/"):
		d := &textDecoder{html: p.ctype == "text/html"}
		switch p.cte {
		case "quoted-printable":
			d.cte = 'q'
		case "base64":
			d.cte = 'b'
		}
		d.conv = charsetDecoder(p.params["charset"])
		if p.ctype == "text/plain" && strings.EqualFold(p.params["format"], "flowed") {
			d.flowed = true
			d.delsp = strings.EqualFold(p.params["delsp"], "yes")
		}
		if d.cte != 0 || d.conv != nil || d.flowed || d.html {
			in.dec = d // else the text is the lines as sent, matched already
		}
	}
	return ""
}

// endEntity ends the current entity: the header field held and what its
// decoder holds are matched.
func (in *inspector) endEntity() string {
	if !in.inBody {
		if r := in.endField(); r != "" {
			return r
		}
		if in.part.contradicted {
			return ambiguousMIME
		}
	}
	d := in.dec
	in.dec = nil
	if d != nil && !in.over {
		return d.end(in)
	}
	return ""
}

// spend counts n decoded bytes against the budget.
func (in *inspector) spend(n int) {
	in.used += int64(n)
	budget := in.budget
	if budget <= 0 {
		budget = defaultDecodeBudget
	}
	if in.used > budget {
		in.over = true
	}
}

// match matches the header or body rules against one line or field, and
// when it holds invisible formatting characters (zero-width space, soft
// hyphen, joiners, direction marks: Unicode's Cf) also against the line
// without them, as a reader shows it.
func (in *inspector) match(header bool, l []byte) string {
	if r := in.match1(header, l); r != "" {
		return r
	}
	if v, ok := withoutFormatChars(l); ok {
		return in.match1(header, v)
	}
	return ""
}

// withoutFormatChars returns l without its Cf characters, and whether it
// had any.
func withoutFormatChars(l []byte) ([]byte, bool) {
	i := 0
	for i < len(l) && l[i] < utf8.RuneSelf {
		i++
	}
	if i == len(l) {
		return nil, false
	}
	var out []byte
	for j := i; j < len(l); {
		r, n := utf8.DecodeRune(l[j:])
		if unicode.Is(unicode.Cf, r) {
			if out == nil {
				out = append(make([]byte, 0, len(l)), l[:j]...)
			}
		} else if out != nil {
			out = append(out, l[j:j+n]...)
		}
		j += n
	}
	return out, out != nil
}

func (in *inspector) match1(header bool, l []byte) string {
	for _, r := range in.rules {
		re := r.Body
		if header {
			re = r.Header
		}
		if re != nil && re.Match(l) {
			return r.Name
		}
	}
	return ""
}

// textDecoder turns the lines of a text part as sent into the lines a
// reader shows.
type textDecoder struct {
	cte    byte   // 0 (as sent), 'q' (quoted-printable) or 'b' (base64)
	carry  []byte // the held end of a long quoted-printable line
	b64    [4]byte
	nb64   int
	conv   transform.Transformer // nil: UTF-8 or ASCII, as sent
	convIn []byte                // bytes waiting for the rest of a character
	text   []byte                // the decoded line so far
	flowed bool
	delsp  bool
	flow   []byte // a flowed paragraph so far
	html   bool
	inTag  bool
	hold   []byte // HTML text before a tag that goes on over the line end
	out    []byte
	buf    [1024]byte
}

// line takes one line of the part as sent.
func (d *textDecoder) line(in *inspector, l []byte) string {
	d.out = d.out[:0]
	if len(d.carry) > 0 {
		// The end of a long line whose start went through more.
		d.carry = append(d.carry, l...)
		l = bytes.TrimSuffix(d.carry, []byte("\r"))
		defer func() { d.carry = d.carry[:0] }()
	}
	switch d.cte {
	case 'q':
		l = bytes.TrimRight(l, " \t")
		soft := len(l) > 0 && l[len(l)-1] == '='
		if soft {
			l = l[:len(l)-1]
		}
		d.qp(l)
		if !soft {
			d.out = append(d.out, '\n')
		}
	case 'b':
		d.base64(l)
	default:
		d.out = append(append(d.out, l...), '\n')
	}
	in.spend(len(d.out))
	return d.convert(in, d.out, false)
}

// more takes part of a line longer than a rule sees (a whole base64 text
// in one line, say): it is decoded as it comes, so no text hides beyond
// the first 8 KiB of a line. What may change meaning at the line end (the
// last characters of a quoted-printable line) is held for line.
func (d *textDecoder) more(in *inspector, p []byte) string {
	d.out = d.out[:0]
	switch d.cte {
	case 'b':
		d.base64(p)
	case 'q':
		d.carry = append(d.carry, p...)
		cut := len(d.carry)
		for cut > 0 && (d.carry[cut-1] == ' ' || d.carry[cut-1] == '\t' || d.carry[cut-1] == '\r') {
			cut--
		}
		if i := bytes.LastIndexByte(d.carry[max(0, cut-2):cut], '='); i >= 0 {
			cut = max(0, cut-2) + i
		}
		if len(d.carry)-cut > 1024 {
			cut = len(d.carry) - 2 // a long run of white space: not all of it is held
		}
		d.qp(d.carry[:cut])
		n := copy(d.carry, d.carry[cut:])
		d.carry = d.carry[:n]
	default:
		return ""
	}
	in.spend(len(d.out))
	return d.convert(in, d.out, false)
}

// qp decodes quoted-printable text without line ends: =XX escapes (either
// case); an '=' that starts no escape stays, as readers keep it.
func (d *textDecoder) qp(l []byte) {
	for i := 0; i < len(l); i++ {
		if l[i] == '=' && i+2 < len(l) && isHex(l[i+1]) && isHex(l[i+2]) {
			d.out = append(d.out, unhex(l[i+1])<<4|unhex(l[i+2]))
			i += 2
			continue
		}
		d.out = append(d.out, l[i])
	}
}

// base64 decodes base64 text; padding ends a group and decoding goes on
// after it, characters outside the alphabet are skipped (as readers do).
func (d *textDecoder) base64(l []byte) {
	for _, c := range l {
		if c == '=' {
			d.flushBase64()
			continue
		}
		v := b64val[c]
		if v == 0xff {
			continue
		}
		d.b64[d.nb64] = v
		d.nb64++
		if d.nb64 == 4 {
			d.out = append(d.out, d.b64[0]<<2|d.b64[1]>>4, d.b64[1]<<4|d.b64[2]>>2, d.b64[2]<<6|d.b64[3])
			d.nb64 = 0
		}
	}
}

// end flushes what is held at the end of the part.
func (d *textDecoder) end(in *inspector) string {
	d.out = d.out[:0]
	if d.cte == 'b' {
		d.flushBase64()
	}
	if r := d.convert(in, d.out, true); r != "" {
		return r
	}
	if len(d.text) > 0 {
		if r := d.textLine(in, d.text); r != "" {
			return r
		}
		d.text = d.text[:0]
	}
	if len(d.flow) > 0 {
		f := d.flow
		d.flow = nil
		if r := d.show(in, f); r != "" {
			return r
		}
	}
	if len(d.hold) > 0 {
		return in.match(false, d.hold)
	}
	return ""
}

// flushBase64 decodes an incomplete group at padding or at the end.
func (d *textDecoder) flushBase64() {
	switch d.nb64 {
	case 2:
		d.out = append(d.out, d.b64[0]<<2|d.b64[1]>>4)
	case 3:
		d.out = append(d.out, d.b64[0]<<2|d.b64[1]>>4, d.b64[1]<<4|d.b64[2]>>2)
	}
	d.nb64 = 0
}

// convert takes decoded bytes in the part's charset and passes on UTF-8
// text, line by line.
func (d *textDecoder) convert(in *inspector, p []byte, atEOF bool) string {
	if d.conv == nil {
		return d.addText(in, p)
	}
	d.convIn = append(d.convIn, p...)
	for {
		nDst, nSrc, err := d.conv.Transform(d.buf[:], d.convIn, atEOF)
		n := copy(d.convIn, d.convIn[nSrc:])
		d.convIn = d.convIn[:n]
		if r := d.addText(in, d.buf[:nDst]); r != "" {
			return r
		}
		if err == transform.ErrShortDst && (nDst > 0 || nSrc > 0) {
			continue
		}
		if err != nil && err != transform.ErrShortSrc || len(d.convIn) > 64 || atEOF {
			// Undecodable: pass the bytes on as they are.
			r := d.addText(in, d.convIn)
			d.convIn = d.convIn[:0]
			d.conv.Reset()
			return r
		}
		return ""
	}
}

// addText appends UTF-8 text and matches each line it completes.
func (d *textDecoder) addText(in *inspector, p []byte) string {
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		part := p
		if i >= 0 {
			part = p[:i]
		}
		for len(d.text)+len(part) > maxInspectLine {
			// A decoded line longer than a rule sees: matched in windows
			// that overlap by windowOverlap bytes, so a phrase shorter
			// than that is seen wherever it is.
			k := maxInspectLine - len(d.text)
			d.text = append(d.text, part[:k]...)
			part = part[k:]
			if r := in.match(false, d.text); r != "" {
				return r
			}
			n := copy(d.text, d.text[len(d.text)-windowOverlap:])
			d.text = d.text[:n]
		}
		d.text = append(d.text, part...)
		if i < 0 {
			return ""
		}
		p = p[i+1:]
		r := d.textLine(in, d.text)
		d.text = d.text[:0]
		if r != "" {
			return r
		}
	}
	return ""
}

// textLine takes one decoded line: format=flowed joins soft-broken lines
// (RFC 3676) before it is shown.
func (d *textDecoder) textLine(in *inspector, l []byte) string {
	l = bytes.TrimSuffix(l, []byte("\r"))
	if !d.flowed {
		return d.show(in, l)
	}
	if len(l) > 0 && l[0] == ' ' {
		l = l[1:] // space-stuffed
	}
	if len(l) > 0 && l[len(l)-1] == ' ' && string(l) != "-- " {
		if d.delsp {
			l = l[:len(l)-1]
		}
		if room := maxInspectLine - len(d.flow); room > 0 {
			d.flow = append(d.flow, l[:min(len(l), room)]...)
		}
		return ""
	}
	if len(d.flow) > 0 {
		if room := maxInspectLine - len(d.flow); room > 0 {
			d.flow = append(d.flow, l[:min(len(l), room)]...)
		}
		l = d.flow
		d.flow = d.flow[:0]
	}
	return d.show(in, l)
}

// show matches a line as a reader shows it; for HTML also without its
// tags and with entities decoded.
func (d *textDecoder) show(in *inspector, l []byte) string {
	if r := in.match(false, l); r != "" {
		return r
	}
	if !d.html {
		return ""
	}
	// A tag may go on over the next line: the text before it is held and
	// shown with the text after it, as a reader renders it.
	v := append(in.view[:0], d.hold...)
	d.hold = d.hold[:0]
	for _, c := range l {
		switch {
		case d.inTag:
			d.inTag = c != '>'
		case c == '<':
			d.inTag = true
		default:
			v = append(v, c)
		}
	}
	in.view = v
	if d.inTag {
		d.hold = append(d.hold, v[:min(len(v), maxInspectLine)]...)
		return ""
	}
	if bytes.IndexByte(v, '&') >= 0 {
		v = []byte(html.UnescapeString(string(v)))
	}
	if bytes.Equal(v, l) {
		return ""
	}
	return in.match(false, v)
}

var b64val = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for i, c := range "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/" {
		t[c] = byte(i)
	}
	// The URL-safe alphabet, which some readers accept too.
	t['-'], t['_'] = 62, 63
	return t
}()

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

// charsetDecoder returns a converter from charset name to UTF-8, or nil
// when none is needed or the charset is unknown (its bytes are matched as
// they are).
func charsetDecoder(name string) transform.Transformer {
	switch strings.ToLower(strings.TrimSpace(name)) {
	case "utf-7", "unicode-1-1-utf-7", "csunicode11utf7":
		// Not in golang.org/x/text, but decoded by mail readers.
		return &utf7Decoder{}
	}
	if enc := lookupCharset(name); enc != nil {
		return enc.NewDecoder()
	}
	return nil
}

// utf7Decoder converts UTF-7 (RFC 2152) to UTF-8. Its state lives in the
// struct, so it takes every byte it is given.
type utf7Decoder struct {
	shift bool // inside "+...": modified base64 of UTF-16
	first bool // just after the '+'
	bits  uint32
	nbits uint
	high  rune // a high surrogate waiting for its pair
}

func (u *utf7Decoder) Reset() { *u = utf7Decoder{} }

func isBase64Std(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '+' || c == '/'
}

func (u *utf7Decoder) Transform(dst, src []byte, atEOF bool) (nDst, nSrc int, err error) {
	for nSrc < len(src) {
		if len(dst)-nDst < 2*utf8.UTFMax {
			return nDst, nSrc, transform.ErrShortDst
		}
		c := src[nSrc]
		if u.shift {
			if isBase64Std(c) {
				u.bits = u.bits<<6 | uint32(b64val[c])
				u.nbits += 6
				u.first = false
				if u.nbits >= 16 {
					u.nbits -= 16
					nDst += u.unit(dst[nDst:], rune(u.bits>>u.nbits&0xffff))
					u.bits &= 1<<u.nbits - 1
				}
				nSrc++
				continue
			}
			first := u.first
			u.shift, u.first, u.bits, u.nbits = false, false, 0, 0
			nDst += u.flushHigh(dst[nDst:])
			if c == '-' {
				if first {
					dst[nDst] = '+' // "+-" is a plus sign
					nDst++
				}
				nSrc++
				continue
			}
		}
		if c == '+' {
			u.shift, u.first = true, true
			nSrc++
			continue
		}
		nDst += u.flushHigh(dst[nDst:])
		dst[nDst] = c
		nDst++
		nSrc++
	}
	return nDst, nSrc, nil
}

// unit writes one UTF-16 code unit, pairing surrogates.
func (u *utf7Decoder) unit(dst []byte, r rune) int {
	switch {
	case utf16.IsSurrogate(r) && r < 0xdc00:
		n := u.flushHigh(dst)
		u.high = r
		return n
	case utf16.IsSurrogate(r) && u.high != 0:
		n := utf8.EncodeRune(dst, utf16.DecodeRune(u.high, r))
		u.high = 0
		return n
	}
	n := u.flushHigh(dst)
	return n + utf8.EncodeRune(dst[n:], r)
}

func (u *utf7Decoder) flushHigh(dst []byte) int {
	if u.high == 0 {
		return 0
	}
	u.high = 0
	return utf8.EncodeRune(dst, utf8.RuneError)
}

// lookupCharset finds a charset the way go-message's charset package does
// (the IANA MIME names, then with a "cs" prefix, then the WHATWG names
// browsers use); nil for UTF-8 and ASCII, which need no conversion, and for
// unknown names, whose bytes are matched as they are.
func lookupCharset(name string) encoding.Encoding {
	name = strings.ToLower(strings.TrimSpace(name))
	if i := strings.IndexByte(name, '*'); i >= 0 {
		name = name[:i] // an RFC 2231 language suffix
	}
	switch name {
	case "", "us-ascii", "ascii", "utf-8", "utf8":
		return nil
	}
	enc, _ := ianaindex.MIME.Encoding(name)
	if enc == nil {
		enc, _ = ianaindex.MIME.Encoding("cs" + name)
	}
	if enc == nil {
		enc, _ = htmlindex.Get(name)
	}
	if enc == xunicode.UTF8 {
		return nil
	}
	return enc
}

// encodedWord is an RFC 2047 encoded-word, read leniently as readers do
// (white space and '?'-free text inside it, any case).
var encodedWord = regexp.MustCompile(`=\?([^?\s]+)\?([bBqQ])\?([^?]*)\?=`)

// decodeWords decodes the encoded-words of a header field value; white
// space between two adjacent encoded-words is dropped (RFC 2047). A word
// that cannot be decoded stays as it is.
func decodeWords(v []byte) []byte {
	locs := encodedWord.FindAllSubmatchIndex(v, -1)
	if locs == nil {
		return v
	}
	var out []byte
	last := 0
	prevWord := false
	for _, m := range locs {
		between := v[last:m[0]]
		if !(prevWord && len(bytes.Trim(between, " \t")) == 0) {
			out = append(out, between...)
		}
		cs, kind, text := string(v[m[2]:m[3]]), v[m[4]], v[m[6]:m[7]]
		var raw []byte
		if kind == 'b' || kind == 'B' {
			d := textDecoder{}
			d.base64(text)
			d.flushBase64()
			raw = d.out
		} else {
			for i := 0; i < len(text); i++ {
				switch c := text[i]; {
				case c == '_':
					raw = append(raw, ' ')
				case c == '=' && i+2 < len(text) && isHex(text[i+1]) && isHex(text[i+2]):
					raw = append(raw, unhex(text[i+1])<<4|unhex(text[i+2]))
					i += 2
				default:
					raw = append(raw, c)
				}
			}
		}
		if t := charsetDecoder(cs); t != nil {
			if u, _, err := transform.Bytes(t, raw); err == nil {
				raw = u
			}
		}
		out = append(out, raw...)
		last, prevWord = m[1], true
	}
	return append(out, v[last:]...)
}

// checkEnd matches what the content rules still hold when a message ends
// (its last header field, an unterminated line, the rest of a base64 or
// charset sequence, a flowed paragraph). The session calls it after the
// last byte of the message and before the message's end goes to the
// backend; like check, it reports a decision that ends the session.
func (s *session) checkEnd(m *msgState) (guard.Decision, string) {
	if m.insp == nil {
		return guard.Decision{}, ""
	}
	if rule := m.insp.finish(); rule != "" {
		s.log.Info("content rule matched", "rule", rule)
		if d := s.gs.ContentRule(rule); d.Reject {
			return d, "554 5.7.1 Error: message content rejected"
		}
	}
	return guard.Decision{}, ""
}
