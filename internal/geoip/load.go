package geoip

import (
	"context"
	"errors"
	"io"
	"os"

	"github.com/postern/postern/internal/diag"
	"github.com/postern/postern/internal/safefile"
)

// ctxCheckEvery is how many records a loader reads between checks of its
// context.
const ctxCheckEvery = 1 << 16

// loadSource opens, detects and loads one source.
func loadSource(ctx context.Context, src Source) (*source, error) {
	if src.Path == "" {
		return nil, src.configErr("no file name given")
	}
	if err := ctx.Err(); err != nil {
		return nil, src.configErr("not loaded: %w", err)
	}
	// A regular file only, opened without blocking (a FIFO must not hang
	// a reload) and checked on the open descriptor.
	f, st, err := safefile.Open(src.Path, safefile.MaxDatabase)
	if err != nil {
		return nil, src.configErr("cannot open: %w", errors.Unwrap(err))
	}
	defer f.Close()
	format, err := src.format(f, st.Size())
	if err != nil {
		return nil, err
	}
	if format != FormatMMDB && st.Size() > safefile.MaxText {
		return nil, src.configErr("cannot open: %w: a %s file of %d bytes, more than the %d allowed for text files", safefile.ErrTooLarge, format, st.Size(), int64(safefile.MaxText))
	}
	s, err := loadFormat(ctx, src, format, f, st.Size())
	if err != nil {
		return nil, err
	}
	s.info.Path = src.Path
	s.info.Format = string(format)
	if format != FormatMMDB {
		s.info.BuildTime = st.ModTime()
	}
	return s, nil
}

// format returns the format of src, detecting it if needed.
func (src Source) format(f io.ReaderAt, size int64) (Format, error) {
	switch src.Format {
	case FormatMMDB, FormatCSV, FormatZone:
		return src.Format, nil
	case FormatAuto:
		format, err := detectFormat(src.Path, f, size)
		if err != nil {
			return FormatAuto, src.configErr("%w", err)
		}
		return format, nil
	}
	return FormatAuto, src.configErr("unknown format %q (want mmdb, csv or zone)", src.Format)
}

// loadFormat loads the open file f of src in the given format.
// Reads are bounded by the format's limit even if the file grows after it
// was checked.
func loadFormat(ctx context.Context, src Source, format Format, f *os.File, size int64) (*source, error) {
	switch format {
	case FormatMMDB:
		data, err := safefile.ReadAll(f, src.Path, size, safefile.MaxDatabase)
		if err != nil {
			return nil, dataErr(src.Path, 0, "cannot read: %w", errors.Unwrap(err))
		}
		return loadMMDB(ctx, src.Path, data)
	case FormatCSV:
		return loadCSV(ctx, src.Path, safefile.Reader(f, src.Path, safefile.MaxText), size)
	default:
		cc, err := src.zoneCountry()
		if err != nil {
			return nil, err
		}
		return loadZone(ctx, src.Path, cc, safefile.Reader(f, src.Path, safefile.MaxText))
	}
}

// configErr reports a problem with the source as configured (missing file,
// unknown format): at the configuration position when there is one, else
// at the file.
func (src Source) configErr(format string, args ...any) *diag.Error {
	if src.Pos.IsValid() {
		return diag.Errorf(src.Pos, "geoip database %q: "+format, append([]any{src.Path}, args...)...)
	}
	return diag.Errorf(diag.Pos{File: src.Path}, format, args...)
}

// dataErr reports a problem with the contents of the file at path, at line
// (0 for the whole file).
func dataErr(path string, line int, format string, args ...any) *diag.Error {
	return diag.Errorf(diag.Pos{File: path, Line: line}, format, args...)
}
