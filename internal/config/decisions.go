package config

import "github.com/postern/postern/internal/diag"

// DecisionStream is the HTTP decision stream for CrowdSec firewall
// bouncers: off when Listen is not set.
type DecisionStream struct {
	// Listen is host:port, plain HTTP ("127.0.0.1:8081").
	Listen Text `yaml:"listen"`
	// KeysFile lists the bouncers' API keys, one a line, optionally
	// preceded by a name.
	KeysFile Text `yaml:"keys_file"`
	// Grant is a pattern expression of the client addresses that may
	// connect (addresses and networks only); default loopback.
	Grant Text `yaml:"grant"`
}

// On reports whether the decision stream is configured.
func (s DecisionStream) On() bool { return s.Listen.IsSet() && s.Listen.Value != "" }

func (f *File) validateDecisionStream(d *decoder) {
	s := f.DecisionStream
	if !s.On() {
		for _, t := range []Text{s.KeysFile, s.Grant} {
			if t.IsSet() {
				d.errs.Add(diag.Errorf(t.Pos, "decision_stream needs decision_stream.listen"))
				return
			}
		}
		return
	}
	if err := parseListen(s.Listen.Value); err != nil {
		d.errs.Add(diag.Errorf(s.Listen.Pos, "decision_stream.listen: %v", err))
	}
	if !s.KeysFile.IsSet() || s.KeysFile.Value == "" {
		d.errs.Add(diag.Errorf(s.Listen.Pos, "decision_stream needs an API keys file (decision_stream.keys_file)"))
	}
}
