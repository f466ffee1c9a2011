package smtpproxy

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// dotReference finds the end of a DATA message line by line, the obvious
// way: what dotScanner must agree with however the stream is split.
func dotReference(stream []byte) (data []byte, end bool, bareLF bool, dots []int) {
	off := 0
	for off < len(stream) {
		i := bytes.IndexByte(stream[off:], '\n')
		if i < 0 {
			// An unfinished last line is stuffed unless it may still
			// become the end line.
			if rest := string(stream[off:]); rest[0] == '.' && rest != "." && rest != ".\r" {
				dots = append(dots, off)
			}
			return stream, false, bareLF, dots
		}
		line := stream[off : off+i+1]
		if string(line) == ".\r\n" {
			return stream[:off], true, bareLF, dots
		}
		if line[0] == '.' {
			dots = append(dots, off)
		}
		if !bytes.HasSuffix(line, []byte("\r\n")) {
			bareLF = true
		}
		off += len(line)
	}
	return stream, false, bareLF, dots
}

// dotSplit runs dotScanner over stream delivered in pieces cut at splits,
// as readMessage does: unconsumed bytes are scanned again with the next.
func dotSplit(stream []byte, splits []int) (data []byte, end bool, bareLF bool, dots []int) {
	d := dotScanner{lineStart: true}
	var buf []byte
	base := 0 // stream offset of buf[0]
	prev := 0
	for _, cut := range append(splits, len(stream)) {
		if cut < prev || cut > len(stream) {
			continue
		}
		buf = append(buf, stream[prev:cut]...)
		prev = cut
		n, e := d.scan(buf)
		data = append(data, buf[:n]...)
		for _, o := range d.dots {
			dots = append(dots, base+o)
		}
		if e {
			return data, true, d.bareLF, dots
		}
		base += n
		buf = append(buf[:0], buf[n:]...)
	}
	return data, false, d.bareLF, dots
}

func TestDotScannerCases(t *testing.T) {
	for _, c := range []struct {
		in          string
		data        string
		end, bareLF bool
	}{
		{"hello\r\n.\r\n", "hello\r\n", true, false},
		{".\r\n", "", true, false},
		{"a\r\n..\r\n.\r\nQUIT\r\n", "a\r\n..\r\n", true, false},
		{"a\r\n.x\r\n.\r\n", "a\r\n.x\r\n", true, false},
		{"a\n.\r\n", "a\n", true, true},
		{"a\r\n.\n", "a\r\n.\n", false, true},           // "." LF is not the end
		{"a\r\nb.\r\n.\r", "a\r\nb.\r\n", false, false}, // end not complete yet
		{"\n", "\n", false, true},
	} {
		for cut := 0; cut <= len(c.in); cut++ {
			data, end, bareLF, _ := dotSplit([]byte(c.in), []int{cut})
			if string(data) != c.data || end != c.end || bareLF != c.bareLF {
				t.Errorf("%q cut at %d: data %q end %v bareLF %v; want %q %v %v", c.in, cut, data, end, bareLF, c.data, c.end, c.bareLF)
			}
		}
	}
}

func TestDotScannerMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte(".\r\nab")
	for i := 0; i < 20000; i++ {
		stream := make([]byte, r.IntN(40))
		for j := range stream {
			stream[j] = alphabet[r.IntN(len(alphabet))]
		}
		var splits []int
		for k := r.IntN(5); k > 0; k-- {
			splits = append(splits, r.IntN(len(stream)+1))
		}
		slices.Sort(splits)
		checkDot(t, stream, splits)
	}
}

func FuzzDotScanner(f *testing.F) {
	f.Add([]byte("a\r\n..b\r\n.\r\nQUIT\r\n"), uint8(3), uint8(9))
	f.Add([]byte(".\r"), uint8(1), uint8(2))
	f.Fuzz(func(t *testing.T, stream []byte, a, b uint8) {
		splits := []int{int(a) % (len(stream) + 1), int(b) % (len(stream) + 1)}
		slices.Sort(splits)
		checkDot(t, stream, splits)
	})
}

func checkDot(t *testing.T, stream []byte, splits []int) {
	t.Helper()
	wd, we, wb, wdots := dotReference(stream)
	gd, ge, gb, gdots := dotSplit(stream, splits)
	if we {
		if !ge || !bytes.Equal(gd, wd) || gb != wb || !slices.Equal(gdots, wdots) {
			t.Fatalf("%q split %v: got %q end %v bare %v dots %v; want %q %v %v %v", stream, splits, gd, ge, gb, gdots, wd, we, wb, wdots)
		}
		return
	}
	// Without an end line the scanner may hold back one or two bytes that
	// could begin it; everything else must match.
	if ge || gb != wb || !bytes.HasPrefix(wd, gd) || len(wd)-len(gd) > 2 || !slices.Equal(gdots, wdots) {
		t.Fatalf("%q split %v: got %q end %v bare %v dots %v; want %q %v %v %v", stream, splits, gd, ge, gb, gdots, wd, we, wb, wdots)
	}
}

// TestLargeMessagesAndPipelinedTransactions streams messages larger than
// the data buffer with the next transaction pipelined behind each end
// line, written in awkward pieces: every message arrives intact and every
// command after an end line is still read as a command.
func TestLargeMessagesAndPipelinedTransactions(t *testing.T) {
	// The messages are made before the session starts: made while it
	// waits for a command, on a loaded machine they took longer than its
	// command timeout.
	var bodies []string
	var stream bytes.Buffer
	for i := range 3 {
		var want, wire strings.Builder
		fmt.Fprintf(&want, "Subject: big %d\r\n\r\n", i)
		wire.WriteString(want.String())
		for j := 0; wire.Len() < dataBufSize*2+i*777; j++ {
			line := strings.Repeat(string(rune('a'+j%26)), j%150)
			if j%7 == 0 {
				line = "." + line // a line that starts with a dot
			}
			want.WriteString(line + "\r\n")
			if strings.HasPrefix(line, ".") {
				line = "." + line // dot-stuffed on the wire
			}
			wire.WriteString(line + "\r\n")
		}
		bodies = append(bodies, want.String())
		fmt.Fprintf(&stream, "MAIL FROM:<a@example.org>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n%s.\r\n", wire.String())
	}
	stream.WriteString("QUIT\r\n")
	h := newHarness(t, "services:\n  smtp: { listen: \":25\", backend: \"127.0.0.1:1\" }\n", nil, nil)
	c := h.dial("127.0.0.4")
	c.expect(220)
	c.cmd("EHLO x", 250)
	// Write in pieces that cut lines, end lines and commands anywhere.
	go func() {
		b := stream.Bytes()
		for len(b) > 0 {
			n := min(len(b), 1+len(b)%4093)
			if _, err := c.c.Write(b[:n]); err != nil {
				return
			}
			b = b[n:]
		}
	}()
	for range 3 {
		c.expect(250)
		c.expect(250)
		c.expect(354)
		c.expect(250)
	}
	c.expect(221)
	m := h.mta.messages()
	if len(m) != 3 {
		t.Fatalf("messages: %d", len(m))
	}
	for i, want := range bodies {
		if string(m[i].Data) != want {
			t.Errorf("message %d changed in transit: %d bytes, want %d", i, len(m[i].Data), len(want))
		}
	}
}

// A client that talks before the greeting is logged as an early talker.
// Its bytes race with postern's backend round trip, so up to five
// connections try.
func TestEarlyTalkerLogged(t *testing.T) {
	h := newHarness(t, baseIPS, nil, nil)
	for range 5 {
		c := h.dial("127.0.0.14")
		c.send("EHLO early.example\r\n")
		c.expect(220)
		c.expect(250)
		if strings.Contains(h.logs.String(), "early talker") {
			return
		}
	}
	t.Fatalf("no early talker logged:\n%s", h.logs.String())
}
