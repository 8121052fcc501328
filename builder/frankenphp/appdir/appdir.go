// Package appdir makes the app appended to this binary (package payload) ready to serve, first
// thing in main, before Caddy or FrankenPHP look at frankenphp.EmbeddedAppPath. The base
// binary is linked with FrankenPHP's own app.tar empty, so upstream's init extracts nothing and
// leaves EmbeddedAppPath unset (frankenphp v1.12.7 embed.go:37-41); every upstream use of it
// comes later, at run time, so main may set it before caddycmd.Main (see main.go).
//
// Upstream would extract into $TMPDIR/frankenphp_<checksum>, shared by every process of the
// binary, and remove it whenever a server stops (frankenphp.go:382-385, Shutdown): another
// instance then answers 404, and a tree extracted by root is not writable by a non-root user.
// Here instead:
//   - each user has a folder of its own: <cache>/frankenphp-<uid> (cache: FRANKENPHP_APP_CACHE,
//     else os.TempDir()), mode 0700, refused when it is a symlink or someone else's;
//   - the app is extracted into a private staging folder, made read-only, stamped and renamed
//     into place, so a tree under its final name is always complete; later starts reuse it once
//     its stamp still matches (payload.Stamp), and extract it again otherwise;
//   - the paths the app writes to are symlinks into a data folder kept outside the tree
//     (.frankenphp/links, see links.go);
//   - a server sees the app through a symlink of its own, which is all Shutdown removes;
//   - trees of other builds unused for a week, and leftovers of interrupted runs, are removed.
//
// TMPDIR is never touched (the former init-time trick that steered upstream's extraction is
// gone with the linker-set checksum: the checksum now comes from the trailer).
package appdir

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"durango.invalid/frankenphp/payload"
)

// config is what Settle reads from the process, gathered so tests can choose each part.
type config struct {
	exe     string    // the file carrying the payload
	cache   string    // parent of the per-user folder
	dataDir string    // where the links point; "" = <userDir>/data
	uid     int       // owner of the per-user folder and of every entry of the tree
	server  bool      // `run` or `php-server`: give the process a symlink of its own
	log     io.Writer // one-line reports (extraction, re-extraction)
	workers int       // 0: payload.DefaultWorkers()
}

// Settle makes the embedded app ready and returns the path this process should use as the app
// ("" when the binary carries none: it then runs as plain FrankenPHP). It sets, unless the
// caller set them: FRANKENPHP_APP_DIR (the tree), PHPRC (the tree's .frankenphp/php.ini, when
// present), FRANKENPHP_SESSION_DIR (<userdir>/sessions) and FRANKENPHP_DATA_DIR. A server
// (`run`, `php-server`) gets a per-process symlink to the tree, removed by FrankenPHP's
// Shutdown instead of the tree. Errors are one line, for main to print before exiting.
func Settle(server bool) (string, error) {
	exe := "/proc/self/exe" // the running file itself, even if its path was replaced since
	if _, err := os.Stat(exe); err != nil {
		if exe, err = os.Executable(); err != nil {
			return "", fmt.Errorf("cannot find this binary's own file to read its app: %v", err)
		}
	}
	cache := os.Getenv("FRANKENPHP_APP_CACHE")
	if cache == "" {
		cache = os.TempDir()
	}
	return settle(config{exe: exe, cache: cache, dataDir: os.Getenv("FRANKENPHP_DATA_DIR"),
		uid: os.Getuid(), server: server, log: os.Stderr})
}

func settle(cfg config) (string, error) {
	p, err := payload.Open(cfg.exe)
	if errors.Is(err, payload.ErrNone) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	userDir, err := ensureUserDir(cfg.cache, cfg.uid)
	if err != nil {
		return "", err
	}
	dataDir := cfg.dataDir
	if dataDir == "" {
		dataDir = filepath.Join(userDir, "data")
	}
	if dataDir, err = filepath.Abs(dataDir); err != nil {
		return "", fmt.Errorf("cannot use FRANKENPHP_DATA_DIR: %v", err)
	}
	// The links inside the tree name the data folder, so the tree's name does too.
	dataSum := sha256.Sum256([]byte(dataDir))
	tree := filepath.Join(userDir, "app-"+p.Hex()[:32]+"-"+hex.EncodeToString(dataSum[:4]))
	if err := ready(p, cfg, userDir, tree, dataDir); err != nil {
		return "", err
	}
	links, err := readLinks(tree)
	if err != nil {
		return "", err
	}
	if err := ensureData(tree, dataDir, links); err != nil {
		return "", err
	}
	now := time.Now()
	_ = os.Chtimes(tree, now, now) // "last used", for removeStale in other builds
	removeStale(userDir, tree)

	setDefault("FRANKENPHP_APP_DIR", tree)
	setDefault("FRANKENPHP_DATA_DIR", dataDir)
	if ini := filepath.Join(tree, ".frankenphp", "php.ini"); exists(ini) {
		setDefault("PHPRC", ini)
	}
	sessions := filepath.Join(userDir, "sessions")
	if os.MkdirAll(sessions, 0o700) == nil {
		setDefault("FRANKENPHP_SESSION_DIR", sessions)
	}
	if !cfg.server {
		return tree, nil
	}
	link := filepath.Join(userDir, ".serve-"+instance()+"-"+strconv.Itoa(os.Getpid())+"-"+
		strconv.FormatInt(time.Now().UnixNano(), 36))
	if err := os.Symlink(tree, link); err != nil {
		return tree, nil
	}
	return link, nil
}

// ensureUserDir creates <cache>/frankenphp-<uid> (0700) or checks the one there: a symlink or
// a folder of another user could hand this process someone else's app.
func ensureUserDir(cache string, uid int) (string, error) {
	if err := os.MkdirAll(cache, 0o700); err != nil {
		return "", fmt.Errorf("cannot create the app cache %s: %v (set FRANKENPHP_APP_CACHE)", cache, err)
	}
	dir := filepath.Join(cache, "frankenphp-"+strconv.Itoa(uid))
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("cannot create %s: %v (set FRANKENPHP_APP_CACHE)", dir, err)
	}
	info, err := os.Lstat(dir)
	if err != nil {
		return "", fmt.Errorf("cannot use %s: %v", dir, err)
	}
	if info.Mode()&os.ModeSymlink != 0 {
		return "", fmt.Errorf("%s is a symlink; refusing to put the app there (remove it or set "+
			"FRANKENPHP_APP_CACHE)", dir)
	}
	st, ok := info.Sys().(*syscall.Stat_t)
	if !info.IsDir() || !ok {
		return "", fmt.Errorf("%s is not a folder; remove it or set FRANKENPHP_APP_CACHE", dir)
	}
	if int(st.Uid) != uid {
		return "", fmt.Errorf("%s belongs to uid %d, not to this user (%d); refusing to use it "+
			"(remove it or set FRANKENPHP_APP_CACHE)", dir, st.Uid, uid)
	}
	if info.Mode().Perm() != 0o700 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return "", fmt.Errorf("cannot make %s private: %v", dir, err)
		}
	}
	return dir, nil
}

var errMissing = errors.New("not extracted yet")

// stampWait is how long a tree without its stamp is taken for one being published by another
// process (it renames the tree, then its stamp) before it is judged broken.
var stampWait = 3 * time.Second

// ready leaves a checked tree at `tree`: the one there when it passes the check, else a fresh
// extraction (this process's, or a concurrent one's that was published first).
func ready(p *payload.Payload, cfg config, userDir, tree, dataDir string) error {
	for attempt := 0; ; attempt++ {
		why := check(tree, cfg.uid)
		if why == nil {
			return nil
		}
		if attempt == 2 {
			return fmt.Errorf("the app extracted in %s does not pass its check (%v); remove %s",
				tree, why, userDir)
		}
		if !errors.Is(why, errMissing) {
			fmt.Fprintf(cfg.log, "frankenphp: the app extracted in %s cannot be reused (%v); "+
				"extracting it again\n", tree, why)
			if _, err := discard(userDir, tree); err != nil {
				return err
			}
		}
		ours, err := extract(p, cfg, userDir, tree, dataDir)
		if err != nil {
			return err
		}
		if ours {
			return nil
		}
		// another process published the same tree first: check it and use it
	}
}

// check returns nil when the tree can be reused: it exists, its stamp was written for this
// very folder (same inode), and the tree still sums up to it.
func check(tree string, uid int) error {
	deadline := time.Now().Add(stampWait)
	for {
		info, err := os.Lstat(tree)
		if errors.Is(err, os.ErrNotExist) {
			return errMissing
		}
		if err != nil {
			return err
		}
		if !info.IsDir() {
			return errors.New("it is not a folder")
		}
		want, ino, ok := readStamp(tree)
		st, _ := info.Sys().(*syscall.Stat_t)
		if ok && st != nil && ino == st.Ino {
			sum, top, err := payload.Stamp(tree, uid)
			switch {
			case err != nil:
				return err
			case top == ino && sum != want:
				return errors.New("an entry was added, removed or changed since it was extracted")
			case top == ino:
				return nil
			} // replaced while being read: look again
		}
		if time.Now().After(deadline) {
			return errors.New("it has no stamp")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The stamp file beside the tree: the stamp, and the inode of the tree's top folder it was
// made for (a stamp left by an earlier tree of the same name is then never mistaken for this
// one's).
func stampPath(tree string) string { return tree + ".stamp" }

func readStamp(tree string) (string, uint64, bool) {
	data, err := os.ReadFile(stampPath(tree))
	if err != nil {
		return "", 0, false
	}
	var sum string
	var ino uint64
	if _, err := fmt.Sscanf(string(data), "durango-stamp-v1 ino=%d sha256=%s", &ino, &sum); err != nil {
		return "", 0, false
	}
	return sum, ino, true
}

// extract writes a fresh tree into a staging folder, adds the data links, seals and stamps it
// and publishes it under its final name. It reports false when another process published the
// same tree first (this process's copy is then dropped).
func extract(p *payload.Payload, cfg config, userDir, tree, dataDir string) (ours bool, err error) {
	staging, err := os.MkdirTemp(userDir, ".extract-")
	if err != nil {
		return false, fmt.Errorf("cannot extract the app into %s: %v", userDir, err)
	}
	if _, err := p.Extract(staging, payload.Options{Workers: cfg.workers, Progress: cfg.log, Into: tree}); err != nil {
		return false, err // Extract removed staging
	}
	stampTmp := staging + ".stamp"
	err = makeLinks(staging, dataDir) // its errors are user-facing lines already
	if err == nil {
		if err = seal(staging, stampTmp, cfg.uid); err != nil {
			err = fmt.Errorf("cannot make the extracted app ready in %s: %v", userDir, err)
		}
	}
	if err == nil {
		if err = os.Rename(staging, tree); err != nil && exists(tree) {
			err = nil
			ours = false // another process published it first: use that one
		} else if err == nil {
			ours = true
			if err = os.Rename(stampTmp, stampPath(tree)); err != nil {
				_, _ = discard(userDir, tree)
			}
		}
		if err != nil {
			err = fmt.Errorf("cannot publish the extracted app as %s: %v", tree, err)
		}
	}
	if !ours || err != nil {
		_ = payload.RemoveTree(staging)
		_ = os.Remove(stampTmp)
	}
	return ours, err
}

// seal makes the staging tree read-only and writes its stamp beside it.
func seal(staging, stampTmp string, uid int) error {
	if err := payload.Seal(staging); err != nil {
		return err
	}
	sum, ino, err := payload.Stamp(staging, uid)
	if err != nil {
		return err
	}
	return os.WriteFile(stampTmp, fmt.Appendf(nil, "durango-stamp-v1 ino=%d sha256=%s\n", ino, sum), 0o400)
}

// discard moves a tree aside as .bad-<random> (its name is free at once) and drops its stamp;
// removeStale deletes it once the new tree is ready: removing thousands of files first would
// only delay the start (and on ext4 mounted with `discard`, slowed the extraction that follows
// it fourfold).
func discard(userDir, tree string) (string, error) {
	aside := filepath.Join(userDir, ".bad-"+randomName())
	if err := os.Rename(tree, aside); err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("cannot move the unusable app %s aside: %v", tree, err)
	}
	_ = os.Remove(stampPath(tree))
	return aside, nil
}

func randomName() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// instance names this host (a container's hostname is its ID): several containers may share
// the cache volume, and a process ID means something only on its own host.
func instance() string {
	name, err := os.Hostname()
	if err != nil || name == "" {
		return "host"
	}
	return strings.NewReplacer("-", "_", "/", "_").Replace(name)
}

func setDefault(name, value string) {
	if _, ok := os.LookupEnv(name); !ok {
		_ = os.Setenv(name, value)
	}
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}
