package console

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"

	"github.com/postern/postern/internal/safefile"
)

// HashParams are the argon2id parameters of a password hash.
type HashParams struct {
	Time    uint32 // passes
	Memory  uint32 // KiB
	Threads uint8
}

// DefaultHashParams are the parameters `postern console passwd` uses:
// RFC 9106's second recommended option (64 MiB, 3 passes), 2 lanes.
var DefaultHashParams = HashParams{Time: 3, Memory: 64 * 1024, Threads: 2}

// Bounds on the parameters read from a users file, so a hand-edited line
// cannot make a sign-in take the machine's memory or minutes of CPU.
const (
	maxMemoryKiB = 1 << 20 // 1 GiB
	maxTime      = 20
	saltLen      = 16
	keyLen       = 32
	maxUsersFile = 1 << 20
	maxNameLen   = 64
)

// HashPassword returns the PHC string of password's argon2id hash with a
// fresh random salt: $argon2id$v=19$m=…,t=…,p=…$salt$hash (unpadded
// base64).
func HashPassword(password string, p HashParams) (string, error) {
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("console: salt: %w", err)
	}
	key := argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, keyLen)
	enc := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.Memory, p.Time, p.Threads,
		enc.EncodeToString(salt), enc.EncodeToString(key)), nil
}

// phc is a parsed argon2id hash.
type phc struct {
	p         HashParams
	salt, key []byte
}

func parsePHC(s string) (phc, error) {
	var h phc
	f := strings.Split(s, "$")
	if len(f) != 6 || f[0] != "" || f[1] != "argon2id" {
		return h, errors.New("not an argon2id hash ($argon2id$v=19$m=…,t=…,p=…$salt$hash)")
	}
	if f[2] != "v="+strconv.Itoa(argon2.Version) {
		return h, fmt.Errorf("argon2 version %q: want v=%d", f[2], argon2.Version)
	}
	for _, kv := range strings.Split(f[3], ",") {
		k, v, _ := strings.Cut(kv, "=")
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return h, fmt.Errorf("bad parameter %q", kv)
		}
		switch k {
		case "m":
			h.p.Memory = uint32(n)
		case "t":
			h.p.Time = uint32(n)
		case "p":
			if n > 255 {
				return h, fmt.Errorf("bad parameter %q", kv)
			}
			h.p.Threads = uint8(n)
		default:
			return h, fmt.Errorf("unknown parameter %q", kv)
		}
	}
	if h.p.Time < 1 || h.p.Time > maxTime || h.p.Memory < 8*uint32(h.p.Threads) || h.p.Memory > maxMemoryKiB || h.p.Threads < 1 {
		return h, fmt.Errorf("parameters out of bounds (t 1-%d, m up to %d KiB, p ≥ 1)", maxTime, maxMemoryKiB)
	}
	var err error
	enc := base64.RawStdEncoding
	if h.salt, err = enc.DecodeString(f[4]); err != nil || len(h.salt) < 8 {
		return h, errors.New("bad salt")
	}
	if h.key, err = enc.DecodeString(f[5]); err != nil || len(h.key) < 16 {
		return h, errors.New("bad hash")
	}
	return h, nil
}

// check compares password with the hash in constant time.
func (h phc) check(password string) bool {
	got := argon2.IDKey([]byte(password), h.salt, h.p.Time, h.p.Memory, h.p.Threads, uint32(len(h.key)))
	return subtle.ConstantTimeCompare(got, h.key) == 1
}

// dummy is checked for a user that does not exist, so the answer takes
// as long as for one that does.
var dummy = phc{p: DefaultHashParams, salt: make([]byte, saltLen), key: make([]byte, keyLen)}

// readUsers reads a users file: "name:hash" lines; blank lines and lines
// starting with # are skipped.
func readUsers(path string) (map[string]phc, error) {
	f, fi, err := safefile.Open(path, maxUsersFile)
	if err != nil {
		return nil, fmt.Errorf("console users file: %w", err)
	}
	defer f.Close()
	if fi.Mode().Perm()&0o007 != 0 {
		return nil, fmt.Errorf("console users file %s is readable by others (mode %04o): chmod o-rwx it", path, fi.Mode().Perm())
	}
	data, err := safefile.ReadAll(f, path, fi.Size(), maxUsersFile)
	if err != nil {
		return nil, fmt.Errorf("console users file: %w", err)
	}
	users := map[string]phc{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		name, hash, ok := strings.Cut(line, ":")
		if !ok || checkName(name) != nil {
			return nil, fmt.Errorf("%s:%d: want name:$argon2id$…", path, n)
		}
		h, err := parsePHC(hash)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: user %s: %v", path, n, name, err)
		}
		users[name] = h
	}
	return users, sc.Err()
}

// checkName refuses user names that cannot be written on a line of the
// users file or read back unambiguously.
func checkName(name string) error {
	if name == "" || len(name) > maxNameLen {
		return fmt.Errorf("user name must be 1-%d characters", maxNameLen)
	}
	for _, c := range name {
		if c <= ' ' || c == ':' || c == '#' || c == 0x7f {
			return fmt.Errorf("user name %q: no spaces, control characters, ':' or '#'", name)
		}
	}
	return nil
}

// SetPassword writes user's password hash into the users file at path:
// the user's line is replaced, or added; other lines stay as they are. The
// file is written anew and renamed over the old one, with the old file's
// owner, group and mode (less any permission for others); a new file is
// 0600.
func SetPassword(path, user, password string, p HashParams) error {
	if err := checkName(user); err != nil {
		return err
	}
	if password == "" {
		return errors.New("empty password")
	}
	hash, err := HashPassword(password, p)
	if err != nil {
		return err
	}
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("console users file: %w", err)
	}
	mode, owner := os.FileMode(0o600), (*ownership)(nil)
	if st, err := os.Stat(path); err == nil {
		mode = st.Mode().Perm() &^ 0o007 // never readable by others
		owner = ownerOf(st)
	}
	var out bytes.Buffer
	done := false
	for _, line := range strings.SplitAfter(string(old), "\n") {
		if line == "" {
			continue
		}
		if name, _, ok := strings.Cut(strings.TrimSpace(line), ":"); ok && name == user {
			if !done {
				fmt.Fprintf(&out, "%s:%s\n", user, hash)
				done = true
			}
			continue
		}
		out.WriteString(line)
		if !strings.HasSuffix(line, "\n") {
			out.WriteByte('\n')
		}
	}
	if !done {
		fmt.Fprintf(&out, "%s:%s\n", user, hash)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".console-users-*")
	if err != nil {
		return fmt.Errorf("console users file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("console users file: %w", err)
	}
	if owner != nil { // keep the file readable by the user postern runs as
		if err := tmp.Chown(owner.uid, owner.gid); err != nil {
			tmp.Close()
			return fmt.Errorf("console users file: keep its owner: %w", err)
		}
	}
	if _, err := tmp.Write(out.Bytes()); err != nil {
		tmp.Close()
		return fmt.Errorf("console users file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("console users file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("console users file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("console users file: %w", err)
	}
	return nil
}
