package docker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/docker/go-plugins-helpers/volume"

	"github.com/brickvol/brick/volspec"
)

// Config is what a Plugin needs.
type Config struct {
	// Volumes is brick, as the daemon offers it. Required.
	Volumes Volumes
	// Host is this daemon's name (brickd --name), used in messages and to
	// tell this host's attachment from another's.
	Host string
	// MountRoot is the absolute directory under which volumes are mounted
	// for Docker, one directory per volume (MountRoot/NAME). For the
	// managed plugin it must be the plugin's propagated mount.
	MountRoot string
	// StateFile is where the Docker mount IDs of each volume are persisted;
	// empty keeps them in memory only (tests).
	StateFile string
	// Timeout bounds every request to Volumes. Docker itself gives up on a
	// plugin after one minute (two for Create and Mount).
	Timeout time.Duration
	Logger  *slog.Logger
}

// DefaultTimeout stays below Docker's shortest plugin timeout (1 minute),
// so Docker hears brick's reason rather than its own timeout.
const DefaultTimeout = 50 * time.Second

// Validate names the first bad field.
func (c Config) Validate() error {
	if c.Volumes == nil {
		return errors.New("docker plugin: Volumes is nil")
	}
	if !filepath.IsAbs(c.MountRoot) {
		return fmt.Errorf("docker plugin: mount root %q must be an absolute path", c.MountRoot)
	}
	if c.StateFile != "" && !filepath.IsAbs(c.StateFile) {
		return fmt.Errorf("docker plugin: state file %q must be an absolute path", c.StateFile)
	}
	if c.Timeout <= 0 {
		return fmt.Errorf("docker plugin: timeout %v must be positive", c.Timeout)
	}
	return nil
}

// Plugin implements Docker's volume.Driver on top of Volumes. Create it
// with New, serve it with Serve, stop it with Close.
type Plugin struct {
	cfg    Config
	log    *slog.Logger
	vols   Volumes
	mounts *mounts
	locks  keyedMutex
	// ctx bounds every request (Docker's requests carry no context of
	// their own); Close cancels it.
	ctx    context.Context
	cancel context.CancelFunc
}

var _ volume.Driver = (*Plugin)(nil)

// New checks cfg and loads the persisted mount state.
func New(cfg Config) (*Plugin, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	m, err := loadMounts(cfg.StateFile)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Plugin{cfg: cfg, log: cfg.Logger, vols: cfg.Volumes, mounts: m, ctx: ctx, cancel: cancel}
	for name, u := range m.m {
		p.log.Info("docker: volume in use by containers since before this start", "volume", name, "dir", u.Dir, "mounts", len(u.IDs))
	}
	return p, nil
}

// Serve answers Docker on l until l is closed; it returns the listener's
// error.
func (p *Plugin) Serve(l net.Listener) error {
	return volume.NewHandler(p).Serve(l)
}

// Close cancels requests in flight. Close the listener given to Serve too.
func (p *Plugin) Close() { p.cancel() }

func (p *Plugin) call() (context.Context, context.CancelFunc) {
	return context.WithTimeout(p.ctx, p.cfg.Timeout)
}

// dir is where volume name is mounted for Docker; name has been validated,
// so it is one safe path element.
func (p *Plugin) dir(name string) string { return filepath.Join(p.cfg.MountRoot, name) }

// Capabilities: a volume is the same volume from every host of the
// cluster, so Docker (and Swarm) may use it anywhere.
func (p *Plugin) Capabilities() *volume.CapabilitiesResponse {
	return &volume.CapabilitiesResponse{Capabilities: volume.Capability{Scope: "global"}}
}

// Create creates a volume from Docker's --opt options (size, replicas, ec,
// access, min-isr, label). Unknown options are refused. Creating a volume
// that exists with the same options succeeds (Docker and Swarm create a
// volume on every host that uses it); with other options it is refused.
func (p *Plugin) Create(req *volume.CreateRequest) error {
	name := req.Name
	if err := volspec.ValidateName(name); err != nil {
		return p.refuse("create", name, err)
	}
	given, err := volspec.ParseOptions(req.Options)
	if err != nil {
		return p.refuse("create", name, err)
	}
	given.Name = name
	spec := given
	spec.Defaults()
	if err := spec.Validate(); err != nil {
		return p.refuse("create", name, err)
	}
	ctx, cancel := p.call()
	defer cancel()
	err = p.vols.Create(ctx, spec)
	if errors.Is(err, ErrExists) {
		v, gerr := p.vols.Get(ctx, name)
		if gerr != nil {
			return p.failed(ctx, "create", name, fmt.Sprintf("creating volume %q", name), gerr)
		}
		if diff := differences(given, v); diff != "" {
			return p.refuse("create", name, fmt.Errorf("volume %q already exists with %s; remove it first or create it with the same options", name, diff))
		}
		p.log.Info("docker: create of an existing volume with the same options", "volume", name)
		return nil
	}
	if err != nil {
		return p.failed(ctx, "create", name, fmt.Sprintf("creating volume %q", name), err)
	}
	p.log.Info("docker: volume created", "volume", name, "layout", spec.Layout.String(), "size", volspec.FormatSize(spec.SizeBytes))
	return nil
}

// differences says how existing volume v differs from the options given
// (only those given count), or "" when it matches them.
func differences(given volspec.Spec, v Volume) string {
	differs := false
	if given.SizeBytes != 0 && given.SizeBytes != v.SizeBytes {
		differs = true
	}
	if !given.Layout.IsZero() && given.Layout.String() != v.Layout {
		differs = true
	}
	if given.Access != "" && given.Access != v.Access {
		differs = true
	}
	if given.MinISR != 0 && given.MinISR != v.MinISR {
		differs = true
	}
	if !differs {
		return ""
	}
	return fmt.Sprintf("%s, size %s, access %s, min-isr %d", v.Layout, volspec.FormatSize(v.SizeBytes), v.Access, v.MinISR)
}

// Remove deletes the volume everywhere. It is refused while any host has
// the volume attached; a volume that does not exist is removed already.
func (p *Plugin) Remove(req *volume.RemoveRequest) error {
	name := req.Name
	if err := volspec.ValidateName(name); err != nil {
		return p.refuse("remove", name, err)
	}
	unlock := p.locks.lock(name)
	defer unlock()
	if u, ok := p.mounts.get(name); ok {
		return p.refuse("remove", name, fmt.Errorf("volume %q is mounted on this host for %d container(s) at %s; stop them first (nothing was removed)", name, len(u.IDs), u.Dir))
	}
	ctx, cancel := p.call()
	defer cancel()
	err := p.vols.Remove(ctx, name)
	switch {
	case errors.Is(err, ErrNotFound):
		p.log.Info("docker: remove of a volume that does not exist", "volume", name)
		return nil
	case errors.Is(err, ErrInUse):
		return p.refuse("remove", name, fmt.Errorf("volume %q is in use on %s; stop the containers using it there first (nothing was removed)",
			name, hostList(p.holders(ctx, name))))
	case err != nil:
		return p.failed(ctx, "remove", name, fmt.Sprintf("removing volume %q", name), err)
	}
	p.log.Info("docker: volume removed", "volume", name)
	return nil
}

// Mount mounts the volume for Docker mount req.ID. The first Mount of a
// volume on this host attaches and mounts it; later ones share the mount.
// A Mount repeated with the same ID counts once.
func (p *Plugin) Mount(req *volume.MountRequest) (*volume.MountResponse, error) {
	name := req.Name
	if err := volspec.ValidateName(name); err != nil {
		return nil, p.refuse("mount", name, err)
	}
	unlock := p.locks.lock(name)
	defer unlock()
	dir := p.dir(name)
	u, inUse := p.mounts.get(name)
	if inUse {
		dir = u.Dir // where it was mounted, even if the mount root has changed since
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, p.refuse("mount", name, fmt.Errorf("mounting volume %q: creating the mount point %s: %w", name, dir, err))
	}
	ctx, cancel := p.call()
	defer cancel()
	// Always asked, also when the volume is in use already: it is a no-op
	// on a live mount and mounts afresh when the mount process has died.
	if err := p.vols.Mount(ctx, name, dir); err != nil {
		if !inUse {
			os.Remove(dir)
		}
		if others := p.holders(ctx, name); errors.Is(err, ErrInUse) && len(others) > 0 {
			return nil, p.refuse("mount", name, fmt.Errorf("volume %q is in use on %s; stop the containers using it there, "+
				"or, if that host is dead, mount again once it has been dead for the failover timeout "+
				"(\"brick volume attach --force %s\" takes it over at once)", name, hostList(others), name))
		}
		if errors.Is(err, ErrNotFound) {
			return nil, p.refuse("mount", name, fmt.Errorf("no such volume %q in the brick cluster", name))
		}
		return nil, p.failed(ctx, "mount", name, fmt.Sprintf("mounting volume %q at %s", name, dir), err)
	}
	added, err := p.mounts.add(name, dir, req.ID)
	if err != nil {
		if !inUse {
			if uerr := p.vols.Unmount(ctx, name, dir); uerr != nil {
				p.log.Warn("docker: undoing a mount whose state could not be saved", "volume", name, "dir", dir, "err", uerr)
			}
		}
		return nil, p.refuse("mount", name, fmt.Errorf("mounting volume %q: %w", name, err))
	}
	u, _ = p.mounts.get(name)
	p.log.Info("docker: volume mounted", "volume", name, "dir", dir, "id", req.ID, "new_id", added, "mounts", len(u.IDs))
	return &volume.MountResponse{Mountpoint: dir}, nil
}

// Unmount releases Docker mount req.ID. The last one unmounts the volume
// and detaches it from this host. An ID the plugin does not know is
// released already.
func (p *Plugin) Unmount(req *volume.UnmountRequest) error {
	name := req.Name
	if err := volspec.ValidateName(name); err != nil {
		return p.refuse("unmount", name, err)
	}
	unlock := p.locks.lock(name)
	defer unlock()
	u, ok := p.mounts.get(name)
	known := false
	for _, id := range u.IDs {
		known = known || id == req.ID
	}
	if !ok || !known {
		p.log.Warn("docker: unmount of a mount ID this plugin does not know; nothing to do", "volume", name, "id", req.ID)
		return nil
	}
	if len(u.IDs) > 1 {
		if err := p.mounts.remove(name, req.ID); err != nil {
			return p.refuse("unmount", name, fmt.Errorf("unmounting volume %q: %w", name, err))
		}
		p.log.Info("docker: volume released; still mounted for others", "volume", name, "id", req.ID, "mounts", len(u.IDs)-1)
		return nil
	}
	ctx, cancel := p.call()
	defer cancel()
	uerr := p.vols.Unmount(ctx, name, u.Dir)
	// The ID is forgotten even when unmounting failed: Docker does not
	// retry, and a count that can never reach zero would keep the volume
	// attached here for good. The next Mount reuses or replaces the mount.
	if err := p.mounts.remove(name, req.ID); err != nil {
		return p.refuse("unmount", name, fmt.Errorf("unmounting volume %q: %w", name, err))
	}
	if uerr != nil {
		return p.failed(ctx, "unmount", name, fmt.Sprintf("unmounting volume %q from %s", name, u.Dir), uerr)
	}
	os.Remove(u.Dir)
	p.log.Info("docker: volume unmounted and detached from this host", "volume", name, "dir", u.Dir, "id", req.ID)
	return nil
}

// Path is where the volume is mounted on this host, "" when it is not.
func (p *Plugin) Path(req *volume.PathRequest) (*volume.PathResponse, error) {
	if err := volspec.ValidateName(req.Name); err != nil {
		return nil, p.refuse("path", req.Name, err)
	}
	u, _ := p.mounts.get(req.Name)
	return &volume.PathResponse{Mountpoint: u.Dir}, nil
}

// Get describes a volume, with its status as brick sees it: layout, state,
// head, epoch, in-sync set, attachments and heal progress, so that docker
// volume inspect tells the truth.
func (p *Plugin) Get(req *volume.GetRequest) (*volume.GetResponse, error) {
	name := req.Name
	if err := volspec.ValidateName(name); err != nil {
		return nil, p.refuse("get", name, err)
	}
	ctx, cancel := p.call()
	defer cancel()
	v, err := p.vols.Get(ctx, name)
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("no such volume %q in the brick cluster", name)
	}
	if err != nil {
		return nil, p.failed(ctx, "get", name, fmt.Sprintf("looking up volume %q", name), err)
	}
	u, _ := p.mounts.get(name)
	dv := p.dockerVolume(v)
	dv.Status = p.status(v, u)
	return &volume.GetResponse{Volume: dv}, nil
}

// List lists every volume of the cluster.
func (p *Plugin) List() (*volume.ListResponse, error) {
	ctx, cancel := p.call()
	defer cancel()
	vs, err := p.vols.List(ctx)
	if err != nil {
		return nil, p.failed(ctx, "list", "", "listing volumes", err)
	}
	out := &volume.ListResponse{Volumes: make([]*volume.Volume, 0, len(vs))}
	for _, v := range vs {
		out.Volumes = append(out.Volumes, p.dockerVolume(v))
	}
	sort.Slice(out.Volumes, func(i, j int) bool { return out.Volumes[i].Name < out.Volumes[j].Name })
	return out, nil
}

func (p *Plugin) dockerVolume(v Volume) *volume.Volume {
	u, _ := p.mounts.get(v.Name)
	dv := &volume.Volume{Name: v.Name, Mountpoint: u.Dir}
	if !v.CreatedAt.IsZero() {
		dv.CreatedAt = v.CreatedAt.UTC().Format(time.RFC3339)
	}
	return dv
}

// status is the Status map of docker volume inspect. Docker's type is a
// map of any; it is built here from typed fields only.
func (p *Plugin) status(v Volume, u mountUse) map[string]any {
	st := map[string]any{
		"state":    v.State,
		"layout":   v.Layout,
		"size":     volspec.FormatSize(v.SizeBytes),
		"access":   v.Access,
		"min-isr":  v.MinISR,
		"epoch":    v.Epoch,
		"head":     orDash(v.Head),
		"in-sync":  fmt.Sprintf("%s (%d of %d)", orDash(strings.Join(v.InSync, ",")), len(v.InSync), len(v.Placement)),
		"bricks":   orDash(strings.Join(v.Placement, ",")),
		"attached": orDash(strings.Join(v.Attached, ",")),
		"heal":     orDash(v.Heal),
	}
	if v.StateReason != "" {
		st["reason"] = v.StateReason
	}
	if len(u.IDs) > 0 {
		st["mounted-here"] = fmt.Sprintf("%s for %d container mount(s)", u.Dir, len(u.IDs))
	}
	return st
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// holders are the hosts other than this one that hold the volume.
func (p *Plugin) holders(ctx context.Context, name string) []string {
	v, err := p.vols.Get(ctx, name)
	if err != nil {
		return nil
	}
	var out []string
	for _, h := range v.Attached {
		if h != p.cfg.Host {
			out = append(out, h)
		}
	}
	return out
}

// hostList names hosts for a message: "host a", "hosts a, b".
func hostList(hosts []string) string {
	switch len(hosts) {
	case 0:
		return "another host"
	case 1:
		return "host " + hosts[0]
	}
	return "hosts " + strings.Join(hosts, ", ")
}

// refuse logs and returns err, whose text is the sentence Docker shows.
func (p *Plugin) refuse(op, name string, err error) error {
	p.log.Warn("docker: request refused", "op", op, "volume", name, "err", err)
	return err
}

// failed turns a failure of Volumes into the sentence Docker shows: what
// was being done, then brick's reason.
func (p *Plugin) failed(ctx context.Context, op, name, doing string, err error) error {
	var msg string
	switch {
	case ctx.Err() != nil && p.ctx.Err() == nil:
		msg = fmt.Sprintf("%s: no answer within %v (brickd --docker-timeout); see the brickd log", doing, p.cfg.Timeout)
	case p.ctx.Err() != nil:
		msg = fmt.Sprintf("%s: brickd is shutting down; try again once it is back", doing)
	default:
		msg = fmt.Sprintf("%s: %s", doing, strings.TrimSpace(err.Error()))
	}
	p.log.Warn("docker: request failed", "op", op, "volume", name, "err", err)
	return &failure{msg: msg, err: err}
}

// failure is an error Docker sees as msg and Go code can still match
// against the cause with errors.Is.
type failure struct {
	msg string
	err error
}

func (f *failure) Error() string { return f.msg }
func (f *failure) Unwrap() error { return f.err }

// keyedMutex is one mutex per key, created on demand and dropped when
// unused, so requests for one volume are serialised and others are not.
type keyedMutex struct {
	mu sync.Mutex
	m  map[string]*keyedEntry
}

type keyedEntry struct {
	mu    sync.Mutex
	users int
}

func (k *keyedMutex) lock(key string) (unlock func()) {
	k.mu.Lock()
	if k.m == nil {
		k.m = map[string]*keyedEntry{}
	}
	e, ok := k.m[key]
	if !ok {
		e = &keyedEntry{}
		k.m[key] = e
	}
	e.users++
	k.mu.Unlock()
	e.mu.Lock()
	return func() {
		e.mu.Unlock()
		k.mu.Lock()
		e.users--
		if e.users == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
}
