package docker

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"

	"github.com/brickvol/brick/internal/atomicfile"
)

// stateVersion is the format of the state file; another version is
// refused rather than guessed at.
const stateVersion = 1

// mountUse is one volume mounted on this host for Docker: where, and by
// which Docker mount IDs (sorted, no duplicates).
type mountUse struct {
	Dir string   `json:"dir"`
	IDs []string `json:"ids"`
}

type stateFile struct {
	Version int                  `json:"version"`
	Mounts  map[string]*mountUse `json:"mounts"`
}

// mounts is the reference count of every volume Docker has mounted on this
// host, kept in memory and, when path is set, in a file written
// crash-safely after every change. Safe for concurrent use; callers
// serialise changes to one volume themselves (the per-volume lock).
type mounts struct {
	path string
	mu   sync.Mutex
	m    map[string]*mountUse
}

// loadMounts reads the state file; a missing file is an empty state.
func loadMounts(path string) (*mounts, error) {
	s := &mounts{path: path, m: map[string]*mountUse{}}
	if path == "" {
		return s, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the Docker mount state %s: %w", path, err)
	}
	var f stateFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("the Docker mount state %s is corrupt (move it away to start with no mounts): %w", path, err)
	}
	if f.Version != stateVersion {
		return nil, fmt.Errorf("the Docker mount state %s has version %d; this brickd reads version %d", path, f.Version, stateVersion)
	}
	for name, u := range f.Mounts {
		if u == nil || u.Dir == "" || len(u.IDs) == 0 {
			continue
		}
		slices.Sort(u.IDs)
		u.IDs = slices.Compact(u.IDs)
		s.m[name] = u
	}
	return s, nil
}

// get returns a copy of the volume's use; ok is false when Docker does not
// use it on this host.
func (s *mounts) get(name string) (u mountUse, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.m[name]
	if !ok {
		return mountUse{}, false
	}
	return mountUse{Dir: p.Dir, IDs: slices.Clone(p.IDs)}, true
}

// add records that Docker mount id uses the volume mounted at dir, and
// persists the change. It reports whether id is new. On a persist error the
// change is undone.
func (s *mounts) add(name, dir, id string) (added bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.m[name]
	if ok && slices.Contains(u.IDs, id) {
		return false, nil
	}
	prev := s.snapshot(name)
	if !ok {
		u = &mountUse{Dir: dir}
		s.m[name] = u
	}
	u.IDs = append(u.IDs, id)
	slices.Sort(u.IDs)
	if err := s.save(); err != nil {
		s.restore(name, prev)
		return false, err
	}
	return true, nil
}

// remove forgets Docker mount id of the volume, and the volume when it was
// the last one, and persists the change.
func (s *mounts) remove(name, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.m[name]
	if !ok {
		return nil
	}
	i := slices.Index(u.IDs, id)
	if i < 0 {
		return nil
	}
	prev := s.snapshot(name)
	u.IDs = slices.Delete(u.IDs, i, i+1)
	if len(u.IDs) == 0 {
		delete(s.m, name)
	}
	if err := s.save(); err != nil {
		s.restore(name, prev)
		return err
	}
	return nil
}

func (s *mounts) snapshot(name string) *mountUse {
	if u, ok := s.m[name]; ok {
		return &mountUse{Dir: u.Dir, IDs: slices.Clone(u.IDs)}
	}
	return nil
}

func (s *mounts) restore(name string, prev *mountUse) {
	if prev == nil {
		delete(s.m, name)
	} else {
		s.m[name] = prev
	}
}

// save writes the state file; the caller holds mu.
func (s *mounts) save() error {
	if s.path == "" {
		return nil
	}
	b, err := json.MarshalIndent(stateFile{Version: stateVersion, Mounts: s.m}, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding the Docker mount state: %w", err)
	}
	if err := atomicfile.Write(s.path, b); err != nil {
		return fmt.Errorf("saving the Docker mount state %s: %w", s.path, err)
	}
	return nil
}
