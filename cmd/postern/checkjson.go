package main

import (
	"errors"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/postern/postern/internal/diag"
	"github.com/postern/postern/internal/explain"
	"github.com/postern/postern/internal/service"
	"github.com/postern/postern/internal/snapshot"
)

// checkAnswer is what `postern check --json` prints: the same as the
// text summary and its warnings, or the errors with their positions.
type checkAnswer struct {
	Config   string         `json:"config"`
	OK       bool           `json:"ok"`
	Errors   []checkProblem `json:"errors"`
	Warnings []checkProblem `json:"warnings"`
	// LoadedIn is how long loading and compiling took, e.g. "12ms".
	LoadedIn string `json:"loaded_in,omitempty"`

	GeoIP             []checkGeoIP    `json:"geoip,omitempty"`
	Patterns          []checkPattern  `json:"patterns,omitempty"`
	Services          []checkService  `json:"services,omitempty"`
	Triggers          []checkTriggers `json:"triggers,omitempty"`
	BypassFile        string          `json:"bypass_file,omitempty"`
	LoginRestrictions []string        `json:"login_restrictions,omitempty"`
}

// checkProblem is an error or a warning, with its position when it has one.
type checkProblem struct {
	Pos     *explain.Pos `json:"pos,omitempty"`
	Message string       `json:"message"`
}

type checkGeoIP struct {
	Path        string    `json:"path"`
	Description string    `json:"description,omitempty"`
	Networks    int       `json:"networks"`
	Countries   int       `json:"countries"`
	Built       time.Time `json:"built,omitzero"`
}

type checkPattern struct {
	Name     string `json:"name"`
	Items    int    `json:"items"`
	Networks int    `json:"networks"`
}

type checkService struct {
	Name     string   `json:"name"`
	Listen   string   `json:"listen"`
	Backends []string `json:"backends"`
	Grant    string   `json:"grant,omitempty"`
	Deny     string   `json:"deny,omitempty"`
	Paths    []string `json:"paths,omitempty"`
}

type checkTriggers struct {
	Group string `json:"group"` // smtp, imap_pop3, web
	// On are the reason codes of the triggers that can fire; NeverFire
	// those configured that cannot (see the warnings).
	On         string `json:"on"`
	NeverFire  string `json:"never_fire,omitempty"`
	BlockTime  string `json:"block_time"`
	BlockTimeS int64  `json:"block_time_seconds"`
}

// problems splits an error of a configuration load into its problems.
func problems(err error) []checkProblem {
	var errs []error
	var l diag.List
	if errors.As(err, &l) {
		errs = l
	} else if err != nil {
		errs = []error{err}
	}
	out := make([]checkProblem, 0, len(errs))
	for _, e := range errs {
		var de *diag.Error
		if errors.As(e, &de) && de.Pos.IsValid() {
			pos := explain.Pos(de.Pos)
			msg := de.Msg
			if de.Err != nil && msg == "" {
				msg = de.Err.Error()
			}
			out = append(out, checkProblem{Pos: &pos, Message: msg})
			continue
		}
		out = append(out, checkProblem{Message: e.Error()})
	}
	return out
}

// checkJSON prints the outcome of `postern check --json` and maps it to
// the exit status as the text output does: 1 when the configuration has
// errors.
func checkJSON(cmd *cobra.Command, path string, snap *snapshot.Snapshot, err error, took time.Duration) error {
	var warns []error
	if err == nil {
		warns = append(append(warns, snap.Warnings...), ipsWarnings(snap.Config)...)
	}
	if perr := printCheckJSON(cmd.OutOrStdout(), path, snap, warns, err, took); perr != nil {
		return perr
	}
	if err != nil {
		return exitCode(1)
	}
	return nil
}

// printCheckJSON writes the outcome of a check as JSON: snap and warns on
// success, else the load error err.
func printCheckJSON(w io.Writer, path string, snap *snapshot.Snapshot, warns []error, err error, took time.Duration) error {
	a := checkAnswer{Config: path, OK: err == nil, Errors: problems(err), Warnings: []checkProblem{}}
	if err != nil {
		return printJSON(w, a)
	}
	a.Config = snap.Config.Path
	a.LoadedIn = took.Round(time.Millisecond).String()
	for _, wn := range warns {
		a.Warnings = append(a.Warnings, problems(wn)...)
	}
	if snap.GeoIP != nil {
		for _, src := range snap.GeoIP.Sources() {
			a.GeoIP = append(a.GeoIP, checkGeoIP{Path: src.Path, Description: src.Description, Networks: src.Networks,
				Countries: src.Countries, Built: src.BuildTime.UTC()})
		}
	}
	for _, name := range snap.Patterns.Names() {
		set := snap.Patterns.Lookup(name)
		a.Patterns = append(a.Patterns, checkPattern{Name: name, Items: len(set.Items()), Networks: set.Networks()})
	}
	for _, sv := range service.All {
		svc := snap.Config.Services[sv]
		if svc == nil {
			continue
		}
		cs := checkService{Name: sv.String(), Listen: svc.Listen.Value, Backends: svc.WebBackends(), Grant: svc.Grant.Value, Deny: svc.Deny.Value}
		for _, p := range svc.PathRules() {
			cs.Paths = append(cs.Paths, p.Prefix.Value)
		}
		a.Services = append(a.Services, cs)
	}
	if g := snap.Guard; g != nil {
		a.Triggers = triggersOn(snap)
		if g.Bypass != nil {
			a.BypassFile = snap.Config.IntrusionPrevention.BypassFile.Value
		}
	}
	for _, lr := range snap.Config.LoginRestrictions {
		a.LoginRestrictions = append(a.LoginRestrictions, lr.Value)
	}
	sort.Strings(a.LoginRestrictions)
	return printJSON(w, a)
}

// triggersOn are the triggers each intrusion-prevention group has on:
// those that can fire and those configured that never can (see the
// warnings).
func triggersOn(snap *snapshot.Snapshot) []checkTriggers {
	g := snap.Guard
	on := g.TriggersEnabled()
	dead := make(map[string]string)
	for _, d := range deadTriggers(snap.Config) {
		dead[d.group] += string(d.code)
	}
	var out []checkTriggers
	for _, grp := range []string{"smtp", "imap_pop3", "web"} {
		if on[grp] == "" {
			continue
		}
		var live, never strings.Builder
		for _, t := range splitTriggers(on[grp]) {
			if strings.IndexByte(dead[grp], t[0]) >= 0 {
				never.WriteByte(t[0])
			} else {
				live.WriteString(t)
			}
		}
		out = append(out, checkTriggers{Group: grp, On: live.String(), NeverFire: never.String(),
			BlockTime: g.BlockTime.String(), BlockTimeS: int64(g.BlockTime / time.Second)})
	}
	return out
}
