package main

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/postern/postern/internal/admin"
	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/policy"
	"github.com/postern/postern/internal/service"
	"github.com/postern/postern/internal/snapshot"
)

// apiExplanation is the administration API's answer to GET /v1/explain.
type apiExplanation struct {
	Address  string    `json:"address"`
	Country  string    `json:"country,omitempty"`
	GeoIP    string    `json:"geoip_source,omitempty"`
	Service  string    `json:"service,omitempty"`
	Rules    []apiRule `json:"rules"`
	Block    *apiBlock `json:"block,omitempty"`
	Decision string    `json:"decision"` // allow | deny
	Because  []string  `json:"because"`
	At       time.Time `json:"at"`
}

type apiRule struct {
	Rule   string   `json:"rule"`
	Text   string   `json:"text"`
	Pos    string   `json:"pos"`
	Effect string   `json:"effect"`
	Steps  []string `json:"steps,omitempty"`
}

type apiBlock struct {
	Target     string    `json:"target"`
	Reason     string    `json:"reason"`
	ReasonName string    `json:"reason_name"`
	Detail     string    `json:"detail,omitempty"`
	Expires    time.Time `json:"expires"`
	By         string    `json:"by"`
}

// liveExplainer answers the API's explain: the access policy of the
// running configuration and the engine's blocks, for one address.
func liveExplainer(current func() *snapshot.Snapshot, eng *guard.Engine) admin.Explainer {
	return func(ctx context.Context, addr netip.Addr, svcName, account, path string) (any, error) {
		return explainLive(current(), eng, addr, svcName, account, path)
	}
}

func explainLive(snap *snapshot.Snapshot, eng *guard.Engine, addr netip.Addr, svcName, account, path string) (any, error) {
	addr = addr.Unmap()
	out := apiExplanation{Address: addr.String(), Service: svcName, Decision: "allow", At: eng.Now().UTC(), Rules: []apiRule{}, Because: []string{}}
	if snap.GeoIP != nil {
		if cc, src, ok := snap.GeoIP.Country(addr); ok {
			out.Country, out.GeoIP = cc, fmt.Sprintf("%s (built %s)", src.Path, src.BuildTime.UTC().Format(time.DateOnly))
		}
	}
	deny := func(why string) {
		out.Decision = "deny"
		out.Because = append(out.Because, why)
	}
	svc, ok := service.Parse(svcName)
	if svcName != "" {
		if !ok {
			return nil, fmt.Errorf("%w: unknown service %q", admin.ErrBadRequest, svcName)
		}
		v, err := snap.Policy.ExplainService(svc, addr)
		if err != nil {
			deny(svcName + " is not configured")
		} else {
			addRules(&out, v)
			if !v.Allow {
				deny("the " + svcName + " grant/deny lists")
			}
		}
		if path != "" {
			pv, err := snap.Policy.ExplainPath(svc, path, addr)
			if err == nil {
				addRules(&out, pv)
				if !pv.Allow {
					deny("a path rule")
				}
			}
		}
	}
	if account != "" {
		lv := snap.Policy.ExplainLogin(account, addr)
		addRules(&out, lv)
		if !lv.Allow {
			deny("the login restriction for " + account)
		}
	}
	if b, ok := eng.BlockOf(addr); ok {
		out.Block = &apiBlock{Target: b.Prefix.String(), Reason: b.Reason.String(), ReasonName: b.Reason.Name(), Detail: b.Detail, Expires: b.Expires, By: b.By}
		st := eng.Settings()
		refused := st.RefuseBlocked
		if ok {
			refused = st.RefusesBlock(svc, b.Reason)
		}
		if refused {
			deny("blocked (" + b.Reason.String() + " " + b.Reason.Name() + ") until " + b.Expires.Format(time.RFC3339))
		} else {
			out.Because = append(out.Because, "blocked but not refused at connect here (refuse_blocked, close_blocked_connection): tarpitted; its logins are refused")
		}
	}
	return out, nil
}

func addRules(out *apiExplanation, v policy.Verdict) {
	for _, r := range v.Rules {
		ar := apiRule{Rule: r.Rule, Text: r.Text, Pos: r.Pos.String(), Effect: r.Effect}
		for _, st := range r.Match.Steps {
			name := st.Set.String()
			if st.Set.Name() == "" {
				name = "list"
			}
			ar.Steps = append(ar.Steps, strings.TrimSpace(fmt.Sprintf("%s item %s at %s", name, st.Item, st.Item.Pos())))
		}
		out.Rules = append(out.Rules, ar)
	}
}
