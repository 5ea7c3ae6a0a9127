package csi

import (
	"context"
	"fmt"
	"os"
	"sync"

	"github.com/brickvol/brick/volspec"
)

// fakeCluster is an in-memory Cluster: volumes, nodes, this host's mounts
// (which it also enters in the fake mount table, as a mount process
// would), and attach semantics like brick's (a single volume has one
// holder).
type fakeCluster struct {
	mu       sync.Mutex
	status   Status
	nodes    map[string]bool
	vols     map[string]*Volume
	mounts   map[string]string // dir -> volume ID
	capacity uint64
	next     int
	mounter  *fakeMounter
	calls    []string
}

func newFakeCluster(m *fakeMounter) *fakeCluster {
	return &fakeCluster{status: Status{ClusterID: "c-test", Health: "healthy"}, nodes: map[string]bool{"n1": true, "n2": true, "n3": true},
		vols: map[string]*Volume{}, mounts: map[string]string{}, capacity: 100 << 30, mounter: m}
}

func (f *fakeCluster) record(c string) {
	f.calls = append(f.calls, c)
}

func clone(v *Volume) *Volume {
	c := *v
	c.AttachedTo = append([]string(nil), v.AttachedTo...)
	return &c
}

func (f *fakeCluster) Status(ctx context.Context) (Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.status, nil
}

func (f *fakeCluster) HasNode(ctx context.Context, name string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.nodes[name], nil
}

func (f *fakeCluster) CreateVolume(ctx context.Context, s volspec.Spec) (*Volume, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("create " + s.Name)
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	for _, v := range f.vols {
		if v.Name == s.Name {
			return nil, fmt.Errorf("volume %q: %w", s.Name, ErrExists)
		}
	}
	f.next++
	v := &Volume{ID: fmt.Sprintf("v-%016x", f.next), Name: s.Name, SizeBytes: s.SizeBytes, Layout: s.Layout, Access: s.Access,
		MinISR: s.MinISR, Labels: s.Labels, State: "healthy"}
	f.vols[v.ID] = v
	return clone(v), nil
}

func (f *fakeCluster) DeleteVolume(ctx context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("delete " + id)
	v, ok := f.vols[id]
	if !ok {
		return fmt.Errorf("volume %s: %w", id, ErrNotFound)
	}
	if len(v.AttachedTo) > 0 {
		return fmt.Errorf("volume %s is attached to %v: %w", id, v.AttachedTo, ErrHeld)
	}
	delete(f.vols, id)
	return nil
}

func (f *fakeCluster) Volume(ctx context.Context, id string) (*Volume, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if v, ok := f.vols[id]; ok {
		return clone(v), nil
	}
	return nil, fmt.Errorf("volume %s: %w", id, ErrNotFound)
}

func (f *fakeCluster) VolumeByName(ctx context.Context, name string) (*Volume, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, v := range f.vols {
		if v.Name == name {
			return clone(v), nil
		}
	}
	return nil, fmt.Errorf("volume %q: %w", name, ErrNotFound)
}

func (f *fakeCluster) Volumes(ctx context.Context) ([]*Volume, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*Volume
	for _, v := range f.vols {
		out = append(out, clone(v))
	}
	return out, nil
}

func (f *fakeCluster) Attach(ctx context.Context, id, node string) (*Volume, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("attach " + id + " " + node)
	v, ok := f.vols[id]
	if !ok {
		return nil, fmt.Errorf("volume %s: %w", id, ErrNotFound)
	}
	if !f.nodes[node] {
		return nil, fmt.Errorf("node %s: %w", node, ErrNotFound)
	}
	for _, n := range v.AttachedTo {
		if n == node {
			return clone(v), nil
		}
	}
	if v.Access == volspec.AccessSingle && len(v.AttachedTo) > 0 {
		return nil, fmt.Errorf("volume %s is attached to %s: %w", id, v.AttachedTo[0], ErrHeld)
	}
	v.AttachedTo = append(v.AttachedTo, node)
	v.Epoch++
	return clone(v), nil
}

func (f *fakeCluster) Detach(ctx context.Context, id, node string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("detach " + id + " " + node)
	v, ok := f.vols[id]
	if !ok {
		return fmt.Errorf("volume %s: %w", id, ErrNotFound)
	}
	for i, n := range v.AttachedTo {
		if n == node {
			v.AttachedTo = append(v.AttachedTo[:i], v.AttachedTo[i+1:]...)
			return nil
		}
	}
	return fmt.Errorf("volume %s is not attached to %s: %w", id, node, ErrNotFound)
}

func (f *fakeCluster) Mount(ctx context.Context, id, dir string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("mount " + id + " " + dir)
	if _, ok := f.vols[id]; !ok {
		return fmt.Errorf("volume %s: %w", id, ErrNotFound)
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return fmt.Errorf("%s is no directory: %w", dir, ErrInvalid)
	}
	if cur, ok := f.mounts[dir]; ok {
		if cur == id {
			return nil
		}
		return fmt.Errorf("%s serves %s: %w", dir, cur, ErrHeld)
	}
	f.mounts[dir] = id
	f.mounter.add(MountPoint{Dir: dir, Device: "0:" + id, FSType: "fuse.brick"})
	return nil
}

func (f *fakeCluster) Unmount(ctx context.Context, dir string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("unmount " + dir)
	if _, ok := f.mounts[dir]; !ok {
		return fmt.Errorf("%s: %w", dir, ErrNotFound)
	}
	delete(f.mounts, dir)
	f.mounter.Unmount(dir)
	return nil
}

func (f *fakeCluster) MountedAt(ctx context.Context, dir string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if id, ok := f.mounts[dir]; ok {
		return id, nil
	}
	return "", fmt.Errorf("%s: %w", dir, ErrNotFound)
}

func (f *fakeCluster) Capacity(ctx context.Context, l volspec.Layout) (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.capacity, nil
}

func (f *fakeCluster) Expand(ctx context.Context, id string, size uint64) (*Volume, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.vols[id]
	if !ok {
		return nil, fmt.Errorf("volume %s: %w", id, ErrNotFound)
	}
	v.SizeBytes = size
	return clone(v), nil
}

// fakeMounter is a mount table in memory; Bind records the options.
type fakeMounter struct {
	mu     sync.Mutex
	mounts map[string][]MountPoint // stacked, last on top
	binds  []string
}

func newFakeMounter() *fakeMounter { return &fakeMounter{mounts: map[string][]MountPoint{}} }

func (m *fakeMounter) add(mp MountPoint) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.mounts[mp.Dir] = append(m.mounts[mp.Dir], mp)
}

func (m *fakeMounter) Bind(source, target string, o MountOptions) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	src := m.mounts[source]
	if len(src) == 0 {
		return fmt.Errorf("bind %s: source is not mounted", source)
	}
	m.binds = append(m.binds, fmt.Sprintf("%s->%s ro=%v", source, target, o.ReadOnly))
	m.mounts[target] = append(m.mounts[target], MountPoint{Dir: target, Device: src[len(src)-1].Device, ReadOnly: o.ReadOnly})
	return nil
}

func (m *fakeMounter) Unmount(target string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s := m.mounts[target]; len(s) > 0 {
		m.mounts[target] = s[:len(s)-1]
		if len(m.mounts[target]) == 0 {
			delete(m.mounts, target)
		}
	}
	return nil
}

func (m *fakeMounter) Lookup(dir string) (MountPoint, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s := m.mounts[dir]; len(s) > 0 {
		return s[len(s)-1], true, nil
	}
	return MountPoint{}, false, nil
}

func (m *fakeMounter) Statfs(path string) (Usage, error) {
	return Usage{TotalBytes: 1 << 30, AvailableBytes: 1 << 29, UsedBytes: 1 << 29, TotalInodes: 100, FreeInodes: 90, UsedInodes: 10}, nil
}
