package smtpproxy

import "bytes"

// maxInspectLine bounds how much of one line content rules look at.
const maxInspectLine = 8 << 10

// inspector matches content rules against a message as it streams by, in
// chunks that need not end at line ends.
type inspector struct {
	rules  []ContentRule
	line   []byte
	body   bool // past the empty line that ends the headers
	failed string
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
		if room := maxInspectLine - len(in.line); room > 0 {
			in.line = append(in.line, part[:min(len(part), room)]...)
		}
		if i < 0 {
			return ""
		}
		p = p[i+1:]
		if rule := in.endLine(); rule != "" {
			in.failed = rule
			return rule
		}
	}
	return ""
}

func (in *inspector) endLine() string {
	l := bytes.TrimSuffix(in.line, []byte("\r"))
	defer func() { in.line = in.line[:0] }()
	if bytes.HasPrefix(l, []byte("..")) {
		l = l[1:] // dot-stuffed
	}
	if !in.body && len(l) == 0 {
		in.body = true
		return ""
	}
	for _, r := range in.rules {
		if !in.body && r.Header != nil && r.Header.Match(l) || in.body && r.Body != nil && r.Body.Match(l) {
			return r.Name
		}
	}
	return ""
}
