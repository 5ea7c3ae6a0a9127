package docker

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/brickvol/brick/volspec"
)

// fakeVolumes is an in-memory brick: a catalog of volumes with their
// attachments, and the mounts of one host ("here").
type fakeVolumes struct {
	mu      sync.Mutex
	here    string
	vols    map[string]*Volume
	mounted map[string]string // dir -> volume
	// mountCalls and unmountCalls count calls that changed something.
	mountCalls, unmountCalls int
	// block, when set, makes Mount wait for the context (a hung daemon).
	block bool
	// failMount makes the next Mount fail with this error.
	failMount error
}

func newFake() *fakeVolumes {
	return &fakeVolumes{here: "h1", vols: map[string]*Volume{}, mounted: map[string]string{}}
}

func (f *fakeVolumes) Create(ctx context.Context, s volspec.Spec) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.vols[s.Name]; ok {
		return &Error{Kind: ErrExists, Msg: fmt.Sprintf("volume %q already exists", s.Name)}
	}
	f.vols[s.Name] = &Volume{Name: s.Name, CreatedAt: time.Date(2026, 11, 23, 14, 0, 0, 0, time.UTC), SizeBytes: s.SizeBytes,
		Layout: s.Layout.String(), Access: s.Access, MinISR: s.MinISR, State: "healthy",
		Placement: []string{"h1", "h2", "h3"}, InSync: []string{"h1", "h2", "h3"}}
	return nil
}

func (f *fakeVolumes) Remove(ctx context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.vols[name]
	if !ok {
		return &Error{Kind: ErrNotFound, Msg: fmt.Sprintf("volume %q: not found", name)}
	}
	if len(v.Attached) > 0 {
		return &Error{Kind: ErrInUse, Msg: fmt.Sprintf("delete volume %q: volume is attached on %v", name, v.Attached)}
	}
	delete(f.vols, name)
	return nil
}

func (f *fakeVolumes) Get(ctx context.Context, name string) (Volume, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.vols[name]
	if !ok {
		return Volume{}, &Error{Kind: ErrNotFound, Msg: fmt.Sprintf("volume %q: not found", name)}
	}
	return *v, nil
}

func (f *fakeVolumes) List(ctx context.Context) ([]Volume, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Volume
	for _, v := range f.vols {
		out = append(out, *v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name > out[j].Name }) // the plugin sorts
	return out, nil
}

func (f *fakeVolumes) Mount(ctx context.Context, name, dir string) error {
	f.mu.Lock()
	if f.block {
		f.mu.Unlock()
		<-ctx.Done()
		return &Error{Kind: ErrUnavailable, Msg: ctx.Err().Error()}
	}
	defer f.mu.Unlock()
	if err := f.failMount; err != nil {
		f.failMount = nil
		return err
	}
	v, ok := f.vols[name]
	if !ok {
		return &Error{Kind: ErrNotFound, Msg: fmt.Sprintf("volume %q: not found", name)}
	}
	if f.mounted[dir] == name {
		return nil
	}
	for _, h := range v.Attached {
		if h != f.here {
			return &Error{Kind: ErrInUse, Msg: fmt.Sprintf("attach %q: volume is attached: held by %s", name, h)}
		}
	}
	v.Attached, v.Head = []string{f.here}, f.here
	v.Epoch++
	f.mounted[dir] = name
	f.mountCalls++
	return nil
}

func (f *fakeVolumes) Unmount(ctx context.Context, name, dir string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.mounted[dir] == name {
		delete(f.mounted, dir)
		f.unmountCalls++
	}
	if v, ok := f.vols[name]; ok {
		v.Attached, v.Head = nil, ""
	}
	return nil
}

// attachElsewhere makes another host hold the volume.
func (f *fakeVolumes) attachElsewhere(name, host string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.vols[name].Attached = []string{host}
	f.vols[name].Head = host
}

func (f *fakeVolumes) isMounted(dir string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.mounted[dir]
	return ok
}

func (f *fakeVolumes) attached(name string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.vols[name].Attached...)
}

func (f *fakeVolumes) calls() (mounts, unmounts int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.mountCalls, f.unmountCalls
}
