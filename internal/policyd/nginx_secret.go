package policyd

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
)

// DefaultNginxSecretHeader is the request header that carries the shared
// secret nginx is told to send (auth_http_header X-Postern-Key <token>).
const DefaultNginxSecretHeader = "X-Postern-Key"

// minSecret is the shortest secret postern accepts.
const minSecret = 16

// ReadNginxSecret reads the shared secret nginx sends with every auth_http
// request from path: one line of at least 16 visible ASCII characters (no
// spaces), as nginx's auth_http_header writes it; a final line ending is
// dropped.
func ReadNginxSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("policy.nginx.secret_file: %w", err)
	}
	s := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if len(s) < minSecret {
		return nil, fmt.Errorf("policy.nginx.secret_file %s: the secret has %d characters, want at least %d", path, len(s), minSecret)
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return nil, fmt.Errorf("policy.nginx.secret_file %s: the secret holds a character that is not visible ASCII (a space, a control character or a second line)", path)
		}
	}
	return []byte(s), nil
}

// errNoSecret is a request without the shared secret, or with another.
var errNoSecret = errors.New("the shared secret is missing or wrong")

// checkSecret reports whether r carries the configured shared secret,
// given once, compared in constant time. No secret configured: every
// request passes.
func (n *Nginx) checkSecret(r *http.Request) error {
	if len(n.opts.Secret) == 0 {
		return nil
	}
	v := r.Header.Values(n.opts.SecretHeader)
	if len(v) != 1 || subtle.ConstantTimeCompare([]byte(v[0]), n.opts.Secret) != 1 {
		return errNoSecret
	}
	return nil
}
