package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/postern/postern/bench/internal/benchkit"
)

// addrs are the listen addresses of every server of the run.
type addrs struct {
	// Backends.
	imapDirect, smtpDirect string // Dovecot's and Postfix's PROXY ports
	static, dynamic        string // the web backends: nginx serving the page, the dynamic child
	auth                   string // nginx's auth_http server (a child)
	// The proxies, one listener per scenario family.
	ngx, hap, pt frontends
}

// frontends are one proxy's listeners.
type frontends struct {
	imap, imaps, smtp, smtps string
	web, webDyn, webTLS      string
}

// newFrontends picks the listen addresses of one proxy from free.
func newFrontends(free func() string) frontends {
	return frontends{imap: free(), imaps: free(), smtp: free(), smtps: free(), web: free(), webDyn: free(), webTLS: free()}
}

// ---- nginx ----------------------------------------------------------------------

const nginxMailModule = "/usr/lib/nginx/modules/ngx_mail_module.so"

// nginxProxyConf is the nginx peer: the mail proxy (IMAP and SMTP, plain
// and implicit TLS) with proxy_protocol to the backends and an auth_http
// server, and the keep-alive reverse proxy (plain and HTTPS) — Debian's
// nginx with libnginx-mod-mail, one worker per CPU. With logs, the mail
// block logs at info into DIR/nginx-mail.log: the lines of each session
// (connected, logged in, session done) that nginx's mail proxy writes.
func nginxProxyConf(dir string, a addrs, c *certFiles, nofile int, logs bool) string {
	mailLog := ""
	if logs {
		mailLog = "  error_log " + filepath.Join(dir, "nginx-mail.log") + " info;\n"
	}
	r := strings.NewReplacer("{{DIR}}", dir, "{{MOD}}", nginxMailModule, "{{AUTH}}", a.auth,
		"{{IMAP}}", a.ngx.imap, "{{IMAPS}}", a.ngx.imaps, "{{SMTP}}", a.ngx.smtp, "{{SMTPS}}", a.ngx.smtps,
		"{{WEB}}", a.ngx.web, "{{WEBDYN}}", a.ngx.webDyn, "{{WEBTLS}}", a.ngx.webTLS,
		"{{STATIC}}", a.static, "{{DYNAMIC}}", a.dynamic, "{{CERT}}", c.cert, "{{KEY}}", c.key,
		"{{NOFILE}}", fmt.Sprint(nofile), "{{CONNS}}", fmt.Sprint(nofile-100), "{{MAILLOG}}", mailLog)
	return r.Replace(`# written by bench/peers
load_module {{MOD}};
daemon off;
worker_processes auto;
worker_rlimit_nofile {{NOFILE}};
pid {{DIR}}/nginx.pid;
error_log {{DIR}}/nginx-error.log warn;
events { worker_connections {{CONNS}}; }
mail {
{{MAILLOG}}  server_name mail.bench.invalid;
  auth_http {{AUTH}}/auth;
  auth_http_timeout 30s;
  proxy_protocol on;
  proxy_pass_error_message on;
  xclient off;
  ssl_certificate {{CERT}};
  ssl_certificate_key {{KEY}};
  ssl_session_cache shared:MAIL:10m;
  ssl_session_tickets on;
  imap_capabilities IMAP4rev1 LITERAL+ SASL-IR ID ENABLE IDLE;
  smtp_capabilities "SIZE 104857600" 8BITMIME ENHANCEDSTATUSCODES;
  server { listen {{IMAP}} backlog=4096; protocol imap; }
  server { listen {{IMAPS}} ssl backlog=4096; protocol imap; }
  server { listen {{SMTP}} backlog=4096; protocol smtp; smtp_auth none; }
  server { listen {{SMTPS}} ssl backlog=4096; protocol smtp; smtp_auth none; }
}
http {
  access_log off;
  client_body_temp_path {{DIR}}/tmp/body;
  proxy_temp_path {{DIR}}/tmp/proxy;
  fastcgi_temp_path {{DIR}}/tmp/fastcgi;
  uwsgi_temp_path {{DIR}}/tmp/uwsgi;
  scgi_temp_path {{DIR}}/tmp/scgi;
  keepalive_requests 1000000;
  ssl_session_cache shared:WEB:10m;
  ssl_session_tickets on;
  upstream static { server {{STATIC}}; keepalive 64; keepalive_requests 1000000; }
  upstream dynamic { server {{DYNAMIC}}; keepalive 64; keepalive_requests 1000000; }
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  proxy_set_header Host $host;
  proxy_set_header X-Forwarded-For $remote_addr;
  proxy_set_header X-Forwarded-Proto $scheme;
  server { listen {{WEB}} backlog=4096; location / { proxy_pass http://static; } }
  server { listen {{WEBDYN}} backlog=4096; location / { proxy_pass http://dynamic; } }
  server {
    listen {{WEBTLS}} ssl backlog=4096;
    ssl_certificate {{CERT}};
    ssl_certificate_key {{KEY}};
    location / { proxy_pass http://static; }
  }
}
`)
}

// nginxStaticConf is the web backend: nginx serving a static page, one
// worker (bench/web's backend).
func nginxStaticConf(dir, addr string) string {
	return strings.NewReplacer("{{DIR}}", dir, "{{ADDR}}", addr).Replace(`# written by bench/peers
daemon off;
master_process off;
worker_processes 1;
pid {{DIR}}/nginx-static.pid;
error_log {{DIR}}/nginx-static-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path {{DIR}}/tmp/sbody;
  proxy_temp_path {{DIR}}/tmp/sproxy;
  fastcgi_temp_path {{DIR}}/tmp/sfastcgi;
  uwsgi_temp_path {{DIR}}/tmp/suwsgi;
  scgi_temp_path {{DIR}}/tmp/sscgi;
  default_type text/html;
  keepalive_requests 1000000;
  server { listen {{ADDR}} backlog=4096; root {{DIR}}/www; }
}
`)
}

// writePage writes the static page of page bytes.
func writePage(dir string, page int) error {
	for _, d := range []string{"www", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	body := "<html><body>" + strings.Repeat("x", max(0, page-28)) + "</body></html>\n"
	return os.WriteFile(filepath.Join(dir, "www", "index.html"), []byte(body), 0o644)
}

func startNginx(name, dir, conf string, wait ...string) (*benchkit.Proc, error) {
	path := filepath.Join(dir, name+".conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	if out, err := exec.Command("nginx", "-t", "-p", dir, "-e", filepath.Join(dir, name+"-error.log"), "-c", path).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("nginx -t %s: %w\n%s", path, err, out)
	}
	p, err := benchkit.Start(name, filepath.Join(dir, name+".out"), nil, "nginx", "-p", dir, "-e", filepath.Join(dir, name+"-error.log"), "-c", path)
	if err != nil {
		return nil, err
	}
	if err := p.WaitPorts(wait...); err != nil {
		p.Stop()
		return nil, err
	}
	return p, nil
}

// ---- haproxy --------------------------------------------------------------------

// haproxyConf is the haproxy peer: Debian's haproxy 2.6, mode tcp with
// send-proxy-v2 to the mail backends (TLS terminated with `bind … ssl crt`
// for the implicit-TLS scenarios) and mode http, keep-alive, for the web.
// With logs, the mail frontends log one line a connection (option tcplog;
// Debian's haproxy.cfg has every proxy log, log global) to haproxy's standard
// output, which the bench writes to a file; the web frontends log nothing,
// as postern's and nginx's web sides.
func haproxyConf(a addrs, c *certFiles, maxconn int, logs bool) string {
	globalLog, mailLog := "", ""
	if logs {
		globalLog, mailLog = "  log stdout format raw local0\n", "  log global\n  option tcplog\n"
	}
	return strings.NewReplacer("{{GLOBALLOG}}", globalLog, "{{MAILLOG}}", mailLog, "{{IMAP}}", a.hap.imap, "{{IMAPS}}", a.hap.imaps, "{{SMTP}}", a.hap.smtp, "{{SMTPS}}", a.hap.smtps,
		"{{WEB}}", a.hap.web, "{{WEBDYN}}", a.hap.webDyn, "{{WEBTLS}}", a.hap.webTLS,
		"{{DOVECOT}}", a.imapDirect, "{{POSTFIX}}", a.smtpDirect, "{{STATIC}}", a.static, "{{DYNAMIC}}", a.dynamic,
		"{{PEM}}", c.combined, "{{MAXCONN}}", fmt.Sprint(maxconn)).Replace(`# written by bench/peers
global
{{GLOBALLOG}}  maxconn {{MAXCONN}}
  tune.ssl.cachesize 20000
defaults
  mode tcp
  timeout connect 5s
  timeout client 15m
  timeout server 15m
  timeout http-keep-alive 5m
  timeout http-request 30s
frontend imap
  bind {{IMAP}}
{{MAILLOG}}  default_backend dovecot
frontend imaps
  bind {{IMAPS}} ssl crt {{PEM}}
{{MAILLOG}}  default_backend dovecot
frontend smtp
  bind {{SMTP}}
{{MAILLOG}}  default_backend postfix
frontend smtps
  bind {{SMTPS}} ssl crt {{PEM}}
{{MAILLOG}}  default_backend postfix
backend dovecot
  server dovecot {{DOVECOT}} send-proxy-v2
backend postfix
  server postfix {{POSTFIX}} send-proxy-v2
frontend web
  mode http
  option http-keep-alive
  bind {{WEB}}
  default_backend static
frontend webtls
  mode http
  option http-keep-alive
  bind {{WEBTLS}} ssl crt {{PEM}}
  default_backend static
frontend webdyn
  mode http
  option http-keep-alive
  bind {{WEBDYN}}
  default_backend dynamic
backend static
  mode http
  http-reuse always
  server static {{STATIC}}
backend dynamic
  mode http
  http-reuse always
  server dynamic {{DYNAMIC}}
`)
}

func startHAProxy(dir, conf string, wait ...string) (*benchkit.Proc, error) {
	path := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	if out, err := exec.Command("haproxy", "-c", "-f", path).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("haproxy -c %s: %w\n%s", path, err, out)
	}
	p, err := benchkit.Start("haproxy", filepath.Join(dir, "haproxy.log"), nil, "haproxy", "-db", "-f", path)
	if err != nil {
		return nil, err
	}
	if err := p.WaitPorts(wait...); err != nil {
		p.Stop()
		return nil, err
	}
	return p, nil
}

// ---- postern ----------------------------------------------------------------------

// posternMailConf is postern serve for the mail scenarios: imap, imaps,
// smtp and smtps services relaying to Dovecot's and Postfix's PROXY ports
// with a PROXY v2 header, plaintext logins allowed from loopback (as
// bench/imap), intrusion prevention on with every trigger, the connection
// rates and per-address limits set beyond the load (every load client is
// on 127.0.0.0/8); eventLoops sets event_loops.
func posternMailConf(dir string, a addrs, c *certFiles, eventLoops bool) string {
	var s strings.Builder
	s.WriteString("# written by bench/peers\nservices:\n")
	svc := func(name, listen, backend string, tls, imap bool) {
		fmt.Fprintf(&s, "  %s:\n    listen: %q\n    backend: %q\n    backend_proxy: v2\n    max_connections_per_address: 1000000\n", name, listen, backend)
		if imap {
			s.WriteString("    plaintext_login: \"127.0.0.0/8\"\n")
		} else {
			s.WriteString("    hostname: postern.bench.invalid\n    max_backend_connections: 0\n    max_backend_connections_per_network: 0\n")
		}
		if tls {
			fmt.Fprintf(&s, "    tls: { cert: %q, key: %q }\n", c.cert, c.key)
		}
	}
	svc("imap", a.pt.imap, a.imapDirect, false, true)
	svc("imaps", a.pt.imaps, a.imapDirect, true, true)
	svc("smtp", a.pt.smtp, a.smtpDirect, false, false)
	svc("smtps", a.pt.smtps, a.smtpDirect, true, false)
	fmt.Fprintf(&s, `local_domains: "example.test; other.test"
intrusion_prevention:
  block_minutes: 240
  imap_pop3: { connections_per_minute: 100000000, failed_logins: 5 }
  smtp: { connections_per_minute: 100000000, failed_logins: 5, unknown_recipients: 5, relay_denials: 5,
          rset_count: 20, message_size: 100MB }
store: { path: %q }
admin: { listen: %q, token_file: %q }
log: { level: info }
`, filepath.Join(dir, "postern.db"), "unix:"+filepath.Join(dir, "admin.sock"), filepath.Join(dir, "admin.token"))
	fmt.Fprintf(&s, "event_loops: %v\n", eventLoops)
	return s.String()
}

// posternWebConf is postern serve's web service in front of backend
// (bench/web's configuration: a path rule and a login form to watch).
func posternWebConf(dir, listen, backend string, c *certFiles) string {
	tls := ""
	if c != nil {
		tls = fmt.Sprintf("    tls: { cert: %q, key: %q }\n", c.cert, c.key)
	}
	return fmt.Sprintf(`# written by bench/peers
patterns:
  Admins: "192.0.2.7"
services:
  web:
    listen: %q
    backend: "http://%s"
    max_connections_per_address: 1000000
%s    paths:
      - { prefix: /admin, grant: "[Admins]" }
      - { prefix: /webmail/settings, deny: "198.51.100.0/24" }
    login_forms:
      - { path: "/?_task=login", user_field: _user, password_field: _pass, fail_status: 401 }
intrusion_prevention:
  web: { connections_per_minute: 100000000, failed_logins: 10 }
store: { path: %q }
admin: { listen: "unix:%s/admin.sock", token_file: %q }
log: { level: warn }
`, listen, backend, tls, filepath.Join(dir, "postern.db"), dir, filepath.Join(dir, "admin.token"))
}

func startPostern(name, dir, bin, conf string, wait ...string) (*benchkit.Proc, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "postern.yaml")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	p, err := benchkit.StartNotify(name, filepath.Join(dir, "postern.log"), nil, bin, "serve", "-c", path)
	if err != nil {
		return nil, err
	}
	if err := p.WaitPorts(wait...); err != nil {
		p.Stop()
		return nil, err
	}
	return p, nil
}
