package replica

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Store is the set of replicas on one brick.
type Store struct {
	root string
}

// Open creates root if needed and returns the store under it.
func Open(root string) (*Store, error) {
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, fmt.Errorf("creating replica store %s: %w", root, err)
	}
	return &Store{root: root}, nil
}

// Root is the directory holding every replica.
func (s *Store) Root() string { return s.root }

// Path is where the replica of volume id lives.
func (s *Store) Path(id string) (string, error) {
	if err := checkID(id); err != nil {
		return "", err
	}
	return filepath.Join(s.root, id), nil
}

// Ensure creates the (empty) replica of volume id if it does not exist and
// returns its path. Idempotent; the directory is fsync'd into its parent so
// an acknowledged create survives a crash.
func (s *Store) Ensure(id string) (string, error) {
	p, err := s.Path(id)
	if err != nil {
		return "", err
	}
	if fi, err := os.Stat(p); err == nil {
		if !fi.IsDir() {
			return "", fmt.Errorf("replica %s: %s exists and is not a directory", id, p)
		}
		return p, nil
	}
	if err := os.Mkdir(p, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("creating replica %s: %w", id, err)
	}
	if err := syncDir(s.root); err != nil {
		return "", fmt.Errorf("creating replica %s: %w", id, err)
	}
	return p, nil
}

// OpenReplica creates the replica of volume id if needed (Ensure) and
// opens it (the package-level OpenReplica).
func (s *Store) OpenReplica(id string, opts ReplicaOptions) (*Replica, error) {
	p, err := s.Ensure(id)
	if err != nil {
		return nil, err
	}
	return OpenReplica(p, opts)
}

// Remove deletes the replica of volume id and everything in it. Removing a
// missing replica is not an error.
func (s *Store) Remove(id string) error {
	p, err := s.Path(id)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(p); err != nil {
		return fmt.Errorf("removing replica %s: %w", id, err)
	}
	return syncDir(s.root)
}

// List returns the volume IDs that have a replica here.
func (s *Store) List() ([]string, error) {
	ents, err := os.ReadDir(s.root)
	if err != nil {
		return nil, fmt.Errorf("listing replicas in %s: %w", s.root, err)
	}
	var ids []string
	for _, e := range ents {
		if e.IsDir() && checkID(e.Name()) == nil {
			ids = append(ids, e.Name())
		}
	}
	return ids, nil
}

// checkID refuses IDs that are not a single plain path element.
func checkID(id string) error {
	if id == "" || id == "." || id == ".." || strings.ContainsAny(id, "/\\\x00") || len(id) > 128 {
		return fmt.Errorf("invalid volume ID %q", id)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("opening %s to sync it: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	return nil
}
