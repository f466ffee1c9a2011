package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// serve reloads by itself when a zone file it reads changes, and a GeoIP
// database with a url is downloaded before the start when its file is
// missing; a broken zone file is refused like a SIGHUP reload.
func TestServeReloadsByItself(t *testing.T) {
	dir := scenarioDir(t)
	mmdb, err := os.ReadFile(filepath.Join(dir, "country.mmdb"))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(mmdb) }))
	defer srv.Close()
	os.Remove(filepath.Join(dir, "country.mmdb"))
	cfg := filepath.Join(dir, "postern.yaml")
	conf := strings.Replace(scenario, "    - path: country.mmdb\n", "    - path: country.mmdb\n      url: "+srv.URL+"/c.mmdb\n", 1)
	writeFile(t, cfg, conf+stateConfig(t, dir))
	ctx, cancel := context.WithCancel(context.Background())
	var logs syncBuffer
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, &logs, nil) }()
	defer cancel()
	waitFor(t, &logs, "postern running", 1)
	waitFor(t, &logs, "geoip database downloaded", 1)
	waitFor(t, &logs, "watching files for changes", 1)

	writeFile(t, filepath.Join(dir, "sg.zone"), "165.21.0.0/16\n")
	waitFor(t, &logs, "configuration files changed, reloading", 1)
	waitFor(t, &logs, "configuration loaded", 2)

	writeFile(t, filepath.Join(dir, "sg.zone"), "165.21.0.0/33\n")
	waitFor(t, &logs, "reload rejected, the running configuration stays", 1)

	stopServe(t, cancel, done)
}
