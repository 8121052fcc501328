package appdir

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"durango.invalid/frankenphp/payload"
)

const vector = "../payload/testdata/app.bin"

func init() { stampWait = 200 * time.Millisecond }

type run struct {
	cfg config
	log *bytes.Buffer
}

func newRun(t *testing.T, exe, cache string) *run {
	t.Helper()
	for _, name := range []string{"FRANKENPHP_APP_DIR", "PHPRC", "FRANKENPHP_SESSION_DIR", "FRANKENPHP_DATA_DIR"} {
		t.Setenv(name, "")
		_ = os.Unsetenv(name)
	}
	t.Cleanup(func() { _ = payload.RemoveTree(cache) })
	log := &bytes.Buffer{}
	return &run{config{exe: exe, cache: cache, uid: os.Getuid(), log: log}, log}
}

func (r *run) settle(t *testing.T) string {
	t.Helper()
	r.log.Reset()
	app, err := settle(r.cfg)
	if err != nil {
		t.Fatal(err)
	}
	return app
}

func (r *run) userDir() string {
	return filepath.Join(r.cfg.cache, "frankenphp-"+strconv.Itoa(r.cfg.uid))
}

// appWith writes a binary whose payload is a tar of the given files (name -> content).
func appWith(t *testing.T, files map[string]string) string {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, content := range files {
		_ = tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(content))})
		_, _ = tw.Write([]byte(content))
	}
	_ = tw.Close()
	var trailer [payload.TrailerSize]byte
	copy(trailer[:], payload.Magic)
	binary.LittleEndian.PutUint64(trailer[16:], uint64(buf.Len()))
	sum := sha256.Sum256(buf.Bytes())
	copy(trailer[32:], sum[:])
	exe := filepath.Join(t.TempDir(), "app.bin")
	_ = os.WriteFile(exe, append(append([]byte("base"), buf.Bytes()...), trailer[:]...), 0o755)
	return exe
}

func TestPlainBaseBinaryRunsWithoutApp(t *testing.T) {
	exe := filepath.Join(t.TempDir(), "base")
	_ = os.WriteFile(exe, bytes.Repeat([]byte("\x7fELF"), 100), 0o755)
	r := newRun(t, exe, t.TempDir())
	if app := r.settle(t); app != "" || r.log.Len() != 0 {
		t.Fatalf("app %q, log %q", app, r.log)
	}
}

func TestExtractsOnceThenReuses(t *testing.T) {
	r := newRun(t, vector, t.TempDir())
	tree := r.settle(t)
	if !strings.Contains(r.log.String(), "extracting the app") || strings.Count(r.log.String(), "\n") != 2 {
		t.Fatalf("first start said %q", r.log)
	}
	p, _ := payload.Open(vector)
	if filepath.Dir(tree) != r.userDir() || !strings.HasPrefix(filepath.Base(tree), "app-"+p.Hex()[:32]+"-") {
		t.Fatalf("tree %s", tree)
	}
	if info, _ := os.Stat(tree); info.Mode().Perm() != 0o555 {
		t.Fatalf("tree mode %v", info.Mode())
	}
	if os.Getenv("FRANKENPHP_APP_DIR") != tree || os.Getenv("PHPRC") != filepath.Join(tree, ".frankenphp", "php.ini") ||
		os.Getenv("FRANKENPHP_SESSION_DIR") != filepath.Join(r.userDir(), "sessions") {
		t.Fatal("environment defaults not set")
	}
	if again := r.settle(t); again != tree || r.log.Len() != 0 {
		t.Fatalf("second start: %s, said %q", again, r.log)
	}
	entries, _ := os.ReadDir(r.userDir())
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".extract-") || strings.HasPrefix(e.Name(), ".bad-") {
			t.Fatalf("left behind: %s", e.Name())
		}
	}
}

func TestServerGetsALinkOfItsOwn(t *testing.T) {
	r := newRun(t, vector, t.TempDir())
	r.cfg.server = true
	link := r.settle(t)
	target, err := os.Readlink(link)
	if err != nil || !strings.HasPrefix(filepath.Base(link), ".serve-") {
		t.Fatalf("link %s: %v", link, err)
	}
	_ = os.RemoveAll(link) // what FrankenPHP's Shutdown does with EmbeddedAppPath
	if _, err := os.Stat(filepath.Join(target, "webroot", "index.php")); err != nil {
		t.Fatal("Shutdown's RemoveAll reached the tree")
	}
}

func TestDroppedFileMakesItExtractAgain(t *testing.T) {
	r := newRun(t, vector, t.TempDir())
	tree := r.settle(t)
	webroot := filepath.Join(tree, "webroot")
	_ = os.Chmod(webroot, 0o755)
	_ = os.WriteFile(filepath.Join(webroot, "shell.php"), []byte("<?php system($_GET['c']);"), 0o444)
	_ = os.Chmod(webroot, 0o555)
	if again := r.settle(t); again != tree {
		t.Fatal(again)
	}
	if !strings.Contains(r.log.String(), "cannot be reused (an entry was added, removed or changed") ||
		!strings.Contains(r.log.String(), "extracting the app") {
		t.Fatalf("said %q", r.log)
	}
	if _, err := os.Lstat(filepath.Join(webroot, "shell.php")); err == nil {
		t.Fatal("the dropped file survived")
	}
	if bad, _ := filepath.Glob(filepath.Join(r.userDir(), ".bad-*")); len(bad) != 0 {
		t.Fatalf("the unusable tree was not removed: %v", bad)
	}
	if r.settle(t); r.log.Len() != 0 {
		t.Fatalf("the fresh tree was not reused: %q", r.log)
	}
}

func TestWritableOrMissingStampMakesItExtractAgain(t *testing.T) {
	r := newRun(t, vector, t.TempDir())
	tree := r.settle(t)
	_ = os.Chmod(filepath.Join(tree, "config", "app.php"), 0o644)
	r.settle(t)
	if !strings.Contains(r.log.String(), "config/app.php is writable") {
		t.Fatalf("said %q", r.log)
	}
	_ = os.Remove(stampPath(tree))
	r.settle(t)
	if !strings.Contains(r.log.String(), "it has no stamp") {
		t.Fatalf("said %q", r.log)
	}
}

func TestForeignOwnersAreRefused(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to chown")
	}
	r := newRun(t, vector, t.TempDir())
	tree := r.settle(t)
	_ = os.Lchown(filepath.Join(tree, "bin", "cake"), 4242, 4242)
	r.settle(t)
	if !strings.Contains(r.log.String(), "bin/cake belongs to uid 4242") {
		t.Fatalf("foreign entry: said %q", r.log)
	}
	_ = os.Chown(r.userDir(), 4242, 4242)
	if _, err := settle(r.cfg); err == nil || !strings.Contains(err.Error(), "belongs to uid 4242, not to this user") {
		t.Fatalf("foreign folder: %v", err)
	}
	_ = os.Chown(r.userDir(), 0, 0)
	other := newRun(t, vector, t.TempDir())
	_ = os.Symlink(r.userDir(), other.userDir())
	if _, err := settle(other.cfg); err == nil || !strings.Contains(err.Error(), "is a symlink") {
		t.Fatalf("symlinked folder: %v", err)
	}
}

func TestLinksAndSeeds(t *testing.T) {
	r := newRun(t, vector, t.TempDir())
	data := filepath.Join(t.TempDir(), "data")
	r.cfg.dataDir = data
	tree := r.settle(t)
	for path, target := range map[string]string{"tmp": "tmp", "logs": "logs", "webroot/files": "files",
		"config/app_local.php": "config/app_local.php"} {
		if got, _ := os.Readlink(filepath.Join(tree, path)); got != filepath.Join(data, target) {
			t.Fatalf("%s links to %q", path, got)
		}
	}
	if _, err := os.Stat(filepath.Join(tree, ".frankenphp", "seed", "tmp", "cache", "models", ".keep")); err != nil {
		t.Fatal("the shipped tmp/ is not in the seed")
	}
	for _, dir := range []string{"tmp/cache/models", "tmp/sessions", "logs", "files"} {
		if info, err := os.Stat(filepath.Join(data, dir)); err != nil || !info.IsDir() {
			t.Fatalf("data %s: %v", dir, err)
		}
	}
	local := filepath.Join(data, "config", "app_local.php")
	if content, _ := os.ReadFile(local); string(content) != "<?php return ['debug' => false];\n" {
		t.Fatalf("app_local.php seeded as %q", content)
	}
	if _, err := os.Lstat(filepath.Join(data, "config", "extra.php")); err == nil {
		t.Fatal("a file link without seed made a file")
	}
	// the app writes its data; the next start keeps it, and remakes only what is gone
	_ = os.WriteFile(local, []byte("<?php return ['debug' => true];\n"), 0o640)
	_ = os.WriteFile(filepath.Join(data, "tmp", "cache", "mine"), []byte("x"), 0o640)
	_ = os.RemoveAll(filepath.Join(data, "logs"))
	r.settle(t)
	if content, _ := os.ReadFile(local); !strings.Contains(string(content), "true") {
		t.Fatal("a later start overwrote the app's data")
	}
	if _, err := os.Stat(filepath.Join(data, "tmp", "cache", "mine")); err != nil {
		t.Fatal("a later start replaced tmp/")
	}
	if info, err := os.Stat(filepath.Join(data, "logs")); err != nil || info.Mode().Perm() != 0o750 {
		t.Fatalf("logs/ not remade: %v", err)
	}
	if os.Getenv("FRANKENPHP_DATA_DIR") != data {
		t.Fatal("FRANKENPHP_DATA_DIR not set")
	}
}

func TestBadLinksFileIsRefused(t *testing.T) {
	for _, links := range []string{"../up\tup\tdir\n", "a\t/abs\tdir\n", "a\ta\tsocket\n", "a\ta\n",
		"a\tx\tdir\na/b\ty\tdir\n", ".frankenphp/php.ini\tini\tfile\n"} {
		r := newRun(t, appWith(t, map[string]string{".frankenphp/links": links, "index.php": "<?php"}), t.TempDir())
		_, err := settle(r.cfg)
		if err == nil || !strings.Contains(err.Error(), ".frankenphp/links is invalid") || strings.Contains(err.Error(), "\n") {
			t.Fatalf("%q: %v", links, err)
		}
		entries, _ := os.ReadDir(r.userDir())
		for _, e := range entries {
			if e.Name() != "data" {
				t.Fatalf("%q: left %s behind", links, e.Name())
			}
		}
	}
}

func TestConcurrentStartsEndWithOneTree(t *testing.T) {
	r := newRun(t, vector, t.TempDir())
	var wg sync.WaitGroup
	apps := make([]string, 4)
	errs := make([]error, 4)
	logs := make([]bytes.Buffer, 4)
	start := make(chan struct{})
	for i := range apps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cfg := r.cfg
			cfg.log = &logs[i]
			<-start
			apps[i], errs[i] = settle(cfg)
		}()
	}
	close(start)
	wg.Wait()
	extracted := 0
	for i := range logs {
		extracted += strings.Count(logs[i].String(), "extracting the app")
	}
	t.Logf("%d of %d starts extracted", extracted, len(apps))
	for i := range apps {
		if errs[i] != nil || apps[i] != apps[0] {
			t.Fatalf("start %d: %s, %v", i, apps[i], errs[i])
		}
	}
	entries, _ := os.ReadDir(r.userDir())
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	want := []string{filepath.Base(apps[0]), filepath.Base(apps[0]) + ".stamp", "data", "sessions"}
	if strings.Join(names, " ") != strings.Join(want, " ") {
		t.Fatalf("folder holds %v", names)
	}
	if r.settle(t); r.log.Len() != 0 {
		t.Fatalf("the published tree was not reused: %q", r.log)
	}
}

func TestStaleTreesAreRemoved(t *testing.T) {
	r := newRun(t, vector, t.TempDir())
	tree := r.settle(t)
	user := r.userDir()
	old := time.Now().Add(-8 * 24 * time.Hour)
	mkOld := func(name string) string {
		dir := filepath.Join(user, name)
		_ = os.MkdirAll(filepath.Join(dir, "sub"), 0o700)
		_ = os.WriteFile(filepath.Join(dir, "sub", "f"), nil, 0o444)
		_ = os.Chmod(filepath.Join(dir, "sub"), 0o555)
		_ = os.Chmod(dir, 0o555)
		_ = os.Chtimes(dir, old, old)
		return dir
	}
	unused := mkOld("app-unused")
	inUse := mkOld("app-inuse")
	_ = os.Symlink(inUse, filepath.Join(user, ".serve-elsewhere-1-x"))
	bad := mkOld(".bad-x")
	staging := mkOld(".extract-x")
	r.settle(t)
	for _, gone := range []string{unused, bad, staging} {
		if _, err := os.Lstat(gone); err == nil {
			t.Fatalf("%s was kept", gone)
		}
	}
	for _, kept := range []string{inUse, tree} {
		if _, err := os.Lstat(kept); err != nil {
			t.Fatalf("%s was removed", kept)
		}
	}
}
