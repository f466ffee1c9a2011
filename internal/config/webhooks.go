package config

import (
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/postern/postern/internal/diag"
)

// WebhookEvents are the event names a webhook may subscribe to.
// new_country_login and impossible_travel are sent by login_alerts.
var WebhookEvents = []string{"block", "unblock", "escalation", "new_country_login", "impossible_travel", "reload_failed"}

// MinWebhookSecret is the shortest secret a webhook's secret_file may
// hold, in bytes (after trimming surrounding white space).
const MinWebhookSecret = 16

// Webhook is one receiver of signed JSON notifications.
type Webhook struct {
	// Name labels the webhook in metrics and logs; default "webhook<N>",
	// N its 1-based place in the list.
	Name Text `yaml:"name"`
	// URL is https://, or http:// to a loopback address (localhost,
	// 127.0.0.0/8, ::1) unless AllowHTTP is set. It must not carry a
	// user name or password.
	URL Text `yaml:"url"`
	// Events are the events sent: block, unblock, escalation,
	// new_country_login, impossible_travel, reload_failed.
	Events []Text `yaml:"events"`
	// SecretFile holds the key of the HMAC-SHA256 signature (at least
	// MinWebhookSecret bytes; surrounding white space is trimmed).
	SecretFile Text `yaml:"secret_file"`
	// Timeout bounds one delivery attempt (connect, request, response).
	Timeout Duration `yaml:"timeout" default:"5s"`
	// Deadline bounds the delivery of one event, retries included.
	Deadline Duration `yaml:"delivery_deadline" default:"10m"`
	// MaxAttempts bounds the attempts of one event.
	MaxAttempts int `yaml:"max_attempts" default:"8" min:"1"`
	// Queue is how many events wait for delivery; when it is full the
	// oldest is dropped (and counted).
	Queue int `yaml:"queue" default:"1000" min:"1"`
	// AllowHTTP allows a plain http:// URL to a host that is not
	// loopback (the events and their signatures cross the network in
	// clear).
	AllowHTTP bool `yaml:"allow_insecure_http"`
}

// Wants reports whether the webhook subscribes to event.
func (w *Webhook) Wants(event string) bool {
	return slices.ContainsFunc(w.Events, func(t Text) bool { return t.Value == event })
}

var webhookName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)

func (f *File) validateWebhooks(d *decoder) {
	seen := make(map[string]bool)
	for i := range f.Webhooks {
		w := &f.Webhooks[i]
		at := fmt.Sprintf("webhooks[%d]", i+1)
		if !w.Name.IsSet() {
			w.Name.Value = fmt.Sprintf("webhook%d", i+1)
		} else {
			w.Name.Value = strings.TrimSpace(w.Name.Value)
			if !webhookName.MatchString(w.Name.Value) {
				d.errs.Add(diag.Errorf(w.Name.Pos, "%s.name %q: want 1 to 32 lower-case letters, digits, - or _", at, w.Name.Value))
			}
		}
		if seen[w.Name.Value] {
			d.errs.Add(diag.Errorf(w.Name.Pos, "%s.name %q is used twice", at, w.Name.Value))
		}
		seen[w.Name.Value] = true
		at = fmt.Sprintf("webhook %q", w.Name.Value)
		if err := checkWebhookURL(w); err != nil {
			d.errs.Add(diag.Errorf(w.URL.Pos, "%s url: %v", at, err))
		}
		if len(w.Events) == 0 {
			d.errs.Add(diag.Errorf(w.URL.Pos, "%s: list its events (%s)", at, strings.Join(WebhookEvents, ", ")))
		}
		for j := range w.Events {
			ev := &w.Events[j]
			ev.Value = strings.TrimSpace(ev.Value)
			if !slices.Contains(WebhookEvents, ev.Value) {
				d.errs.Add(diag.Errorf(ev.Pos, "%s: unknown event %q: want %s", at, ev.Value, strings.Join(WebhookEvents, ", ")))
			}
		}
		if !w.SecretFile.IsSet() {
			d.errs.Add(diag.Errorf(w.URL.Pos, "%s needs a secret_file (the key of its signatures)", at))
		} else {
			f.resolve(&w.SecretFile)
			if _, err := ReadWebhookSecret(w.SecretFile.Value); err != nil {
				d.errs.Add(diag.Errorf(w.SecretFile.Pos, "%s: %v", at, err))
			}
		}
		if w.Timeout.D <= 0 {
			d.errs.Add(diag.Errorf(w.Timeout.Pos, "%s timeout must be positive", at))
		}
		if w.Deadline.D < w.Timeout.D {
			d.errs.Add(diag.Errorf(w.Deadline.Pos, "%s delivery_deadline must be at least its timeout (%s)", at, w.Timeout.D))
		}
	}
}

// checkWebhookURL checks a webhook's URL and writes it back in canonical
// form.
func checkWebhookURL(w *Webhook) error {
	raw := strings.TrimSpace(w.URL.Value)
	if raw == "" {
		return fmt.Errorf("missing")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return redactURLError(err)
	}
	switch {
	case u.Scheme != "https" && u.Scheme != "http":
		return fmt.Errorf("%q: want https:// (or http:// to loopback)", u.Redacted())
	case u.User != nil:
		return fmt.Errorf("%q: no user name or password in the URL (sign with secret_file)", u.Redacted())
	case u.Hostname() == "":
		return fmt.Errorf("%q: no host", u.Redacted())
	case u.Fragment != "":
		return fmt.Errorf("%q: no #fragment", u.Redacted())
	}
	if u.Scheme == "http" && !w.AllowHTTP && !loopbackHost(u.Hostname()) {
		return fmt.Errorf("%q: plain http only to a loopback address; use https, or set allow_insecure_http", u.Redacted())
	}
	w.URL.Value = u.String()
	return nil
}

func loopbackHost(h string) bool {
	if strings.EqualFold(h, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(h)
	return err == nil && a.Unmap().IsLoopback()
}

// ReadWebhookSecret reads a webhook's signing key: the file's content
// without surrounding white space, at least MinWebhookSecret bytes. The
// error never contains the secret.
func ReadWebhookSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("secret_file: %w", err)
	}
	s := []byte(strings.TrimSpace(string(b)))
	if len(s) < MinWebhookSecret {
		return nil, fmt.Errorf("secret_file %s: the secret must be at least %d bytes", path, MinWebhookSecret)
	}
	return s, nil
}
