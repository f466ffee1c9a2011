package patterns

import (
	"bytes"
	"errors"
	"path/filepath"
	"strings"

	"github.com/postern/postern/internal/diag"
	"github.com/postern/postern/internal/safefile"
)

// Source is the text of one pattern definition and where it was written.
type Source struct {
	Name string   // the pattern's name; empty for an anonymous list such as a grant field
	Text string   // items separated by ';' or new lines
	Pos  diag.Pos // where Text starts (Pos.File names the config file)
	// Quoted says Text was a quoted scalar, so its first item starts one
	// column after Pos.Col.
	Quoted bool
}

// maxIncludeDepth bounds nested {include} files.
const maxIncludeDepth = 16

// reader parses lists and include files. It holds the chain of files being
// included, to report cycles.
type reader struct {
	stack   []string
	errs    *diag.List
	maxErrs int
	opened  func(path string) // told of each include file read; may be nil
}

func (r *reader) errorf(pos diag.Pos, format string, args ...any) {
	r.errs.Add(diag.Errorf(pos, format, args...))
}

func (r *reader) full() bool { return r.maxErrs > 0 && len(*r.errs) >= r.maxErrs }

// list parses inline text: items separated by ';', new lines allowed, no
// comments (a '#' there is an error, as in IceWarp's fields).
func (r *reader) list(src Source, emit func(t term, it Item)) {
	file := src.Pos.File
	fp := &file
	line, col := src.Pos.Line, src.Pos.Col
	if src.Quoted {
		col++
	}
	text := src.Text
	for len(text) > 0 && !r.full() {
		var field string
		i := strings.IndexAny(text, ";\n")
		if i < 0 {
			field, text = text, ""
		} else {
			field = text[:i]
		}
		lead := len(field) - len(strings.TrimLeft(field, " \t\r"))
		item := strings.TrimSpace(field)
		if item != "" {
			r.item(item, fp, line, col+lead, filepath.Dir(file), emit)
		}
		if i < 0 {
			break
		}
		if text[i] == '\n' {
			line++
			col = 1
			if src.Quoted || src.Pos.Col > 0 {
				col = src.Pos.Col
			}
		} else {
			col += i + 1
		}
		text = text[i+1:]
	}
}

// item handles one item: an include is read and parsed; anything else is
// parsed and emitted.
func (r *reader) item(s string, file *string, line, col int, dir string, emit func(t term, it Item)) {
	pos := diag.Pos{File: *file, Line: line, Col: col}
	if strings.HasPrefix(s, "{") {
		if !strings.HasSuffix(s, "}") || len(s) < 3 {
			r.errorf(pos, "bad include %q: want {path/to/file}", s)
			return
		}
		r.include(strings.TrimSpace(s[1:len(s)-1]), dir, pos, emit)
		return
	}
	if strings.HasPrefix(s, "!") && strings.HasPrefix(strings.TrimSpace(s[1:]), "{") {
		r.errorf(pos, "an include cannot be excluded; write the exclusions inside a pattern and exclude [it]")
		return
	}
	t, err := parseTerm(s)
	if err != nil {
		r.errorf(pos, "%v", err)
		return
	}
	emit(t, Item{Text: t.body, Kind: t.kind, Negate: t.neg, file: file, line: int32(line), col: int32(col)})
}

// include reads a pattern file: one item a line ('; ' lists allowed),
// '#' starts a comment, blank lines are ignored.
func (r *reader) include(path, dir string, pos diag.Pos, emit func(t term, it Item)) {
	if !filepath.IsAbs(path) {
		path = filepath.Join(dir, path)
	}
	path = filepath.Clean(path)
	for _, p := range r.stack {
		if p == path {
			r.errorf(pos, "include cycle: %s", strings.Join(append(r.stack, path), " includes "))
			return
		}
	}
	if len(r.stack) >= maxIncludeDepth {
		r.errorf(pos, "includes nested more than %d deep", maxIncludeDepth)
		return
	}
	data, err := r.readFile(path)
	if err != nil {
		r.errorf(pos, "include {%s}: %w", path, err)
		return
	}
	if r.opened != nil {
		r.opened(path)
	}
	r.stack = append(r.stack, path)
	defer func() { r.stack = r.stack[:len(r.stack)-1] }()
	file := path
	fp := &file
	fdir := filepath.Dir(path)
	line := 0
	for len(data) > 0 && !r.full() {
		line++
		var ln []byte
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			ln, data = data[:i], data[i+1:]
		} else {
			ln, data = data, nil
		}
		if i := bytes.IndexByte(ln, '#'); i >= 0 {
			ln = ln[:i]
		}
		if line == 1 {
			ln = bytes.TrimPrefix(ln, []byte("\xef\xbb\xbf")) // UTF-8 byte order mark
		}
		if bytes.IndexByte(ln, 0) >= 0 {
			r.errorf(diag.Pos{File: file, Line: line}, "NUL byte: is this a text file?")
			return
		}
		s := string(ln)
		col := 1
		for s != "" {
			field, rest, more := strings.Cut(s, ";")
			lead := len(field) - len(strings.TrimLeft(field, " \t\r"))
			if item := strings.TrimSpace(field); item != "" {
				r.item(item, fp, line, col+lead, fdir, emit)
			}
			if !more {
				break
			}
			col += len(field) + 1
			s = rest
		}
	}
}

// readFile reads an include file: a regular file of at most
// safefile.MaxText bytes (a device, FIFO or directory is refused at once).
func (r *reader) readFile(path string) ([]byte, error) {
	data, err := safefile.ReadFile(path, safefile.MaxText)
	if err != nil {
		return nil, errors.Unwrap(err) // the cause alone: the caller names the path
	}
	return data, nil
}
