package config

import (
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/postern/postern/internal/diag"
)

// Changed lists the keys whose values differ between two configurations,
// as dotted paths in file order ("services.imap.backend", "spam.timeout",
// "patterns.Admins"). A service, pattern or list that is added or removed
// is one key. Positions and quoting are not values: moving a line changes
// nothing.
func Changed(old, cur *File) []string {
	var out []string
	diffValue(&out, "", reflect.ValueOf(old).Elem(), reflect.ValueOf(cur).Elem())
	return out
}

var (
	posType      = reflect.TypeFor[diag.Pos]()
	textType     = reflect.TypeFor[Text]()
	patternsType = reflect.TypeFor[Patterns]()
)

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// diffValue appends the paths under path where a and b differ.
func diffValue(out *[]string, path string, a, b reflect.Value) {
	t := a.Type()
	switch {
	case t == patternsType:
		diffPatterns(out, path, a.Interface().(Patterns), b.Interface().(Patterns))
		return
	case t.Kind() == reflect.Map:
		keys := map[string]reflect.Value{}
		for _, k := range append(a.MapKeys(), b.MapKeys()...) {
			keys[fmt.Sprint(k.Interface())] = k
		}
		names := make([]string, 0, len(keys))
		for k := range keys {
			names = append(names, k)
		}
		slices.Sort(names)
		for _, k := range names {
			kv := keys[k]
			av, bv := a.MapIndex(kv), b.MapIndex(kv)
			if !av.IsValid() || !bv.IsValid() {
				*out = append(*out, join(path, k))
				continue
			}
			diffValue(out, join(path, k), av, bv)
		}
		return
	case t.Kind() == reflect.Pointer:
		if a.IsNil() != b.IsNil() {
			*out = append(*out, path)
		} else if !a.IsNil() {
			diffValue(out, path, a.Elem(), b.Elem())
		}
		return
	case t.Kind() == reflect.Struct && hasKeys(t):
		for i := range t.NumField() {
			f := t.Field(i)
			name, inline, ok := keyOf(f)
			if !ok {
				continue
			}
			p := join(path, name)
			if inline {
				p = path
			}
			diffValue(out, p, a.Field(i), b.Field(i))
		}
		return
	}
	if !equalValue(a, b) {
		*out = append(*out, path)
	}
}

// keyOf returns the YAML key of a struct field, whether it is inlined,
// and false for fields that are not keys.
func keyOf(f reflect.StructField) (name string, inline, ok bool) {
	if !f.IsExported() {
		return "", false, false
	}
	tag, has := f.Tag.Lookup("yaml")
	if !has || tag == "-" {
		return "", false, false
	}
	name, opts, _ := strings.Cut(tag, ",")
	return name, opts == "inline", true
}

// hasKeys reports whether a struct type is a block of YAML keys (rather
// than one value such as Text or Duration).
func hasKeys(t reflect.Type) bool {
	for i := range t.NumField() {
		if _, _, ok := keyOf(t.Field(i)); ok {
			return true
		}
	}
	return false
}

// equalValue compares two values of one type, ignoring positions, quoting,
// unexported state and what was compiled from the text (a Regexp's
// program, a trigger's code).
func equalValue(a, b reflect.Value) bool {
	t := a.Type()
	switch {
	case t == posType:
		return true
	case t == textType:
		return a.FieldByName("Value").String() == b.FieldByName("Value").String()
	}
	switch t.Kind() {
	case reflect.Pointer:
		if a.IsNil() || b.IsNil() {
			return a.IsNil() == b.IsNil()
		}
		if t.Elem().PkgPath() != textType.PkgPath() && t.Elem().Kind() == reflect.Struct {
			return true // compiled from text compared elsewhere (*regexp.Regexp)
		}
		return equalValue(a.Elem(), b.Elem())
	case reflect.Struct:
		for i := range t.NumField() {
			if !t.Field(i).IsExported() {
				continue
			}
			if !equalValue(a.Field(i), b.Field(i)) {
				return false
			}
		}
		return true
	case reflect.Slice:
		if a.Len() != b.Len() {
			return false
		}
		for i := range a.Len() {
			if !equalValue(a.Index(i), b.Index(i)) {
				return false
			}
		}
		return true
	case reflect.Map:
		if a.Len() != b.Len() {
			return false
		}
		for _, k := range a.MapKeys() {
			bv := b.MapIndex(k)
			if !bv.IsValid() || !equalValue(a.MapIndex(k), bv) {
				return false
			}
		}
		return true
	}
	return a.Equal(b)
}

// diffPatterns names the patterns added, removed or changed.
func diffPatterns(out *[]string, path string, a, b Patterns) {
	old := make(map[string]string, len(a))
	for _, p := range a {
		old[p.Name] = p.Text.Value
	}
	seen := make(map[string]bool, len(b))
	for _, p := range b {
		seen[p.Name] = true
		if v, ok := old[p.Name]; !ok || v != p.Text.Value {
			*out = append(*out, join(path, p.Name))
		}
	}
	for _, p := range a {
		if !seen[p.Name] {
			*out = append(*out, join(path, p.Name))
		}
	}
}
