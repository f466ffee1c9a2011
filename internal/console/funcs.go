package console

import (
	"html/template"
	"strconv"
	"time"
)

var funcs = template.FuncMap{
	"rate": func(f float64) string { return strconv.FormatFloat(f, 'f', 2, 64) },
	"ts": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04:05")
	},
	"expiry": func(t *time.Time) string {
		if t == nil {
			return "never"
		}
		return t.UTC().Format("2006-01-02 15:04:05")
	},
}
