package daemon

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/brickvol/brick/plugin/docker"
	"github.com/brickvol/brick/proto/brickpb"
	"github.com/brickvol/brick/volspec"
)

// startDockerPlugin serves the Docker volume plugin protocol on
// --docker-socket, until the daemon stops. It never keeps the daemon from
// starting: several daemons may share one machine (tests, make up) and
// only one of them can be Docker's "brick", so a socket that another
// brickd serves, or that cannot be created, is logged and skipped.
//
// Ownership of the socket is an flock on SOCKET.lock beside it, held for
// the daemon's life (released by the kernel if it dies), so a socket file
// left by a daemon that died is known to be stale and is replaced.
func (d *Daemon) startDockerPlugin() {
	path := d.cfg.DockerSocket
	if path == "" {
		return
	}
	warn := func(msg string, err error) {
		d.log.Warn(msg+"; this daemon serves no Docker volume plugin", "socket", path, "err", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		warn("cannot create the Docker plugin socket's directory", err)
		return
	}
	lock, err := os.OpenFile(path+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		warn("cannot open the Docker plugin socket's lock", err)
		return
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		warn("the Docker plugin socket is served by another brickd", err)
		return
	}
	os.Remove(path) // ours now: whatever is there is stale
	l, err := net.Listen("unix", path)
	if err == nil {
		err = os.Chmod(path, 0o660)
	}
	if err != nil {
		if l != nil {
			l.Close()
		}
		lock.Close()
		warn("cannot listen on the Docker plugin socket", err)
		return
	}
	root := d.cfg.DockerMountRoot
	if root == "" {
		root = filepath.Join(d.cfg.DataDir, "docker")
	}
	p, err := docker.New(docker.Config{
		Volumes:   &dockerVolumes{d: d, s: &controlService{d: d}},
		Host:      d.cfg.Name,
		MountRoot: root,
		StateFile: filepath.Join(d.cfg.DataDir, "docker-mounts.json"),
		Timeout:   d.cfg.DockerTimeout,
		Logger:    d.log.With("component", "docker"),
	})
	if err != nil {
		l.Close()
		lock.Close()
		warn("cannot start the Docker volume plugin", err)
		return
	}
	d.serve(func() error { return p.Serve(l) })
	d.goLoop(func(ctx context.Context) {
		<-ctx.Done()
		l.Close() // unlinks the socket
		p.Close()
		lock.Close()
	})
	d.log.Info("serving the Docker volume plugin", "socket", path, "driver", driverName(path), "mount_root", root)
}

// driverName is the name Docker knows a plugin socket by.
func driverName(socket string) string {
	base := filepath.Base(socket)
	return base[:len(base)-len(filepath.Ext(base))]
}

// dockerVolumes implements docker.Volumes on this daemon's control
// service, in-process: every call is validated, forwarded to the Raft
// leader and answered exactly as the same CLI request would be.
type dockerVolumes struct {
	d *Daemon
	s *controlService
}

func (v *dockerVolumes) header() *brickpb.Header {
	return v.d.selfHeader()
}

// dockerErr maps a control-service error to the plugin's kinds, keeping
// the daemon's message as the text.
func dockerErr(err error) error {
	if err == nil {
		return nil
	}
	st, _ := status.FromError(toStatus(err))
	var kind error
	switch st.Code() {
	case codes.NotFound:
		kind = docker.ErrNotFound
	case codes.AlreadyExists:
		kind = docker.ErrExists
	case codes.FailedPrecondition:
		kind = docker.ErrInUse
	case codes.InvalidArgument:
		kind = docker.ErrInvalid
	case codes.Unavailable, codes.DeadlineExceeded:
		kind = docker.ErrUnavailable
	}
	return &docker.Error{Kind: kind, Msg: st.Message()}
}

func (v *dockerVolumes) Create(ctx context.Context, spec volspec.Spec) error {
	_, err := v.s.CreateVolume(ctx, &brickpb.CreateVolumeRequest{Header: v.header(), Name: spec.Name, SizeBytes: spec.SizeBytes,
		Replicas: uint32(spec.Layout.Replicas), EcData: uint32(spec.Layout.ECData), EcParity: uint32(spec.Layout.ECParity),
		Access: spec.Access, MinIsr: uint32(spec.MinISR), Labels: spec.Labels})
	return dockerErr(err)
}

func (v *dockerVolumes) Remove(ctx context.Context, name string) error {
	_, err := v.s.DeleteVolume(ctx, &brickpb.DeleteVolumeRequest{Header: v.header(), Name: name})
	return dockerErr(err)
}

func (v *dockerVolumes) Get(ctx context.Context, name string) (docker.Volume, error) {
	resp, err := v.s.GetVolume(ctx, &brickpb.GetVolumeRequest{Header: v.header(), Name: name})
	if err != nil {
		return docker.Volume{}, dockerErr(err)
	}
	return dockerVolume(resp.Volume), nil
}

func (v *dockerVolumes) List(ctx context.Context) ([]docker.Volume, error) {
	resp, err := v.s.ListVolumes(ctx, &brickpb.ListVolumesRequest{Header: v.header()})
	if err != nil {
		return nil, dockerErr(err)
	}
	out := make([]docker.Volume, 0, len(resp.Volumes))
	for _, pv := range resp.Volumes {
		out = append(out, dockerVolume(pv))
	}
	return out, nil
}

func (v *dockerVolumes) Mount(ctx context.Context, name, dir string) error {
	_, err := v.s.MountVolume(ctx, &brickpb.MountVolumeRequest{Header: v.header(), Name: name, Dir: dir})
	return dockerErr(err)
}

// Unmount stops the mount at dir and detaches the volume; with no mount
// there (its process died and was cleaned up) it still detaches, so the
// volume is free for other hosts.
func (v *dockerVolumes) Unmount(ctx context.Context, name, dir string) error {
	_, err := v.s.UnmountVolume(ctx, &brickpb.UnmountVolumeRequest{Header: v.header(), Dir: dir})
	if !isNotFound(err) {
		return dockerErr(err)
	}
	_, err = v.s.DetachVolume(ctx, &brickpb.DetachVolumeRequest{Header: v.header(), Name: name, Host: v.d.cfg.Name})
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return dockerErr(fmt.Errorf("nothing was mounted at %s, and detaching %s failed: %w", dir, name, err))
	}
	return nil
}

// dockerVolume renders a catalog volume for the plugin, with host names.
func dockerVolume(pv *brickpb.Volume) docker.Volume {
	names := map[string]string{}
	out := docker.Volume{
		Name: pv.Name, SizeBytes: pv.SizeBytes, Layout: pv.Layout, Access: pv.Access, MinISR: int(pv.MinIsr),
		State: pv.State, StateReason: pv.StateReason, Epoch: pv.Epoch, Head: pv.HeadName,
	}
	if pv.CreatedUnixMs != 0 {
		out.CreatedAt = time.UnixMilli(pv.CreatedUnixMs)
	}
	for _, p := range pv.Placement {
		names[p.BrickId] = p.BrickName
		out.Placement = append(out.Placement, p.BrickName)
	}
	for _, id := range pv.Isr {
		if n, ok := names[id]; ok {
			id = n
		}
		out.InSync = append(out.InSync, id)
	}
	for _, a := range pv.Attachments {
		out.Attached = append(out.Attached, a.BrickName)
	}
	out.Heal = healText(pv.Heals)
	return out
}

// healText is heal progress in one line for docker volume inspect, e.g.
// "n3 healing (op-log) 73%, 38 MiB and 441 ops left, 12 MiB/s, eta 4s".
func healText(hs []*brickpb.HealProgress) string {
	var parts []string
	for _, h := range hs {
		s := firstNonEmpty(h.BrickName, h.BrickId) + " " + h.State
		if h.Phase != "" {
			s += " (" + h.Phase + ")"
		}
		if h.BytesTotal > 0 && h.BytesRemaining >= 0 {
			s += fmt.Sprintf(" %.0f%%", 100*float64(h.BytesTotal-min(h.BytesRemaining, h.BytesTotal))/float64(h.BytesTotal))
		}
		left := fmt.Sprintf("%d ops", h.OpsRemaining)
		if h.BytesRemaining >= 0 {
			left = volspec.FormatSize(uint64(h.BytesRemaining)) + " and " + left
		}
		s += ", " + left + " left"
		if h.RateBytesPerSec > 0 {
			s += ", " + volspec.FormatSize(uint64(h.RateBytesPerSec)) + "/s"
		}
		if h.EtaMs >= 0 {
			s += ", eta " + (time.Duration(h.EtaMs) * time.Millisecond).Round(time.Second).String()
		}
		if h.Reason != "" && h.State != "healing" {
			s += ": " + h.Reason
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

// validateDocker checks the Docker plugin's settings (part of Validate).
func (c Config) validateDocker() error {
	if c.DockerSocket != "" && !filepath.IsAbs(c.DockerSocket) {
		return fmt.Errorf("--docker-socket %q: want an absolute path (Docker looks in /run/docker/plugins), or empty to disable the plugin", c.DockerSocket)
	}
	if c.DockerMountRoot != "" && !filepath.IsAbs(c.DockerMountRoot) {
		return fmt.Errorf("--docker-mount-root %q: want an absolute directory, or empty for DATA_DIR/docker", c.DockerMountRoot)
	}
	if c.DockerTimeout <= 0 {
		return fmt.Errorf("--docker-timeout %v: must be positive", c.DockerTimeout)
	}
	return nil
}
