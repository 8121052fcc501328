package appdir

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// The tree is read-only, yet an app writes: caches, logs, uploads, a local config. The app's
// .frankenphp/links names those paths, one a line:
//
//	<app-relative path>\t<data-relative target>\t<dir|file>
//
// ('#' starts a comment line). At extraction each path becomes a symlink to <data dir>/<target>
// and what the app shipped there moves to .frankenphp/seed/<path>. On every start a target that
// does not exist yet is made: a dir from its seed (copied) or empty, a file from its seed or not
// at all (only its folder). An existing target is never touched: it is the app's data.
const linksFile = ".frankenphp/links"

type link struct {
	path, target string
	dir          bool
}

func linksError(line int, format string, args ...any) error {
	return fmt.Errorf("the app's %s is invalid: line %d: %s; fix it and rebuild",
		linksFile, line, fmt.Sprintf(format, args...))
}

// parseLinks reads .frankenphp/links and refuses anything but clean relative paths that do not
// overlap: a path inside another link would be written through that link's symlink.
func parseLinks(data []byte) ([]link, error) {
	var links []link
	for i, raw := range strings.Split(string(data), "\n") {
		line := strings.TrimSuffix(raw, "\r")
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Split(line, "\t")
		if len(fields) != 3 {
			return nil, linksError(i+1, "expected <path> TAB <target> TAB <dir|file>, got %q", line)
		}
		l := link{path: fields[0], target: fields[1], dir: fields[2] == "dir"}
		if fields[2] != "dir" && fields[2] != "file" {
			return nil, linksError(i+1, "kind %q is neither dir nor file", fields[2])
		}
		for _, p := range []string{l.path, l.target} {
			if !cleanRelative(p) {
				return nil, linksError(i+1, "%q is not a clean relative path without ..", p)
			}
		}
		if l.path == ".frankenphp" || strings.HasPrefix(l.path, ".frankenphp/") {
			return nil, linksError(i+1, "%q is inside .frankenphp, which stays read-only", l.path)
		}
		for _, other := range links {
			if overlaps(l.path, other.path) {
				return nil, linksError(i+1, "path %q overlaps %q", l.path, other.path)
			}
			if overlaps(l.target, other.target) {
				return nil, linksError(i+1, "target %q overlaps %q", l.target, other.target)
			}
		}
		links = append(links, l)
	}
	return links, nil
}

func cleanRelative(p string) bool {
	if p == "" || path.IsAbs(p) || path.Clean(p) != p || p == "." {
		return false
	}
	for _, part := range strings.Split(p, "/") {
		if part == ".." {
			return false
		}
	}
	return true
}

// overlaps: one path is the other or lies inside it.
func overlaps(a, b string) bool {
	return a == b || strings.HasPrefix(a, b+"/") || strings.HasPrefix(b, a+"/")
}

func readLinks(tree string) ([]link, error) {
	data, err := os.ReadFile(filepath.Join(tree, linksFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cannot read the app's %s: %v", linksFile, err)
	}
	return parseLinks(data)
}

// makeLinks turns each link's path in a fresh (still writable) staging tree into a symlink to
// its data target, moving what the app shipped there to .frankenphp/seed/<path>.
func makeLinks(staging, dataDir string) error {
	links, err := readLinks(staging)
	if err != nil || len(links) == 0 {
		return err
	}
	for _, l := range links {
		if err := makeLink(staging, dataDir, l); err != nil {
			return err
		}
	}
	return nil
}

func makeLink(staging, dataDir string, l link) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("the app's %s cannot be applied: %s; fix it and rebuild", linksFile,
			fmt.Sprintf(format, args...))
	}
	// every folder on the way must be a real folder of the app, not one of its symlinks
	for dir := path.Dir(l.path); dir != "."; dir = path.Dir(dir) {
		if info, err := os.Lstat(filepath.Join(staging, dir)); err == nil && !info.IsDir() {
			return bad("%s lies below %s, which is not a folder", l.path, dir)
		}
	}
	where := filepath.Join(staging, l.path)
	info, err := os.Lstat(where)
	switch {
	case err == nil && info.IsDir() != l.dir, err == nil && !info.IsDir() && !info.Mode().IsRegular():
		return bad("%s is a %s in the app, not a %s", l.path, kindOf(info), kindName(l.dir))
	case err == nil:
		seed := filepath.Join(staging, ".frankenphp", "seed", l.path)
		if err := os.MkdirAll(filepath.Dir(seed), 0o700); err != nil {
			return err
		}
		if err := os.Rename(where, seed); err != nil {
			return err
		}
	case !errors.Is(err, os.ErrNotExist):
		return err
	}
	if err := os.MkdirAll(filepath.Dir(where), 0o700); err != nil {
		return err
	}
	return os.Symlink(filepath.Join(dataDir, l.target), where)
}

func kindName(dir bool) string {
	if dir {
		return "dir"
	}
	return "file"
}

func kindOf(info fs.FileInfo) string {
	switch {
	case info.IsDir():
		return "dir"
	case info.Mode().IsRegular():
		return "file"
	case info.Mode()&fs.ModeSymlink != 0:
		return "symlink"
	}
	return "special file"
}

// ensureData makes every link's target that does not exist yet: one Lstat per link when they
// all do. A seed is copied under a temporary name and then renamed (a dir) or hard-linked (a
// file, which never replaces one made meanwhile), so a target is never seen half-made.
func ensureData(tree, dataDir string, links []link) error {
	for _, l := range links {
		target := filepath.Join(dataDir, l.target)
		if _, err := os.Lstat(target); err == nil {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(target), 0o750); err != nil {
			return fmt.Errorf("cannot create the app's data folder %s: %v", filepath.Dir(target), err)
		}
		seed := filepath.Join(tree, ".frankenphp", "seed", l.path)
		_, seedErr := os.Lstat(seed)
		var err error
		switch {
		case seedErr == nil:
			err = copySeed(seed, target, l.dir)
		case l.dir:
			err = os.Mkdir(target, 0o750)
			if errors.Is(err, os.ErrExist) {
				err = nil
			}
		}
		if err != nil {
			return fmt.Errorf("cannot create the app's data %s: %v", target, err)
		}
	}
	return nil
}

func copySeed(seed, target string, dir bool) error {
	tmp := filepath.Join(filepath.Dir(target), ".seed-"+filepath.Base(target)+"-"+randomName())
	defer os.RemoveAll(tmp)
	if !dir {
		if err := copyFile(seed, tmp); err != nil {
			return err
		}
		if err := os.Link(tmp, target); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
		return nil
	}
	err := filepath.WalkDir(seed, func(from string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(seed, from)
		to := filepath.Join(tmp, rel)
		switch {
		case d.IsDir():
			return os.Mkdir(to, 0o750)
		case d.Type()&fs.ModeSymlink != 0:
			dest, err := os.Readlink(from)
			if err != nil {
				return err
			}
			return os.Symlink(dest, to)
		case d.Type().IsRegular():
			return copyFile(from, to)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, target); err != nil && !exists(target) {
		return err // (a target made meanwhile by another process is kept)
	}
	return nil
}

// copyFile copies a seed file as data: writable by its owner, readable by the group,
// executable when the seed is.
func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	info, err := in.Stat()
	if err != nil {
		return err
	}
	mode := os.FileMode(0o640)
	if info.Mode()&0o100 != 0 {
		mode = 0o750
	}
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if closeErr := out.Close(); err == nil {
		err = closeErr
	}
	return err
}
