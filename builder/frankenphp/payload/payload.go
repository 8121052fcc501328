// Package payload reads the app appended to the binary. The file is
//
//	[base ELF binary][payload][trailer]
//
// The payload is an uncompressed POSIX tar of the app tree; the trailer is the file's last 64
// bytes: the 16-byte magic "DURANGO-PAYLOAD\x01", the payload's length (uint64 LE), a reserved
// uint64 (0) and the raw sha256 of the payload. A file without the magic at its end is a plain
// base binary. The writer is tasks/formats/payload.py; testdata/ holds the vector both sides
// are tested against. This package uses the standard library only (no frankenphp, no caddy),
// so it builds and is tested without cgo or PHP.
package payload

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
)

const (
	// Magic opens the trailer; its last byte is the format version.
	Magic = "DURANGO-PAYLOAD\x01"
	// TrailerSize is the trailer's length: magic, length, reserved, sha256.
	TrailerSize = 64
)

// ErrNone: the file carries no app (no trailer magic at its end), it runs as plain FrankenPHP.
var ErrNone = errors.New("no app payload")

// Payload is where the app sits in the file and what its bytes must hash to.
type Payload struct {
	Path   string // the file, reopened by each extraction worker
	Offset int64  // where the payload starts
	Size   int64
	Sum    [32]byte
}

// Hex is the payload's sha256 in hex.
func (p *Payload) Hex() string { return hex.EncodeToString(p.Sum[:]) }

// Open reads the trailer of the file at path. It returns ErrNone for a plain base binary and a
// one-line error a user can act on for a truncated file or another format version.
func Open(path string) (*Payload, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read this binary to find its app: %v", err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("cannot read this binary to find its app: %v", err)
	}
	size := info.Size()
	if size < TrailerSize {
		return nil, fmt.Errorf("the embedded app is truncated: the file has %d bytes, fewer than "+
			"its %d-byte trailer; copy the binary again or rebuild it", size, TrailerSize)
	}
	var t [TrailerSize]byte
	if _, err := f.ReadAt(t[:], size-TrailerSize); err != nil {
		return nil, fmt.Errorf("cannot read this binary's trailer: %v", err)
	}
	if string(t[:16]) != Magic {
		if string(t[:15]) == Magic[:15] {
			return nil, fmt.Errorf("the embedded app has payload format version %d; this binary "+
				"reads version %d: rebuild the app with a matching builder", t[15], Magic[15])
		}
		return nil, ErrNone
	}
	length := binary.LittleEndian.Uint64(t[16:24])
	if reserved := binary.LittleEndian.Uint64(t[24:32]); reserved != 0 {
		return nil, fmt.Errorf("the embedded app's trailer sets unknown flags (%#x); this binary "+
			"is too old for it: rebuild the app with a matching builder", reserved)
	}
	if length > uint64(size-TrailerSize) {
		return nil, fmt.Errorf("the embedded app is truncated: its trailer announces %d bytes, the "+
			"file holds %d before it; copy the binary again or rebuild it", length, size-TrailerSize)
	}
	p := &Payload{Path: path, Size: int64(length), Offset: size - TrailerSize - int64(length)}
	copy(p.Sum[:], t[32:])
	return p, nil
}
