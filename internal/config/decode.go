package config

import (
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/postern/postern/internal/diag"
)

// nodeDecoder is implemented by config types that decode themselves from a
// YAML node, keeping its position.
type nodeDecoder interface {
	decodeYAML(d *decoder, n *yaml.Node) error
}

// decoder turns a YAML node tree into typed structs strictly: an unknown
// key, a wrong type or a bad value is an error at its file:line:column. It
// keeps going after an error so one run reports every problem.
type decoder struct {
	file string
	errs diag.List
	// only, when set, is the subset of keys the next struct decoded may
	// take (a field's `keys:"a|b"` tag), and why the others are refused.
	only    []string
	onlyWhy string
}

func (d *decoder) pos(n *yaml.Node) diag.Pos {
	return diag.Pos{File: d.file, Line: n.Line, Col: n.Column}
}

func (d *decoder) errorf(n *yaml.Node, format string, args ...any) {
	d.errs.Add(diag.Errorf(d.pos(n), format, args...))
}

var nodeDecoderType = reflect.TypeFor[nodeDecoder]()

// reflectValue returns the settable struct a pointer points at.
func reflectValue(ptr any) reflect.Value { return reflect.ValueOf(ptr).Elem() }

// decode fills v (a settable value) from n.
func (d *decoder) decode(n *yaml.Node, v reflect.Value) {
	for n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // an empty value leaves the default
	}
	if v.CanAddr() && v.Addr().Type().Implements(nodeDecoderType) {
		if err := v.Addr().Interface().(nodeDecoder).decodeYAML(d, n); err != nil {
			d.errs.Add(diag.Errorf(d.pos(n), "%v", err))
		}
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		d.decode(n, v.Elem())
	case reflect.Struct:
		d.decodeStruct(n, v)
	case reflect.Map:
		d.decodeMap(n, v)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.errorf(n, "want a list, got %s", describe(n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, c := range n.Content {
			d.decode(c, s.Index(i))
		}
		v.Set(s)
	default:
		if n.Kind != yaml.ScalarNode {
			d.errorf(n, "want a %s, got %s", kindName(v.Kind()), describe(n))
			return
		}
		if err := n.Decode(v.Addr().Interface()); err != nil {
			d.errorf(n, "want a %s, got %q", kindName(v.Kind()), n.Value)
		}
	}
}

// keyHinter is implemented by config structs that know why a key is not
// theirs (it belongs to another protocol's service, say); the hint replaces
// the "did you mean" of an unknown key.
type keyHinter interface {
	keyHint(key string) string
}

var keyHinterType = reflect.TypeFor[keyHinter]()

// structFields maps the YAML keys of struct v to its fields. A field tagged
// `yaml:",inline"` (a struct, or a non-nil pointer to one) adds its own
// keys, so a per-protocol service type is its shared part plus its own.
func structFields(v reflect.Value, fields map[string]reflect.Value, tags map[string]reflect.StructTag) {
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		name, opt, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if opt == "inline" {
			fv := v.Field(i)
			if fv.Kind() == reflect.Pointer {
				if fv.IsNil() {
					continue
				}
				fv = fv.Elem()
			}
			structFields(fv, fields, tags)
			continue
		}
		if name == "" || name == "-" {
			continue
		}
		fields[name] = v.Field(i)
		tags[name] = f.Tag
	}
}

// applyDefaults sets every field of struct v that carries a `default:"…"`
// tag to that value, decoded exactly as if it were written in the file, and
// descends into nested structs. It runs before a struct's keys are decoded,
// so a key written in the file replaces its default.
func (d *decoder) applyDefaults(v reflect.Value) {
	fields := make(map[string]reflect.Value)
	tags := make(map[string]reflect.StructTag)
	structFields(v, fields, tags)
	for name, fv := range fields {
		if def, ok := tags[name].Lookup("default"); ok {
			d.decode(&yaml.Node{Kind: yaml.ScalarNode, Value: def}, fv)
			continue
		}
		if fv.Kind() == reflect.Struct && !fv.Addr().Type().Implements(nodeDecoderType) {
			d.applyDefaults(fv)
		}
	}
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, "want a mapping of keys, got %s", describe(n))
		return
	}
	only, onlyWhy := d.only, d.onlyWhy
	d.only, d.onlyWhy = nil, ""
	d.applyDefaults(v)
	fields := make(map[string]reflect.Value)
	tags := make(map[string]reflect.StructTag)
	structFields(v, fields, tags)
	if only != nil {
		for name := range fields {
			if !slices.Contains(only, name) {
				delete(fields, name)
			}
		}
	}
	known := make([]string, 0, len(fields))
	for name := range fields {
		known = append(known, name)
	}
	slices.Sort(known)
	if !d.uniqueKeys(n) {
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.Value == "<<" {
			d.errorf(k, "merge keys (<<) are not supported; write the keys out")
			continue
		}
		fv, ok := fields[k.Value]
		if !ok {
			hint := ""
			if only != nil && tags[k.Value] != "" {
				hint = onlyWhy
			} else if v.Addr().Type().Implements(keyHinterType) {
				hint = v.Addr().Interface().(keyHinter).keyHint(k.Value)
			}
			if hint != "" {
				d.errorf(k, "unknown key %q (%s)", k.Value, hint)
			} else {
				d.errorf(k, "unknown key %q%s", k.Value, suggest(k.Value, known))
			}
			continue
		}
		if keys, ok := tags[k.Value].Lookup("keys"); ok {
			d.only, d.onlyWhy = strings.Split(keys, "|"), tags[k.Value].Get("keyswhy")
		}
		d.decode(val, fv)
		d.only, d.onlyWhy = nil, ""
		if allowed, ok := tags[k.Value].Lookup("enum"); ok && fv.Kind() == reflect.String {
			d.checkEnum(k.Value, val, fv.String(), strings.Split(allowed, "|"))
		}
		if m, ok := tags[k.Value].Lookup("min"); ok {
			d.checkMin(k.Value, val, fv, m)
		}
	}
}

// checkEnum reports a value of a key that takes one of a fixed set of
// words (tag `enum:"a|b|c"`), at the value's position.
func (d *decoder) checkEnum(key string, n *yaml.Node, value string, allowed []string) {
	if slices.Contains(allowed, value) {
		return
	}
	want := strings.Join(allowed[:len(allowed)-1], ", ") + " or " + allowed[len(allowed)-1]
	if h := enumHints[key+" "+value]; h != "" {
		d.errorf(n, "%s %s %s", key, value, h)
		return
	}
	d.errorf(n, "bad %s %q: want %s", key, value, want)
}

// checkMin reports a whole number below the field's `min:"n"` tag at the
// value's position.
func (d *decoder) checkMin(key string, n *yaml.Node, v reflect.Value, tag string) {
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return
		}
		v = v.Elem()
	}
	lo, err := strconv.ParseInt(tag, 10, 64)
	if err != nil || v.Kind() != reflect.Int {
		d.errorf(n, "internal error: min tag %q on %s", tag, key)
		return
	}
	if v.Int() < lo {
		d.errorf(n, "%s cannot be less than %d, got %d", key, lo, v.Int())
	}
}

// enumHints explain a value that is valid for other services only.
var enumHints = map[string]string{
	"backend_proxy xclient": "is for SMTP services only",
	"backend_tls starttls":  "is for SMTP backends; use tls (the backend's imaps or pop3s port) or none",
}

func (d *decoder) decodeMap(n *yaml.Node, v reflect.Value) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, "want a mapping, got %s", describe(n))
		return
	}
	if v.Type().Key().Kind() != reflect.String {
		d.errorf(n, "internal error: map key must be a string")
		return
	}
	if !d.uniqueKeys(n) {
		return
	}
	if v.IsNil() {
		v.Set(reflect.MakeMap(v.Type()))
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			d.errorf(k, "want a plain key, got %s", describe(k))
			continue
		}
		e := reflect.New(v.Type().Elem()).Elem()
		d.decode(val, e)
		v.SetMapIndex(reflect.ValueOf(k.Value).Convert(v.Type().Key()), e)
	}
}

// uniqueKeys reports a key written twice in one mapping, which the YAML
// parser lets through when decoding into nodes.
func (d *decoder) uniqueKeys(n *yaml.Node) bool {
	seen := make(map[string]*yaml.Node, len(n.Content)/2)
	ok := true
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		if prev, dup := seen[k.Value]; dup {
			d.errorf(k, "key %q is already defined at line %d", k.Value, prev.Line)
			ok = false
			continue
		}
		seen[k.Value] = k
	}
	return ok
}

// suggest offers the closest known key for a misspelt one.
func suggest(key string, known []string) string {
	best, bestD := "", min(3, len(key))
	for _, k := range known {
		if dist := editDistance(strings.ToLower(key), k); dist < bestD {
			best, bestD = k, dist
		}
	}
	if best != "" {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	slices.Sort(known)
	return " (known keys: " + strings.Join(known, ", ") + ")"
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("%q", n.Value)
	}
	return "nothing"
}

func kindName(k reflect.Kind) string {
	switch k {
	case reflect.Int, reflect.Int64, reflect.Int32, reflect.Uint, reflect.Uint32, reflect.Uint64:
		return "whole number"
	case reflect.Float64, reflect.Float32:
		return "number"
	case reflect.Bool:
		return "true or false"
	case reflect.String:
		return "string"
	}
	return k.String()
}
