package sockmap

import "testing"

func TestLoad(t *testing.T) {
	k, err := Load(Options{MaxSessions: 4})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if err := k.Close(); err != nil {
		t.Fatal(err)
	}
}
