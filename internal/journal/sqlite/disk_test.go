package sqlite_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"unsafe"

	"modernc.org/libc"
	sqlite3 "modernc.org/sqlite/lib"
)

// This test binary's default SQLite VFS is the "unix" one with every file's writes and syncs
// seen on their way: counted (what the benchmarks report as fsyncs and writes per operation),
// and, for files under a directory a test watches (watchPowerLoss), kept as the image a power
// loss would leave on disk: each write applies to it only once the file was synced after it.
//
// The shim copies the unix VFS and the io_methods of the files it opens, replacing xOpen, and
// xDelete, and xWrite, xTruncate, xSync and xClose, with Go functions that then call the
// originals, as
// modernc.org/sqlite/vfs installs its own methods. Nothing else changes: the database files,
// their locks and the WAL index are the unix VFS's.

// disk counts what SQLite did to the files it opened by name.
var disk struct {
	mu      sync.Mutex
	syncs   int64 // xSync calls: fsync(2) of the file (and of its directory, once, after creating a WAL)
	writes  int64 // xWrite calls: one pwrite(2) each
	written int64 // bytes
	files   map[uintptr]*shimFile
	methods map[uintptr]*sqlite3.Tsqlite3_io_methods // a file's own methods → the shim's copy
	watched []*powerLoss
}

type shimFile struct {
	path    string
	methods uintptr // the unix VFS's io_methods of the file
	image   *image  // nil unless a watched directory holds the file
}

var (
	unixVFS  uintptr // the unix VFS's sqlite3_vfs
	shimVFS  *sqlite3.Tsqlite3_vfs
	shimName = mustCString("certprov-shim")
)

// at is the Go pointer to the C memory at p (a uintptr, as modernc.org/libc passes pointers):
// SQLite's memory, which the Go collector neither moves nor frees.
func at[T any](p uintptr) *T { return (*T)(*(*unsafe.Pointer)(unsafe.Pointer(&p))) }

func mustCString(s string) uintptr {
	p, err := libc.CString(s)
	if err != nil {
		panic(err)
	}
	return p
}

func init() {
	tls := libc.NewTLS()
	defer tls.Close()
	unixVFS = sqlite3.Xsqlite3_vfs_find(tls, 0)
	if unixVFS == 0 {
		panic("no default SQLite VFS")
	}
	disk.files = map[uintptr]*shimFile{}
	disk.methods = map[uintptr]*sqlite3.Tsqlite3_io_methods{}
	p := libc.Xcalloc(tls, 1, libc.Tsize_t(unsafe.Sizeof(sqlite3.Tsqlite3_vfs{})))
	if p == 0 {
		panic("out of memory")
	}
	shimVFS = at[sqlite3.Tsqlite3_vfs](p)
	*shimVFS = *at[sqlite3.Tsqlite3_vfs](unixVFS)
	shimVFS.FpNext, shimVFS.FzName = 0, shimName
	*(*func(*libc.TLS, uintptr, uintptr, uintptr, int32, uintptr) int32)(unsafe.Pointer(&shimVFS.FxOpen)) = shimOpen
	*(*func(*libc.TLS, uintptr, uintptr, int32) int32)(unsafe.Pointer(&shimVFS.FxDelete)) = shimDelete
	if rc := sqlite3.Xsqlite3_vfs_register(tls, p, 1); rc != sqlite3.SQLITE_OK {
		panic(fmt.Sprintf("register the shim VFS: rc %d", rc))
	}
}

// diskCounts is a journaltest.Counter of this binary's SQLite files.
func diskCounts() map[string]int64 {
	disk.mu.Lock()
	defer disk.mu.Unlock()
	return map[string]int64{"fsyncs": disk.syncs, "writes": disk.writes, "KB": disk.written / 1024}
}

func shimOpen(tls *libc.TLS, pVfs, zName, pFile uintptr, flags int32, pOutFlags uintptr) int32 {
	u := at[sqlite3.Tsqlite3_vfs](unixVFS)
	rc := (*(*func(*libc.TLS, uintptr, uintptr, uintptr, int32, uintptr) int32)(unsafe.Pointer(&struct{ uintptr }{u.FxOpen})))(tls, pVfs, zName, pFile, flags, pOutFlags)
	file := at[sqlite3.Tsqlite3_file](pFile)
	if rc != sqlite3.SQLITE_OK || zName == 0 || file.FpMethods == 0 {
		return rc
	}
	path := libc.GoString(zName)
	disk.mu.Lock()
	defer disk.mu.Unlock()
	m := disk.methods[file.FpMethods]
	if m == nil {
		// In C memory, as SQLite's own: the race detector's pointer checks refuse a Go one.
		p := libc.Xcalloc(tls, 1, libc.Tsize_t(unsafe.Sizeof(sqlite3.Tsqlite3_io_methods{})))
		if p == 0 {
			return sqlite3.SQLITE_NOMEM
		}
		m = at[sqlite3.Tsqlite3_io_methods](p)
		*m = *at[sqlite3.Tsqlite3_io_methods](file.FpMethods)
		*(*func(*libc.TLS, uintptr, uintptr, int32, int64) int32)(unsafe.Pointer(&m.FxWrite)) = shimWrite
		*(*func(*libc.TLS, uintptr, int64) int32)(unsafe.Pointer(&m.FxTruncate)) = shimTruncate
		*(*func(*libc.TLS, uintptr, int32) int32)(unsafe.Pointer(&m.FxSync)) = shimSync
		*(*func(*libc.TLS, uintptr) int32)(unsafe.Pointer(&m.FxClose)) = shimClose
		disk.methods[file.FpMethods] = m
	}
	f := &shimFile{path: path, methods: file.FpMethods}
	for _, w := range disk.watched {
		if strings.HasPrefix(path, w.dir+string(filepath.Separator)) {
			f.image = w.image(path)
		}
	}
	disk.files[pFile] = f
	file.FpMethods = uintptr(unsafe.Pointer(m))
	return rc
}

// shimDelete deletes a file (a rollback journal once its transaction committed): a power loss
// after it leaves no such file, since the unix VFS syncs the directory when SQLite asks.
func shimDelete(tls *libc.TLS, pVfs, zPath uintptr, dirSync int32) int32 {
	u := at[sqlite3.Tsqlite3_vfs](unixVFS)
	rc := (*(*func(*libc.TLS, uintptr, uintptr, int32) int32)(unsafe.Pointer(&struct{ uintptr }{u.FxDelete})))(tls, pVfs, zPath, dirSync)
	if rc == sqlite3.SQLITE_OK {
		path := libc.GoString(zPath)
		disk.mu.Lock()
		defer disk.mu.Unlock()
		for _, w := range disk.watched {
			delete(w.images, path)
		}
	}
	return rc
}

// original returns the unix VFS's io_methods of pFile, and the shim's record of it.
func original(pFile uintptr) (*sqlite3.Tsqlite3_io_methods, *shimFile) {
	disk.mu.Lock()
	defer disk.mu.Unlock()
	f := disk.files[pFile]
	return at[sqlite3.Tsqlite3_io_methods](f.methods), f
}

func shimWrite(tls *libc.TLS, pFile, zBuf uintptr, iAmt int32, iOfst int64) int32 {
	m, f := original(pFile)
	rc := (*(*func(*libc.TLS, uintptr, uintptr, int32, int64) int32)(unsafe.Pointer(&struct{ uintptr }{m.FxWrite})))(tls, pFile, zBuf, iAmt, iOfst)
	disk.mu.Lock()
	defer disk.mu.Unlock()
	disk.writes++
	disk.written += int64(iAmt)
	if f.image != nil && rc == sqlite3.SQLITE_OK {
		data := bytes.Clone(unsafe.Slice(at[byte](zBuf), iAmt))
		f.image.pending = append(f.image.pending, func(b []byte) []byte {
			if end := int(iOfst) + len(data); end > len(b) {
				b = append(b, make([]byte, end-len(b))...)
			}
			copy(b[iOfst:], data)
			return b
		})
	}
	return rc
}

func shimTruncate(tls *libc.TLS, pFile uintptr, size int64) int32 {
	m, f := original(pFile)
	rc := (*(*func(*libc.TLS, uintptr, int64) int32)(unsafe.Pointer(&struct{ uintptr }{m.FxTruncate})))(tls, pFile, size)
	disk.mu.Lock()
	defer disk.mu.Unlock()
	if f.image != nil && rc == sqlite3.SQLITE_OK {
		f.image.pending = append(f.image.pending, func(b []byte) []byte {
			if int(size) < len(b) {
				return b[:size]
			}
			return append(b, make([]byte, int(size)-len(b))...)
		})
	}
	return rc
}

func shimSync(tls *libc.TLS, pFile uintptr, flags int32) int32 {
	m, f := original(pFile)
	rc := (*(*func(*libc.TLS, uintptr, int32) int32)(unsafe.Pointer(&struct{ uintptr }{m.FxSync})))(tls, pFile, flags)
	disk.mu.Lock()
	defer disk.mu.Unlock()
	disk.syncs++
	if f.image != nil && rc == sqlite3.SQLITE_OK {
		// fsync makes durable every write to the file before it, whichever descriptor made it.
		for _, apply := range f.image.pending {
			f.image.durable = apply(f.image.durable)
		}
		f.image.pending = nil
	}
	return rc
}

func shimClose(tls *libc.TLS, pFile uintptr) int32 {
	m, _ := original(pFile)
	rc := (*(*func(*libc.TLS, uintptr) int32)(unsafe.Pointer(&struct{ uintptr }{m.FxClose})))(tls, pFile)
	disk.mu.Lock()
	defer disk.mu.Unlock()
	delete(disk.files, pFile)
	return rc
}

// powerLoss keeps, for every file SQLite opens under dir, what a power loss would leave of it.
type powerLoss struct {
	dir    string
	images map[string]*image
}

// image is one file as a power loss would leave it: the writes up to its last sync, and those
// since, which would be lost.
type image struct {
	durable []byte
	pending []func([]byte) []byte
}

// image returns the image of path, starting from the file as it is now (disk.mu held).
func (w *powerLoss) image(path string) *image {
	if im := w.images[path]; im != nil {
		return im
	}
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		panic(err)
	}
	im := &image{durable: b}
	w.images[path] = im
	return im
}

// watchPowerLoss starts keeping the durable image of every SQLite file opened under dir from
// now on (open the store after the call).
func watchPowerLoss(t *testing.T, dir string) *powerLoss {
	t.Helper()
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	w := &powerLoss{dir: abs, images: map[string]*image{}}
	disk.mu.Lock()
	disk.watched = append(disk.watched, w)
	disk.mu.Unlock()
	t.Cleanup(func() {
		disk.mu.Lock()
		defer disk.mu.Unlock()
		for i, x := range disk.watched {
			if x == w {
				disk.watched = append(disk.watched[:i], disk.watched[i+1:]...)
				break
			}
		}
	})
	return w
}

// cut writes to dst what the disk would hold after a power loss now: every watched file as of
// its last sync, under its own name. The WAL index (-shm) is not among them: SQLite rebuilds it
// from the WAL.
func (w *powerLoss) cut(t *testing.T, dst string) {
	t.Helper()
	disk.mu.Lock()
	defer disk.mu.Unlock()
	for path, im := range w.images {
		if err := os.WriteFile(filepath.Join(dst, filepath.Base(path)), im.durable, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}
