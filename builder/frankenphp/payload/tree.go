package payload

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
)

// Seal makes an extracted tree read-only: files lose every write bit (execute bits kept),
// folders, the top one included, become 0555.
func Seal(dir string) error {
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.Chmod(path, 0o555)
		case d.Type().IsRegular():
			info, err := d.Info()
			if err != nil {
				return err
			}
			if info.Mode().Perm()&0o222 != 0 {
				return os.Chmod(path, info.Mode().Perm()&^0o222)
			}
		}
		return nil
	})
}

// Stamp checks a sealed tree and sums it up: every entry must be a folder, a file or a symlink
// owned by uid, and no folder or file may be writable by anyone (a symlink's own mode means
// nothing on Linux). The stamp is the sha256 over every entry below dir, depth first in byte
// order, of (relative path, type, mode, size, mtime_ns, uid, inode, ctime_ns): a file written,
// added, removed, replaced or chmod'ed changes it, since each of these changes an inode or a
// ctime that cannot be set back. The top folder is left out (a rename changes its ctime; its
// inode is returned for the caller to pin the stamp to this very tree) but checked like the
// rest. A failed check returns the reason, short enough for one line.
//
// Folders are listed and their entries stat'ed by parallel goroutines (on a cold cache each
// stat may wait for the disk), and hashed in order afterwards.
func Stamp(dir string, uid int) (string, uint64, error) {
	var top syscall.Stat_t
	if err := syscall.Lstat(dir, &top); err != nil {
		return "", 0, &fs.PathError{Op: "lstat", Path: dir, Err: err}
	}
	if err := checkEntry(".", &top, uid); err != nil {
		return "", 0, err
	}
	if top.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		return "", 0, fmt.Errorf("%s is not a folder", dir)
	}
	listings, err := listAll(dir, uid)
	if err != nil {
		return "", 0, err
	}
	h := sha256.New()
	var rec []byte
	var walk func(rel string)
	walk = func(rel string) {
		for _, e := range listings[rel] {
			st := &e.st
			rec = binary.LittleEndian.AppendUint32(rec[:0], uint32(len(e.rel)))
			rec = append(rec, e.rel...)
			rec = append(rec, kindOf(st))
			rec = binary.LittleEndian.AppendUint32(rec, st.Mode)
			rec = binary.LittleEndian.AppendUint64(rec, uint64(st.Size))
			rec = binary.LittleEndian.AppendUint64(rec, uint64(st.Mtim.Nano()))
			rec = binary.LittleEndian.AppendUint32(rec, st.Uid)
			rec = binary.LittleEndian.AppendUint64(rec, st.Ino)
			rec = binary.LittleEndian.AppendUint64(rec, uint64(st.Ctim.Nano()))
			h.Write(rec)
			if kindOf(st) == 'd' {
				walk(e.rel)
			}
		}
	}
	walk("")
	return hex.EncodeToString(h.Sum(nil)), top.Ino, nil
}

type statEntry struct {
	rel string
	st  syscall.Stat_t
}

func kindOf(st *syscall.Stat_t) byte {
	switch st.Mode & syscall.S_IFMT {
	case syscall.S_IFDIR:
		return 'd'
	case syscall.S_IFREG:
		return 'f'
	case syscall.S_IFLNK:
		return 'l'
	}
	return '?'
}

func checkEntry(rel string, st *syscall.Stat_t, uid int) error {
	kind := kindOf(st)
	switch {
	case kind == '?':
		return fmt.Errorf("%s is neither a file, a folder nor a symlink", rel)
	case int(st.Uid) != uid:
		return fmt.Errorf("%s belongs to uid %d, not %d", rel, st.Uid, uid)
	case kind != 'l' && st.Mode&0o222 != 0:
		return fmt.Errorf("%s is writable", rel)
	}
	return nil
}

// listAll lists every folder below dir ("" is dir itself) with its entries stat'ed and checked,
// each folder's entries sorted by name; at most 8 folders are read at once.
func listAll(dir string, uid int) (map[string][]statEntry, error) {
	var (
		mu       sync.Mutex
		listings = map[string][]statEntry{}
		first    error
		wg       sync.WaitGroup
		slots    = make(chan struct{}, 8)
	)
	var list func(rel string)
	list = func(rel string) {
		defer wg.Done()
		slots <- struct{}{}
		entries, err := listDir(dir, rel, uid)
		<-slots
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			if first == nil {
				first = err
			}
			return
		}
		listings[rel] = entries
		for _, e := range entries {
			if kindOf(&e.st) == 'd' {
				wg.Add(1)
				go list(e.rel)
			}
		}
	}
	wg.Add(1)
	list("")
	wg.Wait()
	return listings, first
}

func listDir(dir, rel string, uid int) ([]statEntry, error) {
	f, err := os.Open(filepath.Join(dir, rel))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	entries := make([]statEntry, len(names))
	for i, name := range names {
		e := &entries[i]
		e.rel = path.Join(rel, name)
		if err := syscall.Lstat(filepath.Join(dir, e.rel), &e.st); err != nil {
			return nil, &fs.PathError{Op: "lstat", Path: e.rel, Err: err}
		}
		if err := checkEntry(e.rel, &e.st, uid); err != nil {
			return nil, err
		}
	}
	return entries, nil
}

// RemoveTree removes a tree Seal made read-only: os.RemoveAll cannot empty a 0555 folder, so
// every folder gets its owner's write bit back first.
func RemoveTree(dir string) error {
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(path, 0o700)
		}
		return nil
	})
	return os.RemoveAll(dir)
}
