package geoip

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"

	"github.com/postern/postern/internal/diag"
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
	f, err := os.Open(src.Path)
	if err != nil {
		return nil, src.configErr("cannot open: %w", pathErrCause(err))
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, src.configErr("cannot stat: %w", pathErrCause(err))
	}
	if st.IsDir() {
		return nil, src.configErr("is a directory, not a database file")
	}
	format, err := src.format(f, st.Size())
	if err != nil {
		return nil, err
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
func loadFormat(ctx context.Context, src Source, format Format, f *os.File, size int64) (*source, error) {
	switch format {
	case FormatMMDB:
		data, err := readAll(f, size)
		if err != nil {
			return nil, dataErr(src.Path, 0, "cannot read: %w", pathErrCause(err))
		}
		return loadMMDB(ctx, src.Path, data)
	case FormatCSV:
		return loadCSV(ctx, src.Path, f, size)
	default:
		cc, err := src.zoneCountry()
		if err != nil {
			return nil, err
		}
		return loadZone(ctx, src.Path, cc, f)
	}
}

// readAll reads the whole file f of the given size.
func readAll(f *os.File, size int64) ([]byte, error) {
	if int64(int(size)) != size {
		return nil, errors.New("file too large")
	}
	data := make([]byte, size)
	n, err := io.ReadFull(f, data)
	if errors.Is(err, io.ErrUnexpectedEOF) {
		// The file shrank while we read it; take what is there.
		return data[:n], nil
	}
	return data, err
}

// pathErrCause strips the operation and path from a *fs.PathError, which
// our messages already name, keeping the cause for errors.Is.
func pathErrCause(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
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
