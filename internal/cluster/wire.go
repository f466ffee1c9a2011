package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/reason"
	"github.com/postern/postern/internal/store"
)

// wireBlock is a block as it is kept in Redis and carried on the stream:
// short field names, times in Unix milliseconds (0: none).
type wireBlock struct {
	P string `json:"p"`           // prefix
	R string `json:"r"`           // reason code
	S string `json:"s,omitempty"` // service
	D string `json:"d,omitempty"` // detail
	F int64  `json:"f"`           // first seen
	L int64  `json:"l"`           // last seen
	H int64  `json:"h"`           // hits
	X int64  `json:"x"`           // expires (0: never)
	N string `json:"n"`           // node
	B string `json:"b"`           // by
	C string `json:"c,omitempty"` // comment
	V int    `json:"v"`           // escalation level
}

// Bounds on what is read from Redis; anything longer is refused.
const (
	maxText     = 2048
	maxName     = 256
	maxLevel    = 64
	maxEntry    = 4 << 20 // bytes of one stream entry's data
	maxPrefixes = 100_000
)

func msOf(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func timeOf(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

func toWire(b store.Block) wireBlock {
	return wireBlock{P: b.Prefix.String(), R: b.Reason.String(), S: b.Service, D: b.Detail,
		F: msOf(b.FirstSeen), L: msOf(b.LastSeen), H: b.Hits, X: msOf(b.Expires),
		N: b.Node, B: b.By, C: b.Comment, V: b.Level}
}

// parsePrefix reads a prefix as postern writes it: masked, IPv4 as IPv4,
// no zone.
func parsePrefix(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("bad prefix %.64q", s)
	}
	if p != p.Masked() || p.Addr().Is4In6() || p.Addr().Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("prefix %s not in canonical form", p)
	}
	return p, nil
}

func text(name, s string, limit int) error {
	if len(s) > limit || !utf8.ValidString(s) {
		return fmt.Errorf("%s too long or not UTF-8", name)
	}
	return nil
}

// fromWire checks a block read from Redis and returns it.
func fromWire(w wireBlock) (store.Block, error) {
	p, err := parsePrefix(w.P)
	if err != nil {
		return store.Block{}, err
	}
	if len(w.R) != 1 || !reason.Code(w.R[0]).Valid() {
		return store.Block{}, fmt.Errorf("%s: bad reason %.8q", p, w.R)
	}
	for _, f := range []struct {
		n, s string
		l    int
	}{{"service", w.S, maxName}, {"detail", w.D, maxText}, {"node", w.N, maxName}, {"by", w.B, maxName}, {"comment", w.C, maxText}} {
		if err := text(f.n, f.s, f.l); err != nil {
			return store.Block{}, fmt.Errorf("%s: %w", p, err)
		}
	}
	if w.H < 0 || w.V < 0 || w.V > maxLevel || w.F < 0 || w.L < 0 || w.X < 0 {
		return store.Block{}, fmt.Errorf("%s: negative or out-of-range number", p)
	}
	b := store.Block{Prefix: p, Reason: reason.Code(w.R[0]), Service: w.S, Detail: w.D,
		FirstSeen: timeOf(w.F), LastSeen: timeOf(w.L), Hits: w.H, Expires: timeOf(w.X),
		Node: w.N, By: w.B, Comment: w.C, Level: w.V}
	if err := store.CheckBlock(&b); err != nil {
		return store.Block{}, err
	}
	return b, nil
}

// The stream entry's operations.
const (
	opPut    = "put"
	opDel    = "del"
	opDelAll = "delall"
	opPurge  = "purge"
)

// entry is one stream entry's fields.
type entry struct {
	Op    string
	Node  string
	Actor string
	Data  string
}

// changeData encodes a change's data field.
func changeData(c guard.Change) (op, data string) {
	switch c.Kind {
	case guard.ChangePut:
		ws := make([]wireBlock, len(c.Blocks))
		for i, b := range c.Blocks {
			ws[i] = toWire(b)
		}
		j, _ := json.Marshal(ws)
		return opPut, string(j)
	case guard.ChangeDelete:
		ps := make([]string, len(c.Prefixes))
		for i, p := range c.Prefixes {
			ps[i] = p.String()
		}
		j, _ := json.Marshal(ps)
		return opDel, string(j)
	case guard.ChangeDeleteAll:
		return opDelAll, ""
	case guard.ChangePurge:
		return opPurge, fmt.Sprint(msOf(c.Before))
	}
	return "", ""
}

// decodeEntry reads a stream entry into a change, checking everything.
func decodeEntry(values map[string]any) (guard.Change, error) {
	str := func(k string) string {
		s, _ := values[k].(string)
		return s
	}
	e := entry{Op: str("op"), Node: str("node"), Actor: str("actor"), Data: str("data")}
	if err := text("node", e.Node, maxName); err != nil || e.Node == "" {
		return guard.Change{}, errors.New("missing or bad node")
	}
	if err := text("actor", e.Actor, maxName); err != nil {
		return guard.Change{}, err
	}
	if len(e.Data) > maxEntry {
		return guard.Change{}, errors.New("data too large")
	}
	c := guard.Change{Node: e.Node, Actor: e.Actor, Auto: str("auto") == "1"}
	switch e.Op {
	case opPut:
		var ws []wireBlock
		if err := json.Unmarshal([]byte(e.Data), &ws); err != nil {
			return guard.Change{}, fmt.Errorf("put: %w", err)
		}
		if len(ws) == 0 || len(ws) > maxPrefixes {
			return guard.Change{}, errors.New("put: no blocks or too many")
		}
		c.Kind = guard.ChangePut
		for _, w := range ws {
			b, err := fromWire(w)
			if err != nil {
				return guard.Change{}, fmt.Errorf("put: %w", err)
			}
			c.Blocks = append(c.Blocks, b)
		}
	case opDel:
		var ps []string
		if err := json.Unmarshal([]byte(e.Data), &ps); err != nil {
			return guard.Change{}, fmt.Errorf("del: %w", err)
		}
		if len(ps) == 0 || len(ps) > maxPrefixes {
			return guard.Change{}, errors.New("del: no prefixes or too many")
		}
		c.Kind = guard.ChangeDelete
		for _, s := range ps {
			p, err := parsePrefix(s)
			if err != nil {
				return guard.Change{}, fmt.Errorf("del: %w", err)
			}
			c.Prefixes = append(c.Prefixes, p)
		}
	case opDelAll:
		c.Kind = guard.ChangeDeleteAll
	case opPurge:
		var ms int64
		if _, err := fmt.Sscan(e.Data, &ms); err != nil || ms <= 0 {
			return guard.Change{}, errors.New("purge: bad time")
		}
		c.Kind, c.Before = guard.ChangePurge, timeOf(ms)
	default:
		return guard.Change{}, fmt.Errorf("unknown operation %.16q", e.Op)
	}
	return c, nil
}

// encodeBlock is a block key's value.
func encodeBlock(b store.Block) string {
	j, _ := json.Marshal(toWire(b))
	return string(j)
}

// decodeBlock reads and checks a block key's value.
func decodeBlock(s string) (store.Block, error) {
	if len(s) > 4*maxText+4096 {
		return store.Block{}, errors.New("block too large")
	}
	var w wireBlock
	if err := json.Unmarshal([]byte(s), &w); err != nil {
		return store.Block{}, err
	}
	return fromWire(w)
}

// decodeMemory reads and checks an escalation key of prefix member: its
// value is "level ms", the level of the prefix's last automatic block and
// when it was made.
func decodeMemory(member, v string) (netip.Prefix, int, time.Time, error) {
	p, err := parsePrefix(member)
	if err != nil {
		return netip.Prefix{}, 0, time.Time{}, err
	}
	ls, ms, ok := strings.Cut(v, " ")
	level, err1 := strconv.Atoi(ls)
	t, err2 := strconv.ParseInt(ms, 10, 64)
	if !ok || len(v) > 64 || err1 != nil || err2 != nil || level < 0 || level > maxLevel || t <= 0 {
		return netip.Prefix{}, 0, time.Time{}, fmt.Errorf("%s: bad escalation memory %.64q", p, v)
	}
	return p, level, timeOf(t), nil
}
