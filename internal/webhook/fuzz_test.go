package webhook

import (
	"testing"
	"time"
)

// FuzzVerify: any header and body are answered with an error or nil,
// never a panic, and a request signed by Sign always verifies.
func FuzzVerify(f *testing.F) {
	at := time.Unix(1_800_000_000, 0)
	body := []byte(`{"id":"x","type":"block"}`)
	f.Add(Sign(secret, body, at), body)
	f.Add("t=1800000000,v1=00", body)
	f.Add("t=,v1=", []byte{})
	f.Add(",,,", []byte("x"))
	f.Add("t=1800000000,v1="+string(make([]byte, 64)), body)
	f.Fuzz(func(t *testing.T, header string, body []byte) {
		_ = Verify(secret, header, body, at, 0)
		if err := Verify(secret, Sign(secret, body, at), body, at, 0); err != nil {
			t.Fatalf("own signature refused: %v", err)
		}
	})
}
