package config

import (
	"os"
	"strings"

	"github.com/postern/postern/internal/diag"
)

// Console configures the web console: off when Listen is not set.
type Console struct {
	Listen      Text     `yaml:"listen"`                     // host:port, e.g. 127.0.0.1:8444
	TLS         *TLS     `yaml:"tls"`                        // cert and key; plain HTTP when absent
	Grant       Text     `yaml:"grant"`                      // pattern expression of addresses and networks; default loopback
	UsersFile   Text     `yaml:"users_file"`                 // user:argon2id-hash lines
	IdleTimeout Duration `yaml:"idle_timeout" default:"30m"` // a session unused this long is signed out
}

// Enabled reports whether the console is configured.
func (c *Console) Enabled() bool { return c.Listen.IsSet() }

func (f *File) validateConsole(d *decoder) {
	c := &f.Console
	if !c.Enabled() {
		for _, t := range []Text{c.Grant, c.UsersFile} {
			if t.IsSet() {
				d.errs.Add(diag.Errorf(t.Pos, "console: needs listen (host:port) to be on"))
			}
		}
		if c.TLS != nil {
			d.errs.Add(diag.Errorf(c.TLS.Cert.Pos, "console: needs listen (host:port) to be on"))
		}
		return
	}
	if err := parseListen(strings.TrimSpace(c.Listen.Value)); err != nil {
		d.errs.Add(diag.Errorf(c.Listen.Pos, "console.listen: %v", err))
	}
	if c.IdleTimeout.D <= 0 {
		d.errs.Add(diag.Errorf(c.IdleTimeout.Pos, "console.idle_timeout: want a positive duration such as 30m"))
	}
	if c.UsersFile.IsSet() {
		f.resolve(&c.UsersFile)
	}
	if c.TLS != nil {
		if !c.TLS.Cert.IsSet() || !c.TLS.Key.IsSet() {
			d.errs.Add(diag.Errorf(c.Listen.Pos, "console: tls needs both cert and key"))
		}
		for _, t := range []*Text{&c.TLS.Cert, &c.TLS.Key} {
			f.resolve(t)
			if t.IsSet() {
				if _, err := os.Stat(t.Value); err != nil {
					d.errs.Add(diag.Errorf(t.Pos, "%v", unwrapPathErr(err)))
				}
			}
		}
	}
}
