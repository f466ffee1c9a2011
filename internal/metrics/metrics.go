// Package metrics owns postern's Prometheus registry and metrics, and
// serves them with the health endpoints on their own listener.
//
// Every label is bounded by the configuration: service, protocol group,
// reason code, result, why, direction, backend (as configured), DNSBL zone
// (as configured), GeoIP database (its file name). No metric carries a
// client address or an account. The engine reports through the small
// guard.Observer interface, which *Metrics implements with counters
// resolved in advance, so the accept and event paths neither look up a
// label nor allocate; what a scrape reads from the running gateway (live
// sessions, active blocks, certificates, GeoIP databases) it reads through
// State at scrape time.
package metrics

import (
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/reason"
	"github.com/postern/postern/internal/service"
)

// Why a connection was refused (postern_connections_refused_total's why).
type Why uint8

// The reasons a connection is refused.
const (
	WhyGrant Why = iota // the access policy (grant/deny)
	WhyBlock            // a block
	WhyRate             // this connection tripped connections per minute (I)
	WhyLimit            // a listener limit (max connections, per address)
	numWhy
)

var whyNames = [numWhy]string{"grant", "block", "rate", "limit"}

func (w Why) String() string { return whyNames[w] }

var loginResults = [guard.NumLoginResults]string{"ok", "failed", "restricted"}

// State is what a scrape reads from the running gateway.
type State interface {
	// LiveSessionsByService is the number of open sessions of each
	// service.
	LiveSessionsByService() [service.Count]int
	// ActiveBlocks calls fn with the active blocks of each reason.
	ActiveBlocksByReason(fn func(r reason.Code, n int))
	// Certificates calls fn with each service's certificate expiry.
	Certificates(fn func(svc service.Service, notAfter time.Time))
	// GeoIPBuilds calls fn with each GeoIP database's build time.
	GeoIPBuilds(fn func(database string, built time.Time))
}

// Metrics is postern's registry and its metrics. It is safe for
// concurrent use.
type Metrics struct {
	reg   *prometheus.Registry
	state atomic.Pointer[State]

	accepted [service.Count]*shardedCounter
	refused  [service.Count][numWhy]*shardedCounter
	logins   [service.Count][guard.NumLoginResults]*shardedCounter
	events   [3][256]*shardedCounter // by group, by reason code
	blocks   [256]prometheus.Counter

	admit       prometheus.Histogram
	storeCommit prometheus.Histogram
	storeErrors prometheus.Counter

	dialErrors  *prometheus.CounterVec
	dialLatency *prometheus.HistogramVec
	bytes       [service.Count][2]prometheus.Counter
	messages    [service.Count][2]prometheus.Counter
	msgSize     [service.Count]prometheus.Observer
	dnsbl       *prometheus.CounterVec
	dnsblTime   prometheus.Histogram
	listings    *prometheus.CounterVec
	spam        *prometheus.CounterVec
	spamTime    prometheus.Histogram
	handshakes  [service.Count]prometheus.Counter
	early       [service.Count]prometheus.Counter
	reloads     [2]prometheus.Counter
	lastReload  prometheus.Gauge
}

// Label values of the metrics with a fixed set.
const (
	DirToBackend = 0 // bytes from the client to the backend
	DirToClient  = 1 // bytes from the backend to the client
)

// New returns the metrics in a registry of their own, with the Go runtime
// and process collectors.
func New() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	f := factory{m.reg}

	acc := newCounterFamily("postern_connections_accepted_total", "Connections the gate admitted (allowed or tarpitted), by service.", "service")
	ref := newCounterFamily("postern_connections_refused_total", "Connections refused or closed at connect, by service and why (grant, block, rate, limit).", "service", "why")
	lg := newCounterFamily("postern_logins_total", "Login attempts taken through the login gate, by service and result (ok, failed, restricted).", "service", "result")
	by := f.counterVec("postern_relayed_bytes_total", "Bytes relayed after a login, by service and direction (to_backend, to_client).", "service", "direction")
	msg := f.counterVec("postern_smtp_messages_total", "SMTP messages, by service and result (relayed, refused).", "service", "result")
	size := f.histogramVec("postern_smtp_message_size_bytes", "Size of the SMTP messages relayed, by service.",
		prometheus.ExponentialBuckets(1024, 4, 9), "service")
	et := f.counterVec("postern_early_talkers_total", "Clients that sent data before the greeting (a mark of spam software; logged, not refused), by service.", "service")
	hs := f.counterVec("postern_tls_handshake_failures_total", "TLS handshakes with clients that failed (implicit TLS and STARTTLS), by service.", "service")
	for r := range guard.NumLoginResults { // the console's sign-ins
		m.logins[service.Console][r] = lg.with(service.Console.String(), loginResults[r])
	}
	for _, s := range service.All {
		name := s.String()
		m.accepted[s] = acc.with(name)
		for w := range numWhy {
			m.refused[s][w] = ref.with(name, w.String())
		}
		for r := range guard.NumLoginResults {
			m.logins[s][r] = lg.with(name, loginResults[r])
		}
		m.bytes[s][DirToBackend] = by.WithLabelValues(name, "to_backend")
		m.bytes[s][DirToClient] = by.WithLabelValues(name, "to_client")
		if s.Protocol() == service.ProtocolSMTP {
			m.messages[s][0] = msg.WithLabelValues(name, "relayed")
			m.messages[s][1] = msg.WithLabelValues(name, "refused")
			m.msgSize[s] = size.WithLabelValues(name)
		}
		m.handshakes[s] = hs.WithLabelValues(name)
		m.early[s] = et.WithLabelValues(name)
	}
	ev := newCounterFamily("postern_trigger_events_total", "Trigger events counted by the engine, by protocol group and reason code.", "group", "reason")
	for _, g := range guard.Groups() {
		for _, r := range reason.All {
			if r != reason.Manual {
				m.events[g][byte(r)] = ev.with(g.String(), r.String())
			}
		}
	}
	m.reg.MustRegister(acc, ref, lg, ev)
	bl := f.counterVec("postern_blocks_total", "Blocks made, by reason code (U: manual).", "reason")
	for _, r := range reason.All {
		m.blocks[byte(r)] = bl.WithLabelValues(r.String())
	}
	m.admit = f.histogram("postern_admit_duration_seconds",
		"Time the connection gate (Admit) took, sampled: one connection in 64 on average is timed.",
		[]float64{25e-9, 50e-9, 100e-9, 250e-9, 500e-9, 1e-6, 2.5e-6, 10e-6, 100e-6})
	m.storeCommit = f.histogram("postern_store_commit_duration_seconds", "Time a block store transaction writing blocks took (group commit).",
		prometheus.ExponentialBuckets(0.0005, 2, 14))
	m.storeErrors = f.counter("postern_store_commit_errors_total", "Block store transactions writing blocks that failed.")
	m.dialErrors = f.counterVec("postern_backend_dial_errors_total", "Backend connections that failed, by service and backend.", "service", "backend")
	m.dialLatency = f.histogramVec("postern_backend_dial_duration_seconds", "Time to connect to a backend (with PROXY header and TLS), by service and backend.",
		prometheus.ExponentialBuckets(0.0005, 2, 14), "service", "backend")
	m.dnsbl = f.counterVec("postern_dnsbl_lookups_total", "DNS list lookups of a connection, by list (block: DNSBL, allow: DNSWL) and result (listed, clean).", "list", "result")
	m.dnsblTime = f.histogram("postern_dnsbl_lookup_duration_seconds", "Time the DNSBL lookups of a connection took.", prometheus.ExponentialBuckets(0.001, 2, 14))
	m.listings = f.counterVec("postern_dnsbl_listings_total", "Connections listed on a DNS list, by list (block, allow) and zone (as configured).", "list", "zone")
	m.spam = f.counterVec("postern_spam_scans_total", "Spam scans, by result (ham, spam, error).", "result")
	m.spamTime = f.histogram("postern_spam_scan_duration_seconds", "Time a spam scan took.", prometheus.ExponentialBuckets(0.005, 2, 12))
	rl := f.counterVec("postern_config_reloads_total", "Configuration reloads, by result (ok, failed).", "result")
	m.reloads[0], m.reloads[1] = rl.WithLabelValues("ok"), rl.WithLabelValues("failed")
	m.lastReload = f.gauge("postern_config_last_reload_success_timestamp_seconds", "When the running configuration was put in service (start or last good reload), in Unix seconds.")
	m.reg.MustRegister(stateCollector{m})
	return m
}

// Registry returns the registry the metrics are in.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// SetState gives the scrape the running gateway to read.
func (m *Metrics) SetState(s State) { m.state.Store(&s) }

// Connection implements guard.Observer.
func (m *Metrics) Connection(svc service.Service, o guard.ConnOutcome) {
	if !svc.Valid() || m.accepted[svc] == nil {
		return
	}
	switch o {
	case guard.ConnAccepted:
		m.accepted[svc].Inc()
	case guard.ConnRefusedGrant:
		m.refused[svc][WhyGrant].Inc()
	case guard.ConnRefusedBlock:
		m.refused[svc][WhyBlock].Inc()
	case guard.ConnRefusedLimit:
		m.refused[svc][WhyRate].Inc()
	}
}

// Refused counts a connection refused outside the engine: over a
// listener limit.
func (m *Metrics) Refused(svc service.Service, why Why) {
	if svc.Valid() && why < numWhy && m.accepted[svc] != nil {
		m.refused[svc][why].Inc()
	}
}

// AdmitLatency implements guard.Observer.
func (m *Metrics) AdmitLatency(d time.Duration) { m.admit.Observe(d.Seconds()) }

// Event implements guard.Observer.
func (m *Metrics) Event(g guard.Group, r reason.Code) {
	if int(g) < len(m.events) {
		if c := m.events[g][byte(r)]; c != nil {
			c.Inc()
		}
	}
}

// Blocked implements guard.Observer.
func (m *Metrics) Blocked(r reason.Code) {
	if c := m.blocks[byte(r)]; c != nil {
		c.Inc()
	}
}

// Login implements guard.Observer.
func (m *Metrics) Login(svc service.Service, r guard.LoginResult) {
	if svc.Valid() && r < guard.NumLoginResults {
		m.logins[svc][r].Inc()
	}
}

// StoreCommit implements guard.Observer.
func (m *Metrics) StoreCommit(d time.Duration, err error) {
	m.storeCommit.Observe(d.Seconds())
	if err != nil {
		m.storeErrors.Inc()
	}
}

// BackendDial records one connection to a backend: its time and whether
// it failed. backend is the backend's address as configured.
func (m *Metrics) BackendDial(svc service.Service, backend string, d time.Duration, err error) {
	if err != nil {
		m.dialErrors.WithLabelValues(svc.String(), backend).Inc()
		return
	}
	m.dialLatency.WithLabelValues(svc.String(), backend).Observe(d.Seconds())
}

// Relayed counts bytes relayed in one direction (DirToBackend,
// DirToClient).
func (m *Metrics) Relayed(svc service.Service, dir int, n int64) {
	if svc.Valid() && (dir == DirToBackend || dir == DirToClient) && n > 0 && m.bytes[svc][dir] != nil {
		m.bytes[svc][dir].Add(float64(n))
	}
}

// SMTPRelayed implements smtpproxy.Observer: the bytes an SMTP backend
// connection carried.
func (m *Metrics) SMTPRelayed(svc service.Service, toBackend, toClient int64) {
	m.Relayed(svc, DirToBackend, toBackend)
	m.Relayed(svc, DirToClient, toClient)
}

// SMTPMessage counts one SMTP message: relayed (the backend accepted it,
// with its size) or refused.
func (m *Metrics) SMTPMessage(svc service.Service, relayed bool, size int64) {
	if !svc.Valid() || m.messages[svc][0] == nil {
		return
	}
	if relayed {
		m.messages[svc][0].Inc()
		m.msgSize[svc].Observe(float64(size))
	} else {
		m.messages[svc][1].Inc()
	}
}

// The DNS lists of DNSBL.
const (
	ListBlock = "block" // DNSBL zones
	ListAllow = "allow" // DNSWL zones
)

// DNSBL records the lookups of one connection on one kind of list
// (ListBlock, ListAllow): how long they took and the zone that lists it
// ("" when none does).
func (m *Metrics) DNSBL(list, zone string, d time.Duration) {
	m.dnsblTime.Observe(d.Seconds())
	if zone == "" {
		m.dnsbl.WithLabelValues(list, "clean").Inc()
		return
	}
	m.dnsbl.WithLabelValues(list, "listed").Inc()
	m.listings.WithLabelValues(list, zone).Inc()
}

// Spam results.
const (
	SpamHam   = "ham"
	SpamSpam  = "spam"
	SpamError = "error"
)

// SpamScan records one spam scan: SpamHam, SpamSpam or SpamError.
func (m *Metrics) SpamScan(result string, d time.Duration) {
	m.spam.WithLabelValues(result).Inc()
	m.spamTime.Observe(d.Seconds())
}

// HandshakeFailed counts a failed TLS handshake with a client.
func (m *Metrics) HandshakeFailed(svc service.Service) {
	if svc.Valid() && m.handshakes[svc] != nil {
		m.handshakes[svc].Inc()
	}
}

// EarlyTalker counts a client that spoke before the greeting.
func (m *Metrics) EarlyTalker(svc service.Service) {
	if svc.Valid() && m.early[svc] != nil {
		m.early[svc].Inc()
	}
}

// Reload counts a configuration reload; a good one sets the time of the
// last good reload to at.
func (m *Metrics) Reload(ok bool, at time.Time) {
	if ok {
		m.reloads[0].Inc()
		m.Loaded(at)
	} else {
		m.reloads[1].Inc()
	}
}

// Loaded sets the time the running configuration was put in service.
func (m *Metrics) Loaded(at time.Time) { m.lastReload.Set(float64(at.UnixNano()) / 1e9) }

var _ guard.Observer = (*Metrics)(nil)

// stateCollector reads the running gateway at scrape time.
type stateCollector struct{ m *Metrics }

var (
	descSessions = prometheus.NewDesc("postern_sessions_active", "Open client sessions (connections the gate admitted and not yet closed), by service.", []string{"service"}, nil)
	descBlocks   = prometheus.NewDesc("postern_blocks_active", "Active (not expired) blocks, by reason code.", []string{"reason"}, nil)
	descCert     = prometheus.NewDesc("postern_certificate_expiry_timestamp_seconds", "When the certificate a service serves expires, in Unix seconds.", []string{"service"}, nil)
	descGeoIP    = prometheus.NewDesc("postern_geoip_build_timestamp_seconds", "When a GeoIP database was built (MMDB build epoch, else the file's modification time), in Unix seconds, by database file name.", []string{"database"}, nil)
)

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descSessions
	ch <- descBlocks
	ch <- descCert
	ch <- descGeoIP
}

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	sp := c.m.state.Load()
	if sp == nil {
		return
	}
	s := *sp
	live := s.LiveSessionsByService()
	for _, svc := range service.All { // every service, so a sum or an alert sees 0, not nothing
		ch <- prometheus.MustNewConstMetric(descSessions, prometheus.GaugeValue, float64(live[svc]), svc.String())
	}
	ch <- prometheus.MustNewConstMetric(descSessions, prometheus.GaugeValue, float64(live[service.Console]), service.Console.String())
	var seen [256]bool
	s.ActiveBlocksByReason(func(r reason.Code, n int) {
		seen[byte(r)] = true
		ch <- prometheus.MustNewConstMetric(descBlocks, prometheus.GaugeValue, float64(n), r.String())
	})
	for _, r := range reason.All { // every reason, so a rate or an alert sees 0, not nothing
		if !seen[byte(r)] {
			ch <- prometheus.MustNewConstMetric(descBlocks, prometheus.GaugeValue, 0, r.String())
		}
	}
	s.Certificates(func(svc service.Service, notAfter time.Time) {
		ch <- prometheus.MustNewConstMetric(descCert, prometheus.GaugeValue, float64(notAfter.Unix()), svc.String())
	})
	s.GeoIPBuilds(func(db string, built time.Time) {
		ch <- prometheus.MustNewConstMetric(descGeoIP, prometheus.GaugeValue, float64(built.Unix()), db)
	})
}

// factory registers what it makes.
type factory struct{ reg *prometheus.Registry }

func (f factory) counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	f.reg.MustRegister(c)
	return c
}

func (f factory) counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	f.reg.MustRegister(c)
	return c
}

func (f factory) gauge(name, help string) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	f.reg.MustRegister(g)
	return g
}

func (f factory) histogram(name, help string, buckets []float64) prometheus.Histogram {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets})
	f.reg.MustRegister(h)
	return h
}

func (f factory) histogramVec(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)
	f.reg.MustRegister(h)
	return h
}

// addrOK is used by the server's grant: the peer's address, unmapped.
func addrOK(grant func(netip.Addr) bool, a netip.Addr) bool {
	return grant != nil && grant(a.Unmap())
}

// Counts returns the totals since start of one service: connections the
// gate admitted, logins that succeeded and logins that failed (refused by
// the backend or by the login IP restriction). The console's dashboard
// turns them into rates.
func (m *Metrics) Counts(svc service.Service) (accepted, loginsOK, loginsFailed uint64) {
	if !svc.Valid() {
		return 0, 0, 0
	}
	if m.accepted[svc] != nil {
		accepted = m.accepted[svc].value()
	}
	return accepted, m.logins[svc][guard.LoginOK].value(),
		m.logins[svc][guard.LoginFailed].value() + m.logins[svc][guard.LoginRestricted].value()
}
