package replica

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// TreeDigest hashes the directory tree at dir: for every entry its path,
// type and permission bits, owner, link count, file ID tag, user-visible
// xattrs, and by type its size and content hash, symlink target or device
// number. Times are left out (each brick's clock sets them) and so is a
// directory's size (file-system specific). Two trees with equal digests
// hold the same files. It never follows a symlink.
func TreeDigest(dir string) (string, error) {
	lines, err := TreeManifest(dir)
	if err != nil {
		return "", err
	}
	return hashLines(lines), nil
}

// TreeManifest returns the lines TreeDigest hashes, sorted by path: the
// readable form, for showing how two trees differ.
func TreeManifest(dir string) ([]string, error) {
	fd, err := openat(unix.AT_FDCWD, dir, oDir, 0)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", dir, err)
	}
	defer closeFD(fd)
	st, err := fstat(fd)
	if err != nil {
		return nil, err
	}
	root, err := describe(fd, ".", "/", &st)
	if err != nil {
		return nil, err
	}
	lines := []string{root}
	if err := walkTree(fd, "", &lines); err != nil {
		return nil, fmt.Errorf("walking %s: %w", dir, err)
	}
	return lines, nil
}

// Digest hashes a replica: its tree (TreeDigest of data/) and its fids/
// entries, so files unlinked but not yet forgotten count too. Replicas
// that applied the same ops have equal digests. It holds Apply off while
// it reads.
func Digest(r *Replica) (string, error) {
	lines, err := Manifest(r)
	if err != nil {
		return "", err
	}
	return hashLines(lines), nil
}

// Manifest returns the lines Digest hashes.
func Manifest(r *Replica) ([]string, error) {
	r.applyMu.Lock()
	defer r.applyMu.Unlock()
	if err := r.checkOpen(); err != nil {
		return nil, err
	}
	lines, err := TreeManifest(procPath(r.dataFD, "."))
	if err != nil {
		return nil, err
	}
	ents, err := listDir(r.fidsFD)
	if err != nil {
		return nil, err
	}
	sort.Slice(ents, func(i, j int) bool {
		a, _ := strconv.ParseUint(ents[i].name, 10, 64)
		b, _ := strconv.ParseUint(ents[j].name, 10, 64)
		return a < b
	})
	for _, e := range ents {
		st, err := lstatAt(r.fidsFD, e.name)
		if err != nil {
			return nil, err
		}
		if st.Nlink > 1 {
			lines = append(lines, fmt.Sprintf("fids/%s linked", e.name))
			continue
		}
		l, err := describe(r.fidsFD, e.name, "fids/"+e.name, &st) // an orphan: describe it fully
		if err != nil {
			return nil, err
		}
		lines = append(lines, l)
	}
	return lines, nil
}

func hashLines(lines []string) string {
	h := sha256.New()
	for _, l := range lines {
		io.WriteString(h, l)
		h.Write([]byte{'\n'})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// listDir lists the directory open as dirfd through a descriptor of its own.
func listDir(dirfd int) ([]dirent, error) {
	fd, err := openat(dirfd, ".", oDir, 0)
	if err != nil {
		return nil, err
	}
	defer closeFD(fd)
	return readDirents(fd)
}

func walkTree(dirfd int, prefix string, lines *[]string) error {
	ents, err := listDir(dirfd)
	if err != nil {
		return err
	}
	sort.Slice(ents, func(i, j int) bool { return ents[i].name < ents[j].name })
	for _, e := range ents {
		p := prefix + "/" + e.name
		st, err := lstatAt(dirfd, e.name)
		if err != nil {
			return err
		}
		l, err := describe(dirfd, e.name, p, &st)
		if err != nil {
			return err
		}
		*lines = append(*lines, l)
		if isDir(&st) {
			sub, err := openat(dirfd, e.name, oDir, 0)
			if err != nil {
				return err
			}
			err = walkTree(sub, p, lines)
			closeFD(sub)
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// describe renders entry name of dirfd (shown as path) for a manifest.
func describe(dirfd int, name, path string, st *unix.Stat_t) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "%q mode=%07o uid=%d gid=%d nlink=%d", path, st.Mode, st.Uid, st.Gid, st.Nlink)
	if fid, err := fidAt(dirfd, name); err == nil {
		fmt.Fprintf(&b, " fid=%d", fid)
	} else {
		b.WriteString(" fid=-")
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		sum, err := hashFile(dirfd, name)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, " size=%d sha256=%s", st.Size, sum)
	case unix.S_IFLNK:
		t, err := readlinkAt(dirfd, name)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, " target=%q", t)
	case unix.S_IFCHR, unix.S_IFBLK:
		fmt.Fprintf(&b, " rdev=%d", st.Rdev)
	}
	names, err := xattrList(procPath(dirfd, name))
	if err != nil && err != unix.ENOTSUP {
		return "", err
	}
	sort.Strings(names)
	for _, n := range names {
		v, err := xattrGet(procPath(dirfd, name), n)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, " xattr[%q]=%q", n, v)
	}
	return b.String(), nil
}

func hashFile(dirfd int, name string) (string, error) {
	fd, err := openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return "", err
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
