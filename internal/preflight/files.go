package preflight

import (
	"bufio"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/postern/postern/internal/admin"
	"github.com/postern/postern/internal/diag"
	"github.com/postern/postern/internal/safefile"
)

// DefaultStorePath and the admin defaults mirror serve's, for a
// configuration that leaves them out.
const DefaultStorePath = "/var/lib/postern/postern.db"

// cred is the identity serve runs as after dropping privileges.
type cred struct {
	name   string
	uid    uint32
	groups map[uint32]bool // primary and supplementary
}

// access bits as in a file mode's rwx triple.
const (
	permRead  = 4
	permWrite = 2
	permExec  = 1
)

// need is one file serve reads (or a directory it creates files in) after
// it has dropped privileges, and why.
type need struct {
	path string
	what string // "the configuration", "the include …"
	perm uint32 // permRead for files, permWrite|permExec for directories to create in
	pos  diag.Pos
}

// runAs checks the run_as user: it must exist, and every file a reload
// reads after privileges are dropped (the configuration, its includes,
// GeoIP databases, the bypass file and its f: includes, certificates and
// keys, which are re-read when they change), and the store, token and
// socket directories serve creates files in, must be open to it.
func (c *checker) runAs() {
	f := c.s.Config
	if f.RunAs == "" {
		return
	}
	u, err := c.o.LookupUser(f.RunAs)
	if err != nil {
		c.add("", Error, c.filePos(), "run_as %s: no such user on this machine (%v): serve would stop after binding its ports; create it (useradd --system --no-create-home %s) or change run_as", f.RunAs, err, f.RunAs)
		return
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		c.add("", Error, c.filePos(), "run_as %s: user id %q or group id %q is not a number", f.RunAs, u.Uid, u.Gid)
		return
	}
	cr := cred{name: f.RunAs, uid: uint32(uid), groups: map[uint32]bool{uint32(gid): true}}
	// serve switches to the user's primary group only (setgroups with
	// that one group): supplementary groups do not count.
	if cr.uid == 0 {
		return
	}
	type cause struct {
		at    string // the path that stops the user
		why   string
		items []string
		pos   diag.Pos
	}
	var causes []*cause
	byPath := make(map[string]*cause)
	for _, n := range c.needs() {
		at, why := cr.blocked(n.path, n.perm)
		if at == "" {
			continue
		}
		k := at + "\x00" + why
		cs := byPath[k]
		if cs == nil {
			cs = &cause{at: at, why: why, pos: n.pos}
			byPath[k] = cs
			causes = append(causes, cs)
		}
		if !slices.Contains(cs.items, n.what) {
			cs.items = append(cs.items, n.what)
		}
	}
	for _, cs := range causes {
		c.add("", Error, cs.pos, "run_as %s cannot %s, so after dropping privileges serve cannot use %s (every reload would fail): %s",
			f.RunAs, cs.why, joinAnd(cs.items), fixFor(cs.at, f.RunAs))
	}
}

// fixFor suggests how to open a path to the user.
func fixFor(path, user string) string {
	return fmt.Sprintf("make it the user's (chown %s %s) or its group's (chgrp and chmod g+r, g+x for a directory)", user, path)
}

// needs lists what serve opens after dropping privileges.
func (c *checker) needs() []need {
	f := c.s.Config
	cfgPos := c.filePos()
	out := []need{{f.Path, "the configuration " + f.Path, permRead, cfgPos}}
	seen := map[string]bool{f.Path: true}
	addFile := func(path, what string, pos diag.Pos) {
		if path == "" || seen[path] {
			return
		}
		seen[path] = true
		out = append(out, need{path, what + " " + path, permRead, pos})
	}
	// Include files: the files named by the items' positions.
	for _, name := range c.s.Patterns.Names() {
		for _, it := range c.s.Patterns.Lookup(name).Items() {
			if p := it.Pos(); p.File != "" && p.File != f.Path {
				addFile(p.File, "the include", p)
			}
		}
	}
	for _, l := range c.lists() {
		if s := c.compile(l.text); s != nil {
			for _, it := range s.Items() {
				if p := it.Pos(); p.File != "" && p.File != f.Path {
					addFile(p.File, "the include", p)
				}
			}
		}
	}
	for _, db := range f.GeoIP.Databases {
		addFile(db.Path.Value, "the GeoIP database", db.Path.Pos)
	}
	if bf := f.IntrusionPrevention.BypassFile; bf.IsSet() {
		for _, p := range bypassFiles(bf.Value, 0) {
			addFile(p, "the bypass file", bf.Pos)
		}
	}
	for _, sv := range sortedServices(f) {
		if t := f.Services[sv].TLS; t != nil {
			addFile(t.Cert.Value, "the certificate", t.Cert.Pos)
			addFile(t.Key.Value, "the key", t.Key.Pos)
		}
	}
	// Directories serve creates files in after the drop.
	store := f.Store.Path.Value
	if store == "" {
		store = DefaultStorePath
	}
	out = append(out, need{filepath.Dir(store), "the store directory " + filepath.Dir(store), permWrite | permExec, f.Store.Path.Pos})
	if _, err := os.Stat(store); err == nil {
		out = append(out, need{store, "the store " + store, permRead | permWrite, f.Store.Path.Pos})
	}
	token := f.Admin.TokenFile.Value
	if token == "" {
		token = admin.DefaultTokenFile
	}
	if _, err := os.Stat(token); err == nil {
		out = append(out, need{token, "the admin token " + token, permRead, f.Admin.TokenFile.Pos})
	} else {
		out = append(out, need{filepath.Dir(token), "the token directory " + filepath.Dir(token), permWrite | permExec, f.Admin.TokenFile.Pos})
	}
	listen := f.Admin.Listen.Value
	if listen == "" {
		listen = admin.DefaultListen
	}
	if sock, ok := strings.CutPrefix(listen, "unix:"); ok {
		out = append(out, need{filepath.Dir(sock), "the admin socket directory " + filepath.Dir(sock), permWrite | permExec, f.Admin.Listen.Pos})
	}
	return out
}

// bypassFiles returns a bypass file and the files it pulls in with f:
// (relative to the including file, at most 8 deep), as the bypass loader
// reads them. Unreadable files end the walk: loading reported them.
func bypassFiles(path string, depth int) []string {
	if depth > 8 {
		return nil
	}
	out := []string{path}
	r, _, err := safefile.Open(path, safefile.MaxText)
	if err != nil {
		return out
	}
	defer r.Close()
	sc := bufio.NewScanner(safefile.Reader(r, path, safefile.MaxText))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = strings.TrimSpace(line[:i])
		}
		if len(line) < 2 || (line[0] != 'f' && line[0] != 'F') || line[1] != ':' {
			continue
		}
		inc := strings.TrimSpace(line[2:])
		if inc == "" {
			continue
		}
		if !filepath.IsAbs(inc) {
			inc = filepath.Join(filepath.Dir(path), inc)
		}
		out = append(out, bypassFiles(inc, depth+1)...)
	}
	return out
}

// blocked says where the user is stopped on the way to path with perm:
// the path itself or a directory above it, and what it cannot do there;
// "" when nothing stops it. A path that does not exist yet (a store
// directory serve will create) is judged at its nearest existing parent,
// which then needs write and search permission. Symbolic links are
// followed; access control lists are not read.
func (cr cred) blocked(path string, perm uint32) (at, why string) {
	p := filepath.Clean(path)
	for {
		if _, err := os.Lstat(p); err == nil {
			break
		}
		parent := filepath.Dir(p)
		if parent == p {
			return "", ""
		}
		p, perm = parent, permWrite|permExec
	}
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return "", ""
	}
	// Every directory above needs search permission.
	dirs := []string{}
	for d := filepath.Dir(real); ; d = filepath.Dir(d) {
		dirs = append(dirs, d)
		if d == filepath.Dir(d) {
			break
		}
	}
	slices.Reverse(dirs)
	for _, d := range dirs {
		fi, err := os.Stat(d)
		if err != nil {
			return "", ""
		}
		if !cr.may(fi, permExec) {
			return d, "enter " + d + " (" + describeMode(fi) + ")"
		}
	}
	fi, err := os.Stat(real)
	if err != nil {
		return "", ""
	}
	if !cr.may(fi, perm) {
		verb := "read"
		switch {
		case fi.IsDir():
			verb = "create files in"
		case perm&permWrite != 0:
			verb = "write"
		}
		return real, verb + " " + real + " (" + describeMode(fi) + ")"
	}
	return "", ""
}

// may reports whether the user has perm on fi by its mode bits: the
// owner's, else the group's when the file's group is the user's, else the
// others'.
func (cr cred) may(fi fs.FileInfo, perm uint32) bool {
	uid, gid, ok := owner(fi)
	if !ok {
		return true // cannot tell: say nothing
	}
	mode := uint32(fi.Mode().Perm())
	var bits uint32
	switch {
	case uid == cr.uid:
		bits = mode >> 6
	case cr.groups[gid]:
		bits = mode >> 3
	default:
		bits = mode
	}
	return bits&7&perm == perm
}

// describeMode writes a file's mode and owner as ls does: "-rw-r----- root:root".
func describeMode(fi fs.FileInfo) string {
	uid, gid, ok := owner(fi)
	if !ok {
		return fi.Mode().String()
	}
	return fmt.Sprintf("%s, owner %s:%s", fi.Mode().String(), userName(uid), groupName(gid))
}
