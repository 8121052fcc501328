// Package appdir decides where the embedded app is extracted, before the frankenphp package's
// init extracts it. Go initialises packages in import-path order once their imports are done
// (Go spec, "Package initialization", since Go 1.21); this package imports only packages that
// frankenphp imports too and its path sorts first, so its init always runs before frankenphp's.
//
// Upstream extracts into $TMPDIR/frankenphp_<checksum>, one folder for every process of the
// binary, and every server removes it when it stops (frankenphp.go, Shutdown): another instance
// of the same binary then answers 404, and a tree extracted by root is not writable by a
// non-root user. Here instead:
//   - each user has a folder of its own: <cache>/frankenphp-<uid> (cache: FRANKENPHP_APP_CACHE,
//     else TMPDIR), mode 0700;
//   - the app is extracted into a private staging folder and renamed into place, so the folder
//     named after the checksum is always complete, and later starts reuse it;
//   - a server sees the app through a symlink of its own, which is all Shutdown removes;
//   - extractions of other checksums (older builds) unused for a week are removed.
package appdir

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// checksum of the embedded app, set by the linker (relink-local.sh): empty when none is embedded.
var checksum string

var (
	savedTmp, hadTmp = os.LookupEnv("TMPDIR")
	userDir          string // <cache>/frankenphp-<uid>; empty: upstream behaviour
	staging          string // this process's extraction folder, when it had to extract
)

func init() {
	if checksum == "" {
		return
	}
	cache := os.Getenv("FRANKENPHP_APP_CACHE")
	if cache == "" {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "frankenphp-"+strconv.Itoa(os.Getuid()))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return
	}
	extractInto := dir
	if _, err := os.Stat(filepath.Join(dir, "frankenphp_"+checksum)); err != nil {
		tmp, err := os.MkdirTemp(dir, ".extract-")
		if err != nil {
			return
		}
		staging, extractInto = tmp, tmp
	}
	userDir = dir
	_ = os.Setenv("TMPDIR", extractInto) // frankenphp extracts into os.TempDir()/frankenphp_<checksum>
}

// Settle runs first in main, after frankenphp extracted the app to `extracted`: it restores
// TMPDIR, moves a fresh extraction into place, points PHPRC at the embedded php.ini (unless the
// caller chose one) and returns the path the process should use for the app. A server gets a
// symlink of its own (removed by frankenphp's Shutdown instead of the shared tree).
func Settle(extracted string, server bool) string {
	if hadTmp {
		_ = os.Setenv("TMPDIR", savedTmp)
	} else {
		_ = os.Unsetenv("TMPDIR")
	}
	if userDir == "" || extracted == "" {
		return extracted
	}
	shared := filepath.Join(userDir, "frankenphp_"+checksum)
	if staging != "" {
		if err := os.Rename(extracted, shared); err != nil {
			if _, statErr := os.Stat(shared); statErr != nil {
				return extracted // cannot publish it; use this process's own copy
			}
			// another process published the same checksum first: use that one
		}
		_ = os.RemoveAll(staging)
	}
	now := time.Now()
	_ = os.Chtimes(shared, now, now) // "last used", for removeStale in other builds
	removeStale()
	setDefault("FRANKENPHP_APP_DIR", shared)
	if ini := filepath.Join(shared, ".frankenphp", "php.ini"); exists(ini) {
		setDefault("PHPRC", ini)
	}
	sessions := filepath.Join(userDir, "sessions")
	if os.MkdirAll(sessions, 0o700) == nil {
		setDefault("FRANKENPHP_SESSION_DIR", sessions)
	}
	if !server {
		return shared
	}
	link := filepath.Join(userDir, ".serve-"+instance()+"-"+strconv.Itoa(os.Getpid())+"-"+
		strconv.FormatInt(time.Now().UnixNano(), 36))
	if err := os.Symlink(shared, link); err != nil {
		return shared
	}
	return link
}

// unusedFor is how long an extraction of another checksum is kept after its last start.
const unusedFor = 7 * 24 * time.Hour

// instance names this host (a container's hostname is its ID): several containers may share
// the cache volume, and a process ID means something only on its own host.
func instance() string {
	name, err := os.Hostname()
	if err != nil || name == "" {
		return "host"
	}
	return strings.NewReplacer("-", "_", "/", "_").Replace(name)
}

// removeStale drops this host's links of servers that are gone, extractions that were
// interrupted, and extractions of other builds that no server uses and nothing started for a
// week.
func removeStale() {
	entries, err := os.ReadDir(userDir)
	if err != nil {
		return
	}
	inUse := map[string]bool{}
	mine := ".serve-" + instance() + "-"
	for _, entry := range entries {
		name := entry.Name()
		path := filepath.Join(userDir, name)
		if !strings.HasPrefix(name, ".serve-") {
			continue
		}
		if strings.HasPrefix(name, mine) {
			pid, err := strconv.Atoi(strings.SplitN(name[len(mine):], "-", 2)[0])
			if err == nil && syscall.Kill(pid, 0) == syscall.ESRCH {
				_ = os.Remove(path)
				continue
			}
		}
		if target, err := os.Readlink(path); err == nil {
			inUse[filepath.Base(target)] = true
		}
	}
	for _, entry := range entries {
		name := entry.Name()
		path := filepath.Join(userDir, name)
		info, err := entry.Info()
		if err != nil {
			continue
		}
		switch {
		case strings.HasPrefix(name, ".extract-") && path != staging:
			if time.Since(info.ModTime()) > time.Hour {
				_ = os.RemoveAll(path)
			}
		case strings.HasPrefix(name, "frankenphp_") && name != "frankenphp_"+checksum && !inUse[name]:
			if time.Since(info.ModTime()) > unusedFor {
				_ = os.RemoveAll(path)
			}
		}
	}
}

func setDefault(name, value string) {
	if _, ok := os.LookupEnv(name); !ok {
		_ = os.Setenv(name, value)
	}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
