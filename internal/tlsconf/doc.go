// Package tlsconf serves the site's TLS certificate to the protocol
// gateways and reloads it from disk without a restart.
//
// A Certs holds one certificate chain and its private key, read from two PEM
// files. Its GetCertificate method reads the current pair through an atomic
// pointer, so handshakes never wait for a reload; Reload, ReloadIfChanged and
// Watch replace the pair only when the new files load cleanly, so a botched
// renewal (half-written file, key of another certificate) leaves the old pair
// in service and reports an error naming the file.
//
//	certs, err := tlsconf.Load("/etc/postern/tls/cert.pem", "/etc/postern/tls/key.pem")
//	if err != nil { ... }
//	for _, w := range certs.Warnings() { log.Warn(w) }
//	go certs.Watch(ctx, time.Minute, logger.Info)
//	cfg := certs.ServerConfig()
package tlsconf
