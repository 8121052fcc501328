package appdir

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"durango.invalid/frankenphp/payload"
)

const (
	// unusedFor is how long a tree of another build is kept after its last start.
	unusedFor = 7 * 24 * time.Hour
	// abandonedAfter is when a staging folder is surely no running extraction's any more.
	abandonedAfter = time.Hour
)

// removeStale drops this host's links of servers that are gone, folders moved aside, staging
// folders of interrupted extractions, and trees of other builds that no server uses and
// nothing started for a week (with the writable frankenphp_<checksum> trees of the former
// scheme). Read-only trees get their write bits back first (payload.RemoveTree).
func removeStale(userDir, current string) {
	entries, err := os.ReadDir(userDir)
	if err != nil {
		return
	}
	inUse := map[string]bool{}
	mine := ".serve-" + instance() + "-"
	for _, entry := range entries {
		name := entry.Name()
		if !strings.HasPrefix(name, ".serve-") {
			continue
		}
		where := filepath.Join(userDir, name)
		if strings.HasPrefix(name, mine) {
			pid, err := strconv.Atoi(strings.SplitN(name[len(mine):], "-", 2)[0])
			if err == nil && syscall.Kill(pid, 0) == syscall.ESRCH {
				_ = os.Remove(where)
				continue
			}
		}
		if target, err := os.Readlink(where); err == nil {
			inUse[filepath.Base(target)] = true
		}
	}
	for _, entry := range entries {
		name := entry.Name()
		where := filepath.Join(userDir, name)
		info, err := entry.Info()
		if err != nil {
			continue
		}
		age := time.Since(info.ModTime())
		switch {
		case strings.HasPrefix(name, ".bad-"):
			_ = payload.RemoveTree(where)
		case strings.HasPrefix(name, ".extract-") && age > abandonedAfter:
			_ = payload.RemoveTree(where)
		case strings.HasSuffix(name, ".stamp"):
			if tree := strings.TrimSuffix(name, ".stamp"); strings.HasPrefix(tree, "app-") &&
				!exists(filepath.Join(userDir, tree)) && age > abandonedAfter {
				_ = os.Remove(where)
			}
		case strings.HasPrefix(name, "app-") && where != current && !inUse[name] && age > unusedFor:
			if aside, err := discard(userDir, where); err == nil {
				_ = payload.RemoveTree(aside)
			}
		case strings.HasPrefix(name, "frankenphp_") && !inUse[name] && age > unusedFor:
			_ = os.RemoveAll(where)
		}
	}
}
