package payload

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// vector is testdata/tree.json, the description tasks/formats/payload.py wrote app.bin from.
type vector struct {
	Epoch   int64  `json:"epoch"`
	Base    string `json:"base"`
	Entries []struct {
		Path, Kind, Text, Target string
		Repeat                   int
		Executable               bool
	} `json:"entries"`
}

func readVector(t *testing.T) vector {
	t.Helper()
	data, err := os.ReadFile("testdata/tree.json")
	if err != nil {
		t.Fatal(err)
	}
	var v vector
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// appFile writes base + tar + trailer, the way the Python writer does.
func appFile(t *testing.T, tarData []byte, magic string) string {
	t.Helper()
	var trailer [TrailerSize]byte
	copy(trailer[:16], magic)
	binary.LittleEndian.PutUint64(trailer[16:], uint64(len(tarData)))
	sum := sha256.Sum256(tarData)
	copy(trailer[32:], sum[:])
	file := filepath.Join(t.TempDir(), "app.bin")
	data := append(append([]byte("#!base\n"), tarData...), trailer[:]...)
	if err := os.WriteFile(file, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return file
}

func tarOf(t *testing.T, headers ...*tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range headers {
		if h.Typeflag == tar.TypeReg && h.Size == 0 {
			h.Size = int64(len(h.Name))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			_, _ = tw.Write([]byte(h.Name)[:h.Size])
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestOpenReadsTheVectorsTrailer(t *testing.T) {
	p, err := Open("testdata/app.bin")
	if err != nil {
		t.Fatal(err)
	}
	tarData, _ := os.ReadFile("testdata/payload.tar")
	if p.Offset != int64(len(readVector(t).Base)) || p.Size != int64(len(tarData)) {
		t.Fatalf("offset %d size %d", p.Offset, p.Size)
	}
	if p.Sum != sha256.Sum256(tarData) {
		t.Fatal("sha256 differs from the payload's")
	}
}

func TestOpenRefusesBrokenTrailers(t *testing.T) {
	whole, _ := os.ReadFile("testdata/app.bin")
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		path := filepath.Join(dir, name)
		_ = os.WriteFile(path, data, 0o644)
		return path
	}
	if _, err := Open(write("plain", []byte(strings.Repeat("\x7fELF", 100)))); !errors.Is(err, ErrNone) {
		t.Fatalf("plain binary: %v", err)
	}
	for name, data := range map[string][]byte{
		"cut":   whole[300:],
		"short": whole[len(whole)-40:],
	} {
		_, err := Open(write(name, data))
		if err == nil || !strings.Contains(err.Error(), "truncated") ||
			!strings.Contains(err.Error(), "copy the binary again") || strings.Contains(err.Error(), "\n") {
			t.Fatalf("%s: %v", name, err)
		}
	}
	v2 := bytes.Clone(whole)
	v2[len(v2)-TrailerSize+15] = 2
	if _, err := Open(write("v2", v2)); err == nil || !strings.Contains(err.Error(), "version 2") {
		t.Fatalf("version 2: %v", err)
	}
}

func TestExtractWritesTheVectorsTree(t *testing.T) {
	p, err := Open("testdata/app.bin")
	if err != nil {
		t.Fatal(err)
	}
	for _, workers := range []int{1, 8} {
		dest := t.TempDir()
		var progress bytes.Buffer
		stats, err := p.Extract(dest, Options{Workers: workers, Progress: &progress})
		if err != nil {
			t.Fatal(err)
		}
		if lines := strings.Count(progress.String(), "\n"); lines != 2 {
			t.Fatalf("progress: %q", progress.String())
		}
		v := readVector(t)
		files := 0
		for _, e := range v.Entries {
			where := filepath.Join(dest, e.Path)
			info, err := os.Lstat(where)
			if err != nil {
				t.Fatal(err)
			}
			switch e.Kind {
			case "file":
				files++
				data, _ := os.ReadFile(where)
				if string(data) != strings.Repeat(e.Text, max(1, e.Repeat)) {
					t.Fatalf("%s: content %q", e.Path, data)
				}
				want := os.FileMode(0o444)
				if e.Executable {
					want = 0o555
				}
				if info.Mode().Perm() != want {
					t.Fatalf("%s: mode %v", e.Path, info.Mode())
				}
				if info.ModTime().Unix() != v.Epoch {
					t.Fatalf("%s: mtime %v", e.Path, info.ModTime())
				}
			case "symlink":
				if target, _ := os.Readlink(where); target != e.Target {
					t.Fatalf("%s: target %q", e.Path, target)
				}
			case "dir":
				if !info.IsDir() {
					t.Fatalf("%s: not a folder", e.Path)
				}
			}
		}
		if stats.Files != files {
			t.Fatalf("stats %+v, %d files in the vector", stats, files)
		}
	}
}

func TestExtractRefusesADamagedPayload(t *testing.T) {
	whole, _ := os.ReadFile("testdata/app.bin")
	p, _ := Open("testdata/app.bin")
	bad := bytes.Clone(whole)
	at := bytes.Index(whole, []byte("php_server")) // inside a file's data: the tar still reads
	if at < int(p.Offset) {
		t.Fatal("the vector's Caddyfile is not in the payload")
	}
	bad[at] ^= 1
	path := filepath.Join(t.TempDir(), "bad.bin")
	_ = os.WriteFile(path, bad, 0o755)
	p, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(t.TempDir(), "staging")
	_ = os.Mkdir(dest, 0o700)
	_, err = p.Extract(dest, Options{})
	if err == nil || !strings.HasPrefix(err.Error(), "the embedded app is damaged: sha256 ") ||
		!strings.Contains(err.Error(), " expected "+p.Hex()) {
		t.Fatalf("damaged payload: %v", err)
	}
	if _, err := os.Lstat(dest); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("the staging folder was left behind")
	}
}

func TestExtractRefusesUnsafeEntries(t *testing.T) {
	file := func(name string) *tar.Header { return &tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644} }
	cases := map[string][]*tar.Header{
		"parent":       {file("../escape")},
		"inner parent": {file("a/../../escape")},
		"absolute":     {file("/etc/escape")},
		"device":       {{Name: "dev", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3}},
		"fifo":         {{Name: "fifo", Typeflag: tar.TypeFifo}},
		"hard outside": {{Name: "passwd", Typeflag: tar.TypeLink, Linkname: "../../etc/passwd"}},
		"hard unknown": {{Name: "passwd", Typeflag: tar.TypeLink, Linkname: "nothing"}},
		"below link": {
			{Name: "etc", Typeflag: tar.TypeSymlink, Linkname: "/etc"},
			file("etc/escape"),
		},
		"twice": {file("a"), file("a")},
	}
	for name, headers := range cases {
		p, err := Open(appFile(t, tarOf(t, headers...), Magic))
		if err != nil {
			t.Fatal(err)
		}
		dest := filepath.Join(t.TempDir(), "staging")
		_ = os.Mkdir(dest, 0o700)
		if _, err := p.Extract(dest, Options{}); err == nil || strings.Contains(err.Error(), "\n") {
			t.Fatalf("%s: %v", name, err)
		}
		if _, err := os.Lstat(dest); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s: the staging folder was left behind", name)
		}
	}
	if _, err := os.Lstat("/etc/escape"); err == nil {
		t.Fatal("an entry escaped")
	}
}

func TestExtractAcceptsGNULongNamesAndInnerHardLinks(t *testing.T) {
	long := strings.Repeat("d/", 80) + "file.php"
	data := tarOf(t,
		&tar.Header{Name: long, Typeflag: tar.TypeReg, Mode: 0o644, Format: tar.FormatGNU},
		&tar.Header{Name: "again.php", Typeflag: tar.TypeLink, Linkname: long, Format: tar.FormatGNU},
	)
	p, _ := Open(appFile(t, data, Magic))
	dest := t.TempDir()
	if _, err := p.Extract(dest, Options{}); err != nil {
		t.Fatal(err)
	}
	a, _ := os.Stat(filepath.Join(dest, long))
	b, _ := os.Stat(filepath.Join(dest, "again.php"))
	if !os.SameFile(a, b) {
		t.Fatal("the hard link is not the same file")
	}
}

func TestSealStampAndRemoveTree(t *testing.T) {
	p, _ := Open("testdata/app.bin")
	dest := filepath.Join(t.TempDir(), "tree")
	_ = os.Mkdir(dest, 0o700)
	if _, err := p.Extract(dest, Options{}); err != nil {
		t.Fatal(err)
	}
	if err := Seal(dest); err != nil {
		t.Fatal(err)
	}
	uid := os.Getuid()
	sum, top, err := Stamp(dest, uid)
	if err != nil || top == 0 {
		t.Fatal(err)
	}
	if again, _, _ := Stamp(dest, uid); again != sum {
		t.Fatal("the stamp of an untouched tree changed")
	}
	if _, _, err := Stamp(dest, uid+1); err == nil || !strings.Contains(err.Error(), "belongs to uid") {
		t.Fatalf("foreign owner: %v", err)
	}
	index := filepath.Join(dest, "webroot", "index.php")
	_ = os.Chmod(index, 0o644)
	if _, _, err := Stamp(dest, uid); err == nil || !strings.Contains(err.Error(), "writable") {
		t.Fatalf("writable file: %v", err)
	}
	_ = os.Chmod(index, 0o444) // back to its mode: its ctime still tells
	if again, _, _ := Stamp(dest, uid); again == sum {
		t.Fatal("a chmod and back left the stamp unchanged")
	}
	if err := RemoveTree(dest); err != nil {
		t.Fatal(err)
	}
}
