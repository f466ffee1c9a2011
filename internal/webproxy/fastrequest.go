package webproxy

import (
	"bufio"
	"net/http"
	"slices"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// writeFastRequest writes the backend request for in, a request the fast
// reader took, byte for byte as directRequest and Request.Write write it:
// the request line with the query cleaned, Host, User-Agent (the client's
// first, or none), then the client's headers less the hop-by-hop ones,
// those Connection names and every forwarding header, with Te: trailers
// when asked and postern's forwarding headers, all sorted by name. It
// builds no request or header map. keys is scratch space, returned for
// reuse. Only for a request fastWritable allows.
func writeFastRequest(bw *bufio.Writer, in *http.Request, keys []string) []string {
	host := in.Host
	if host == "" {
		host = backendHost // as Request.Write: the URL's host
	}
	u := *in.URL
	u.RawQuery = cleanQueryParams(u.RawQuery)
	ruri := u.RequestURI()
	h := in.Header
	// The names the client's Connection header lists are dropped.
	conn := h["Connection"]
	dropped := func(k string) bool {
		for _, f := range conn {
			for sf := range strings.SplitSeq(f, ",") {
				if sf = strings.Trim(sf, " \t\r\n"); sf != "" && http.CanonicalHeaderKey(sf) == k {
					return true
				}
			}
		}
		return false
	}
	keys = keys[:0]
	for k := range h {
		switch k {
		case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
			"Te", "Trailer", "Transfer-Encoding", "Upgrade", "User-Agent", "Content-Length":
			continue
		}
		if isForwarding(k) || len(conn) > 0 && dropped(k) {
			continue
		}
		keys = append(keys, k)
	}
	te := httpguts.HeaderValuesContainsToken(h["Te"], "trailers")
	if te {
		keys = append(keys, "Te")
	}
	keys = append(keys, "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Real-Ip", "Forwarded")
	slices.Sort(keys)

	bw.WriteString(in.Method)
	bw.WriteByte(' ')
	bw.WriteString(ruri)
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(host)
	bw.WriteString("\r\n")
	if ua := h["User-Agent"]; len(ua) > 0 && !(len(conn) > 0 && dropped("User-Agent")) {
		if v := strings.Trim(ua[0], " \t\r\n"); v != "" {
			bw.WriteString("User-Agent: ")
			bw.WriteString(v)
			bw.WriteString("\r\n")
		}
	}
	cc, _ := in.Context().Value(connKey{}).(*clientConn)
	proto := "http"
	if in.TLS != nil {
		proto = "https"
	}
	fwd := cc.forwardedFor(cc.addr, in.Host, proto)
	ip := fwd.ip
	for _, k := range keys {
		var vv []string
		switch k {
		case "X-Forwarded-For", "X-Real-Ip":
			vv = []string{ip}
		case "X-Forwarded-Proto":
			vv = []string{proto}
		case "X-Forwarded-Host":
			vv = []string{in.Host}
		case "Forwarded":
			vv = []string{fwd.elem}
		case "Te":
			vv = []string{"trailers"}
		default:
			vv = h[k]
		}
		for _, v := range vv {
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(strings.Trim(v, " \t\r\n"))
			bw.WriteString("\r\n")
		}
	}
	bw.WriteString("\r\n")
	return keys
}

// fastWritable reports whether writeFastRequest writes in: a request of
// the fast reader whose Host Request.Write would not rewrite (punycode, a
// zone).
func fastWritable(in *http.Request) bool {
	for i := 0; i < len(in.Host); i++ {
		if c := in.Host[i]; c >= 0x80 || c == '%' {
			return false
		}
	}
	return true
}

// isForwarding reports whether a header name is one of the forwarding
// headers, however spelled.
func isForwarding(k string) bool {
	for _, f := range forwardingHeaders {
		if headerNameIs(k, f) {
			return true
		}
	}
	return false
}
