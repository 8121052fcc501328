package payload

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Options tune an extraction.
type Options struct {
	Workers  int       // files written in parallel; 0: min(8, 2×GOMAXPROCS)
	Progress io.Writer // hears one start line and one end line; nil: silent
	Into     string    // the folder named in the start line (where the tree will be published)
}

// Stats tell what an extraction wrote.
type Stats struct {
	Files, Dirs, Symlinks, HardLinks int
	Bytes                            int64
	Elapsed                          time.Duration
}

// DefaultWorkers is min(8, 2×GOMAXPROCS): writing small files waits on the file system more
// than on the CPU, and more workers than that only contend for the same folders.
func DefaultWorkers() int { return min(8, 2*runtime.GOMAXPROCS(0)) }

type fileJob struct {
	name      string
	off, size int64 // data range, relative to the payload
	mode      fs.FileMode
	mtime     time.Time
}

// plan is the payload's tar, read once: what to create, and where each file's data lies.
type plan struct {
	dirs      map[string]time.Time // every folder to create (zero time: implied by a path)
	symlinks  [][2]string          // name, target
	files     []fileJob
	hardLinks [][2]string // name, earlier file
	bytes     int64
}

// Extract writes the payload's tree into dest, an existing empty folder. Tar headers are read
// once through a section of the file; files are then written by a pool of workers while
// another goroutine hashes the whole payload in order. A wrong sha256, an unsafe entry or any
// write error removes dest and returns one line. Files come out without write bits (their
// execute bits kept); folders stay 0700 until Seal.
func (p *Payload) Extract(dest string, opt Options) (Stats, error) {
	start := time.Now()
	stats, err := p.extract(dest, opt)
	if err != nil {
		_ = RemoveTree(dest)
		return Stats{}, err
	}
	stats.Elapsed = time.Since(start)
	if opt.Progress != nil {
		fmt.Fprintf(opt.Progress, "frankenphp: app extracted in %.2fs\n", stats.Elapsed.Seconds())
	}
	return stats, nil
}

func (p *Payload) extract(dest string, opt Options) (Stats, error) {
	f, err := os.Open(p.Path)
	if err != nil {
		return Stats{}, fmt.Errorf("cannot read this binary's app: %v", err)
	}
	defer f.Close()
	var stop atomic.Bool // set when the hash is wrong: the workers stop early
	hashed := make(chan error, 1)
	go func() {
		err := p.verify(f)
		if err != nil {
			stop.Store(true)
		}
		hashed <- err
	}()
	// A damaged payload explains any other failure (an unreadable tar, a strange entry): its
	// error wins whenever both happen.
	fail := func(err error) (Stats, error) {
		stop.Store(true)
		if hashErr := <-hashed; hashErr != nil {
			return Stats{}, hashErr
		}
		return Stats{}, err
	}
	pl, err := scan(io.NewSectionReader(f, p.Offset, p.Size))
	if err != nil {
		return fail(err)
	}
	if opt.Progress != nil {
		into := opt.Into
		if into == "" {
			into = dest
		}
		fmt.Fprintf(opt.Progress, "frankenphp: extracting the app (%s, %d files) into %s\n",
			size(p.Size), len(pl.files), into)
	}
	stats, err := pl.apply(dest, p, opt.Workers, &stop)
	if err != nil {
		return fail(err)
	}
	if err := <-hashed; err != nil {
		return Stats{}, err
	}
	return stats, nil
}

func size(n int64) string {
	if n < 1e6 {
		return fmt.Sprintf("%.1f kB", float64(n)/1e3)
	}
	return fmt.Sprintf("%.1f MB", float64(n)/1e6)
}

// verify hashes the payload range in order and compares it with the trailer.
func (p *Payload) verify(f *os.File) error {
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for off := int64(0); off < p.Size; {
		n, err := f.ReadAt(buf[:min(int64(len(buf)), p.Size-off)], p.Offset+off)
		h.Write(buf[:n])
		off += int64(n)
		if err != nil && !(errors.Is(err, io.EOF) && off == p.Size) {
			return fmt.Errorf("cannot read this binary's app: %v", err)
		}
	}
	if sum := h.Sum(nil); !bytes.Equal(sum, p.Sum[:]) {
		return fmt.Errorf("the embedded app is damaged: sha256 %s expected %s; copy the binary "+
			"again or rebuild it", hex.EncodeToString(sum), p.Hex())
	}
	return nil
}

// scan reads every tar header once and checks each entry. The data offset of a file is the
// section's position right after Next: archive/tar reads headers with io.ReadFull of whole
// blocks and hands out file data from that same reader, so it never reads ahead.
func scan(sr *io.SectionReader) (*plan, error) {
	pl := &plan{dirs: map[string]time.Time{}}
	kinds := map[string]byte{} // 'd' folder, 'D' implied folder, 'f' file, 'l' symlink, 'h' hard link
	tr := tar.NewReader(sr)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("the embedded app is not a readable tar: %v", err)
		}
		if hdr.Typeflag == tar.TypeXGlobalHeader {
			continue
		}
		name, err := entryName(hdr.Name)
		if err != nil {
			return nil, err
		}
		if name == "" && hdr.Typeflag == tar.TypeDir {
			continue // "./": the top folder itself
		}
		if name == "" {
			return nil, fmt.Errorf("the embedded app has an entry named %q; rebuild it", hdr.Name)
		}
		kind, err := pl.add(hdr, name, kinds, sr)
		if err != nil {
			return nil, err
		}
		// A folder may be listed again (the app's part and the dependencies' part of the payload
		// both hold .frankenphp/); anything else twice is a broken payload.
		if known, seen := kinds[name]; seen && !((known == 'D' || known == 'd') && kind == 'd') {
			return nil, fmt.Errorf("the embedded app lists %q twice (or as a file and a folder); "+
				"rebuild it", name)
		}
		kinds[name] = kind
		for dir := path.Dir(name); dir != "."; dir = path.Dir(dir) {
			switch kinds[dir] {
			case 0:
				kinds[dir] = 'D'
				if _, ok := pl.dirs[dir]; !ok {
					pl.dirs[dir] = time.Time{}
				}
			case 'd', 'D':
			default:
				return nil, fmt.Errorf("the embedded app's entry %q lies below %q, which is not a "+
					"folder; rebuild it", name, dir)
			}
		}
	}
	return pl, nil
}

// add records one entry and returns its kind letter.
func (pl *plan) add(hdr *tar.Header, name string, kinds map[string]byte, sr *io.SectionReader) (byte, error) {
	switch hdr.Typeflag {
	case tar.TypeDir:
		pl.dirs[name] = hdr.ModTime
		return 'd', nil
	case tar.TypeReg:
		for key := range hdr.PAXRecords {
			if strings.HasPrefix(key, "GNU.sparse.") {
				return 0, fmt.Errorf("the embedded app's %q is a sparse file, which it may not "+
					"hold; rebuild it", name)
			}
		}
		off, _ := sr.Seek(0, io.SeekCurrent)
		if hdr.Size < 0 || off+hdr.Size > sr.Size() {
			return 0, fmt.Errorf("the embedded app's %q runs past its end; rebuild it", name)
		}
		pl.files = append(pl.files, fileJob{name, off, hdr.Size, fs.FileMode(hdr.Mode).Perm(), hdr.ModTime})
		pl.bytes += hdr.Size
		return 'f', nil
	case tar.TypeSymlink:
		if hdr.Linkname == "" || strings.ContainsRune(hdr.Linkname, 0) {
			return 0, fmt.Errorf("the embedded app's symlink %q has no usable target; rebuild it", name)
		}
		pl.symlinks = append(pl.symlinks, [2]string{name, hdr.Linkname})
		return 'l', nil
	case tar.TypeLink:
		target, err := entryName(hdr.Linkname)
		if err != nil || target == "" || kinds[target] != 'f' {
			return 0, fmt.Errorf("the embedded app's hard link %q points outside the app or at "+
				"no earlier file (%q); rebuild it", name, hdr.Linkname)
		}
		pl.hardLinks = append(pl.hardLinks, [2]string{name, target})
		return 'h', nil
	default:
		return 0, fmt.Errorf("the embedded app's %q is of tar type %q; an app may hold only "+
			"files, folders and symlinks: rebuild it", name, hdr.Typeflag)
	}
}

// entryName is a tar name as a clean app-relative path ("" for the top folder itself), or an
// error for an absolute name or one with a ".." component.
func entryName(raw string) (string, error) {
	bad := func(why string) (string, error) {
		return "", fmt.Errorf("the embedded app has an unsafe entry %q (%s); rebuild it", raw, why)
	}
	if strings.ContainsRune(raw, 0) {
		return bad("a NUL byte")
	}
	if strings.HasPrefix(raw, "/") {
		return bad("an absolute name")
	}
	for _, part := range strings.Split(raw, "/") {
		if part == ".." {
			return bad("a .. component")
		}
	}
	name := path.Clean(raw)
	if name == "." {
		return "", nil
	}
	if !filepath.IsLocal(name) {
		return bad("not a local name")
	}
	return name, nil
}

// apply creates folders and symlinks in order, then the files with a pool of workers, then
// hard links and the folders' mtimes.
func (pl *plan) apply(dest string, p *Payload, workers int, stop *atomic.Bool) (Stats, error) {
	stats := Stats{Dirs: len(pl.dirs), Symlinks: len(pl.symlinks), Files: len(pl.files),
		HardLinks: len(pl.hardLinks), Bytes: pl.bytes}
	dirs := make([]string, 0, len(pl.dirs))
	for dir := range pl.dirs {
		dirs = append(dirs, dir)
	}
	sort.Strings(dirs) // a parent is a prefix of its children: it sorts first
	for _, dir := range dirs {
		if err := os.Mkdir(filepath.Join(dest, dir), 0o700); err != nil {
			return stats, fmt.Errorf("cannot extract the app: %v", err)
		}
	}
	for _, link := range pl.symlinks {
		if err := os.Symlink(link[1], filepath.Join(dest, link[0])); err != nil {
			return stats, fmt.Errorf("cannot extract the app: %v", err)
		}
	}
	if err := pl.writeFiles(dest, p, workers, stop); err != nil {
		return stats, err
	}
	for _, link := range pl.hardLinks {
		if err := os.Link(filepath.Join(dest, link[1]), filepath.Join(dest, link[0])); err != nil {
			return stats, fmt.Errorf("cannot extract the app: %v", err)
		}
	}
	for dir, mtime := range pl.dirs {
		if !mtime.IsZero() {
			_ = os.Chtimes(filepath.Join(dest, dir), mtime, mtime)
		}
	}
	return stats, nil
}

var errStopped = errors.New("extraction stopped")

// writeFiles hands the files to the workers. Each worker reads the binary through a descriptor
// of its own, so a file's data goes from a seek and io.CopyN into os.File.ReadFrom, which on
// Linux copies in the kernel (copy_file_range) without passing through this process.
func (pl *plan) writeFiles(dest string, p *Payload, workers int, stop *atomic.Bool) error {
	if workers <= 0 {
		workers = DefaultWorkers()
	}
	workers = max(1, min(workers, len(pl.files)))
	jobs := make(chan fileJob)
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	failed := func(err error) {
		once.Do(func() { first = err })
		stop.Store(true)
	}
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			src, err := os.Open(p.Path)
			if err != nil {
				failed(fmt.Errorf("cannot read this binary's app: %v", err))
			}
			if src != nil {
				defer src.Close()
			}
			for job := range jobs {
				if stop.Load() {
					continue
				}
				if err := writeFile(dest, src, p.Offset, job); err != nil {
					failed(err)
				}
			}
		}()
	}
	for _, job := range pl.files {
		if stop.Load() {
			break
		}
		jobs <- job
	}
	close(jobs)
	wg.Wait()
	if first == nil && stop.Load() {
		return errStopped // the hash was wrong: the caller reports that
	}
	return first
}

func writeFile(dest string, src *os.File, base int64, job fileJob) error {
	where := filepath.Join(dest, job.name)
	out, err := os.OpenFile(where, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("cannot extract the app: %v", err)
	}
	_, err = src.Seek(base+job.off, io.SeekStart)
	if err == nil {
		_, err = io.CopyN(out, src, job.size)
	}
	if err == nil {
		err = out.Chmod(job.mode & 0o555) // read-only from the start; execute bits kept
	}
	if closeErr := out.Close(); err == nil {
		err = closeErr
	}
	if err == nil && !job.mtime.IsZero() {
		err = os.Chtimes(where, job.mtime, job.mtime)
	}
	if err != nil {
		return fmt.Errorf("cannot extract the app's %s: %v", job.name, err)
	}
	return nil
}
