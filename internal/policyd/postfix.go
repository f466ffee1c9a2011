package policyd

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/service"
)

// Limits of one Postfix policy request. Postfix's attributes are short
// (addresses, names, certificate fields); a request beyond these is not
// Postfix and closes the connection.
const (
	maxAttrLine  = 4096     // one name=value line with its newline
	maxAttrs     = 128      // attributes in one request
	maxRequest   = 64 << 10 // bytes in one request
	writeTimeout = 10 * time.Second
)

// errRequest is a request that could not be read as Postfix writes it.
var errRequest = errors.New("policyd: bad postfix policy request")

// pfRequest is the part of a Postfix policy request postern reads.
type pfRequest struct {
	request, state, client, port, serverPort, sasl, sender, rcpt, size string
}

// readRequest reads one request: name=value lines up to an empty line.
// Postfix ends lines with a newline; a carriage return before it is
// dropped. io.EOF means the peer closed between requests.
func readRequest(r *bufio.Reader, req *pfRequest) error {
	*req = pfRequest{}
	total, n := 0, 0
	for {
		line, err := r.ReadSlice('\n')
		total += len(line)
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			return fmt.Errorf("%w: a line longer than %d bytes", errRequest, maxAttrLine)
		case err == io.EOF && total == 0:
			return io.EOF
		case err != nil:
			return fmt.Errorf("%w: %w", errRequest, err)
		case total > maxRequest:
			return fmt.Errorf("%w: longer than %d bytes", errRequest, maxRequest)
		}
		line = bytes.TrimSuffix(line[:len(line)-1], []byte{'\r'})
		if len(line) == 0 {
			if n == 0 {
				return fmt.Errorf("%w: empty request", errRequest)
			}
			return nil
		}
		if n++; n > maxAttrs {
			return fmt.Errorf("%w: more than %d attributes", errRequest, maxAttrs)
		}
		name, value, ok := bytes.Cut(line, []byte{'='})
		if !ok {
			return fmt.Errorf("%w: a line without '='", errRequest)
		}
		var dst *string
		switch string(name) {
		case "request":
			dst = &req.request
		case "protocol_state":
			dst = &req.state
		case "client_address":
			dst = &req.client
		case "client_port":
			dst = &req.port
		case "server_port":
			dst = &req.serverPort
		case "sasl_username":
			dst = &req.sasl
		case "sender":
			dst = &req.sender
		case "recipient":
			dst = &req.rcpt
		case "size":
			dst = &req.size
		default:
			continue
		}
		*dst = string(value)
	}
}

// Postfix answers Postfix's SMTP access policy delegation
// (check_policy_service). Postfix keeps one policy connection per smtpd
// process and asks about one SMTP session at a time on it, one request per
// stage; the client being asked about is the connection's state, so it is
// bounded by the connection limit and ends with the connection.
type Postfix struct {
	eng   Engine
	opts  Options
	stats Stats
}

// NewPostfix returns a Postfix policy server on eng.
func NewPostfix(eng Engine, opts Options) *Postfix {
	return &Postfix{eng: eng, opts: opts.withDefaults()}
}

// Stats returns the server's counters.
func (p *Postfix) Stats() *Stats { return &p.stats }

// Serve answers the connections of ln until ctx ends or ln is closed; it
// closes ln and every connection and returns when they are done.
func (p *Postfix) Serve(ctx context.Context, ln net.Listener) error {
	l := &listener{Listener: ln, opts: &p.opts, stats: &p.stats, slots: make(chan struct{}, p.opts.MaxConns)}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = make(map[net.Conn]struct{})
	)
	stop := context.AfterFunc(ctx, func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	defer stop()
	var err error
	for {
		var c net.Conn
		c, err = l.accept()
		if err != nil {
			break
		}
		mu.Lock()
		conns[c] = struct{}{}
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.serveConn(c)
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
		}()
	}
	ln.Close()
	wg.Wait()
	if errors.Is(err, errClosed) {
		return nil
	}
	return err
}

// pfConn is the state of one policy connection: the SMTP session Postfix
// is asking about.
type pfConn struct {
	mu   sync.Mutex
	key  string // client_address and client_port of the session
	s    *guard.Session
	last pfRequest // the session's last request and its answer: Postfix
	ans  string    // asks again for each restriction list that names postern
}

func (c *pfConn) close() {
	c.mu.Lock()
	if c.s != nil {
		c.s.Close()
		c.s = nil
	}
	c.key = ""
	c.mu.Unlock()
}

func (p *Postfix) serveConn(nc net.Conn) {
	defer nc.Close()
	st := &pfConn{}
	defer st.close()
	r := bufio.NewReaderSize(nc, maxAttrLine)
	var req pfRequest
	for {
		nc.SetReadDeadline(time.Now().Add(p.opts.IdleTimeout))
		if err := readRequest(r, &req); err != nil {
			if !errors.Is(err, io.EOF) {
				p.stats.Bad.Add(1)
				p.opts.Log.Warn("postfix policy request refused", "peer", nc.RemoteAddr().String(), "err", err)
			}
			return
		}
		// The decision gets its own copy: one that runs late must not see
		// the next request read into req.
		q := req
		action, ok := within(p.opts.DecisionTimeout, func() string { return p.decide(st, &q) })
		if !ok {
			p.stats.NoOpinion.Add(1)
			p.opts.Log.Warn("postfix policy decision took too long; answered DUNNO", "client", req.client, "state", req.state)
			action = "DUNNO"
		}
		p.stats.Requests.Add(1)
		nc.SetWriteDeadline(time.Now().Add(writeTimeout))
		if _, err := io.WriteString(nc, "action="+action+"\n\n"); err != nil {
			return
		}
	}
}

// Postfix's protocol states as the policy request names them.
const (
	stateConnect = "CONNECT"
	stateRcpt    = "RCPT"
	stateEOM     = "END-OF-MESSAGE"
)

// pfService is the service a Postfix smtpd serves, from its port when
// Postfix says it (server_port, Postfix 3.0 and later): 587 is
// submission, 465 smtps, anything else smtp.
func pfService(port string) service.Service {
	switch port {
	case "587":
		return service.Submission
	case "465":
		return service.SMTPS
	}
	return service.SMTP
}

// close421 is the answer that ends an SMTP session with postern's text,
// as the SMTP gateway closes a blocked session.
func close421(d guard.Decision) string {
	return "421 4.7.1 " + d.Refusal() + ": closing connection"
}

// decide answers one request; it holds the connection's state.
func (p *Postfix) decide(c *pfConn, req *pfRequest) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if req.request != "smtpd_access_policy" {
		p.opts.Log.Warn("postfix policy: unknown request; answered DUNNO", "request", req.request)
		return "DUNNO"
	}
	addr, err := netip.ParseAddr(req.client)
	if err != nil {
		return "DUNNO" // "unknown" or no address: nothing to judge
	}
	addr = addr.Unmap()
	svc := pfService(req.serverPort)
	key := req.client + " " + req.port
	if key != c.key {
		if c.s != nil {
			c.s.Close()
			c.s = nil
		}
		c.key = key
		c.last, c.ans = pfRequest{}, ""
	}
	// The same question again (check_policy_service in more than one
	// restriction list, e.g. client and relay restrictions both evaluated
	// at RCPT) gets the same answer and counts nothing twice.
	if c.ans != "" && *req == c.last {
		return c.ans
	}
	c.last = *req
	c.ans = p.judge(c, req, addr, svc)
	return c.ans
}

// judge decides a request the session has not asked before.
func (p *Postfix) judge(c *pfConn, req *pfRequest, addr netip.Addr, svc service.Service) string {
	st := p.eng.Settings()
	var v guard.Verdict
	if st.Policy != nil && st.Policy.Service(svc) != nil {
		v = p.eng.Admit(addr, svc)
	} else {
		v = p.eng.AdmitBlocks(addr, svc)
	}
	if v.Action == guard.Refuse {
		if req.state == stateConnect || !v.Blocked {
			return "554 5.7.1 " + v.Refusal()
		}
		return close421(v.Decision)
	}
	if c.s == nil {
		s, d := p.eng.Open(addr, svc, nil)
		if d.Action == guard.Close {
			s.Close()
			return close421(d)
		}
		c.s = s
	}
	s := c.s
	if req.state == stateConnect {
		return "DUNNO"
	}
	if d, blocked := s.Blocked(); blocked {
		return close421(d)
	}
	switch req.state {
	case stateRcpt:
		return p.rcpt(s, st, addr, req)
	case stateEOM:
		n, err := strconv.ParseInt(req.size, 10, 64)
		if err != nil || n < 0 {
			return "DUNNO"
		}
		d := s.MessageSize(n)
		s.MessageDone()
		if d.Action == guard.Close {
			return close421(d)
		}
	}
	return "DUNNO"
}

// rcpt judges a recipient: the login restriction of an authenticated
// sender, a relay attempt, a tarpit account.
func (p *Postfix) rcpt(s *guard.Session, st *guard.Settings, addr netip.Addr, req *pfRequest) string {
	s.Sender(req.sender)
	if req.sasl != "" {
		if st.Policy != nil && !st.Policy.AllowLogin(req.sasl, addr) {
			if d := s.LoginFailed(req.sasl, 0); d.Action == guard.Close {
				return close421(d)
			}
			return "554 5.7.1 Access denied"
		}
		s.LoginSucceeded(req.sasl)
	} else if len(st.LocalDomains) > 0 && !localRecipient(req.rcpt, st.LocalDomains) {
		if d := s.RelayDenied(req.rcpt); d.Action == guard.Close {
			return close421(d)
		}
		return "554 5.7.1 Relay access denied" // Postfix adds "<rcpt>: Recipient address rejected: "
	}
	d := s.Recipient(req.rcpt)
	switch {
	case d.Action == guard.Close:
		return close421(d)
	case d.Reject:
		return "550 5.1.1 Recipient address rejected"
	}
	return "DUNNO"
}

// localRecipient reports whether a recipient in Postfix's internal form
// (local@domain, unquoted) is in one of the local domains. A bare local
// part is local; an address literal is not.
func localRecipient(rcpt string, domains map[string]bool) bool {
	i := strings.LastIndexByte(rcpt, '@')
	if i < 0 {
		return true
	}
	d := strings.TrimSuffix(strings.ToLower(rcpt[i+1:]), ".")
	if strings.HasPrefix(d, "[") {
		return false
	}
	return domains[d]
}
