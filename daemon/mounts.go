package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/brickvol/brick/control"
	"github.com/brickvol/brick/internal/atomicfile"
	"github.com/brickvol/brick/internal/sysmon"
	"github.com/brickvol/brick/proto/brickpb"
	"github.com/brickvol/brick/volspec"
)

// A mount is served by a process of its own (design.md, "Mount process"),
// started detached (its own session) so that brickd can stop, restart or
// upgrade under it. brickd keeps a record per mount under
// data-dir/mounts/ to find it again after a restart.

// MountRecord is what brickd remembers about a mount process.
type MountRecord struct {
	Volume   string    `json:"volume"`
	VolumeID string    `json:"volume_id"`
	Dir      string    `json:"dir"`
	PID      int       `json:"pid"`
	Epoch    uint64    `json:"epoch"`
	Log      string    `json:"log"`
	Started  time.Time `json:"started"`
}

func (d *Daemon) mountsDir() string { return filepath.Join(d.cfg.DataDir, "mounts") }

func (d *Daemon) recordPath(dir string) string {
	h := sha256.Sum256([]byte(dir))
	return filepath.Join(d.mountsDir(), hex.EncodeToString(h[:8])+".json")
}

func (d *Daemon) readRecord(dir string) (*MountRecord, error) {
	b, err := os.ReadFile(d.recordPath(dir))
	if err != nil {
		return nil, err
	}
	var r MountRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("mount record %s is corrupt: %w", d.recordPath(dir), err)
	}
	return &r, nil
}

func (d *Daemon) records() []*MountRecord {
	ents, _ := os.ReadDir(d.mountsDir())
	var out []*MountRecord
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(d.mountsDir(), e.Name()))
		if err != nil {
			continue
		}
		var r MountRecord
		if json.Unmarshal(b, &r) == nil {
			out = append(out, &r)
		}
	}
	return out
}

func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// isMountPoint reports whether dir is a mount point (per /proc/self/mountinfo).
func isMountPoint(dir string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && unescapeMountinfo(f[4]) == dir {
			return true
		}
	}
	return false
}

func unescapeMountinfo(s string) string {
	r := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)
	return r.Replace(s)
}

// cleanupStaleMounts lazily unmounts the mount points of mount processes
// that died, so no stuck "transport endpoint is not connected" directory
// remains, and forgets their records. Run at daemon start, before a mount
// and every reconcile interval (mountMu held, except at start).
func (d *Daemon) cleanupStaleMounts() {
	for _, r := range d.records() {
		if processAlive(r.PID) {
			continue
		}
		if isMountPoint(r.Dir) {
			if err := syscall.Unmount(r.Dir, syscall.MNT_DETACH); err != nil {
				d.log.Warn("unmounting the mount point of a dead mount process", "dir", r.Dir, "err", err)
				continue
			}
			d.log.Warn("cleaned up the mount point of a dead mount process", "dir", r.Dir, "volume", r.Volume, "pid", r.PID)
		}
		os.Remove(d.recordPath(r.Dir))
		os.Remove(d.statusFile(r.Volume))
		d.goLoop(func(ctx context.Context) { d.releaseStale(ctx, r) })
	}
}

// liveMount reports whether a mount process of volume runs on this host.
func (d *Daemon) liveMount(volume string) bool {
	for _, r := range d.records() {
		if r.Volume == volume && processAlive(r.PID) {
			return true
		}
	}
	return false
}

// reapMountsLoop notices, every reconcile interval, a mount process of this
// host that died while brickd runs (a crash, an OOM kill) and cleans up
// after it at once: its mount point, and its attachment, so a single
// volume can be taken over and a shared volume's head passes to another
// mounting host without waiting for this host to be declared dead.
func (d *Daemon) reapMountsLoop(ctx context.Context) {
	t := time.NewTicker(d.cfg.ReconcileInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		d.mountMu.Lock()
		d.cleanupStaleMounts()
		d.mountMu.Unlock()
	}
}

// releaseStale detaches the volume of a dead mount process from this host
// if it is still attached here at that mount's epoch: a host whose mount
// died (a crash, a reboot) must not keep holding the volume, or nobody
// could take it over while this daemon is alive. It waits for the cluster
// (it runs at start, before Raft has a leader) for up to ten minutes.
func (d *Daemon) releaseStale(ctx context.Context, r *MountRecord) {
	for i := 0; i < 300; i++ {
		done, err := func() (bool, error) {
			d.mountMu.Lock() // a new mount of this host must not race the check
			defer d.mountMu.Unlock()
			st := d.node.FSM().State()
			v, ok := st.Volumes[control.VolumeID(r.VolumeID)]
			if !ok {
				return true, nil
			}
			i := slices.IndexFunc(v.Attachments, func(a control.Attachment) bool { return a.Brick == d.id })
			switch {
			case i < 0:
				return true, nil
			case v.Access == control.AccessShared:
				// A shared attachment's epoch moves when this host takes
				// the head over; what matters is whether a mount of it
				// still runs here.
				if d.liveMount(r.Volume) {
					return true, nil
				}
			case v.Attachments[i].Epoch != r.Epoch:
				return true, nil // a newer mount of this host holds it
			}
			hdr := d.selfHeader()
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			_, err := (&controlService{d: d}).DetachVolume(cctx, &brickpb.DetachVolumeRequest{Header: hdr, Name: r.Volume, Host: d.cfg.Name})
			if err == nil || isNotFound(err) {
				d.log.Warn("detached the volume of a mount process that died", "volume", r.Volume, "epoch", r.Epoch, "dir", r.Dir)
				return true, nil
			}
			return false, err
		}()
		if done {
			return
		}
		d.log.Debug("detaching the volume of a dead mount process; retrying", "volume", r.Volume, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Second):
		}
	}
}

func (s *controlService) MountVolume(ctx context.Context, req *brickpb.MountVolumeRequest) (*brickpb.MountVolumeResponse, error) {
	d := s.d
	if err := volspec.ValidateName(req.Name); err != nil {
		return nil, invalid("%v", err)
	}
	dir := filepath.Clean(req.Dir)
	if !filepath.IsAbs(dir) {
		return nil, invalid("mount directory %q must be an absolute path", req.Dir)
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return nil, invalid("mount directory %s does not exist or is not a directory", dir)
	}
	d.mountMu.Lock()
	defer d.mountMu.Unlock()
	d.cleanupStaleMounts()
	if r, err := d.readRecord(dir); err == nil && processAlive(r.PID) {
		if r.Volume == req.Name {
			return &brickpb.MountVolumeResponse{Dir: dir, Pid: int32(r.PID), Log: r.Log}, nil // idempotent
		}
		return nil, status.Errorf(codes.FailedPrecondition, "%s is already a mount point of volume %s (pid %d)", dir, r.Volume, r.PID)
	}
	if isMountPoint(dir) {
		return nil, status.Errorf(codes.FailedPrecondition, "%s is already a mount point", dir)
	}
	for _, r := range d.records() {
		if r.Volume == req.Name && processAlive(r.PID) {
			return nil, status.Errorf(codes.FailedPrecondition, "volume %s is already mounted on this host at %s", req.Name, r.Dir)
		}
	}
	// A fresh mount process always starts a new epoch (renew), so a mount
	// process of this host that is wedged rather than dead is fenced too.
	hdr := d.selfHeader()
	att, err := s.AttachVolume(ctx, &brickpb.AttachVolumeRequest{Header: hdr, Name: req.Name, Host: d.cfg.Name,
		Force: req.Force, Renew: true})
	if err != nil {
		return nil, err
	}
	vol := att.Volume
	rec, err := d.startMountProcess(ctx, vol, dir)
	if err != nil {
		if _, derr := s.DetachVolume(context.WithoutCancel(ctx), &brickpb.DetachVolumeRequest{Header: hdr, Name: req.Name, Host: d.cfg.Name}); derr != nil {
			d.log.Warn("detaching after a failed mount", "volume", req.Name, "err", derr)
		}
		return nil, err
	}
	return &brickpb.MountVolumeResponse{Volume: vol, Dir: dir, Pid: int32(rec.PID), Log: rec.Log}, nil
}

// startMountProcess execs "brickd mount-process" detached and waits until it
// reports the file system mounted, or its error.
func (d *Daemon) startMountProcess(ctx context.Context, vol *brickpb.Volume, dir string) (*MountRecord, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("finding the brickd executable: %w", err)
	}
	if err := os.MkdirAll(d.mountsDir(), 0o700); err != nil {
		return nil, fmt.Errorf("creating %s: %w", d.mountsDir(), err)
	}
	logPath := filepath.Join(d.mountsDir(), vol.Name+".log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening mount log %s: %w", logPath, err)
	}
	defer logf.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer pr.Close()
	cmd := exec.Command(exe, "mount-process")
	// Not this daemon's steady monitor thread: a mount process measured
	// faster with Go's default (package sysmon).
	cmd.Env = append(sysmon.Strip(os.Environ()),
		"BRICK_MOUNT_VOLUME="+vol.Name,
		"BRICK_MOUNT_DIR="+dir,
		fmt.Sprintf("BRICK_MOUNT_EPOCH=%d", vol.Epoch),
		"BRICK_MOUNT_DAEMON="+d.cfg.addr(d.cfg.GRPCPort),
		"BRICK_MOUNT_BRICK_ID="+string(d.id),
		"BRICK_CLUSTER_KEY="+d.secret,
		"BRICK_LOG_LEVEL="+d.cfg.MountLogLevel,
		fmt.Sprintf("BRICK_REPLICA_TIMEOUT=%s", d.cfg.ReplicaTimeout),
		"BRICK_MOUNT_STATUS_FILE="+d.statusFile(vol.Name),
		fmt.Sprintf("BRICK_HEAL_BANDWIDTH=%d", d.cfg.HealBandwidth),
		fmt.Sprintf("BRICK_MOUNT_FAILOVER_TIMEOUT=%s", d.cfg.FailoverTimeout),
		fmt.Sprintf("BRICK_MOUNT_NAME_CACHE=%d", d.cfg.NameCache),
		fmt.Sprintf("BRICK_MOUNT_REPLICATION_LINGER=%s", d.cfg.ReplicationLinger),
		"BRICK_MOUNT_REPLICATION_STREAM="+d.cfg.ReplicationStream,
	)
	if p, err := d.store.Path(vol.Id); err == nil && d.cfg.LocalReads && !d.cfg.NoDisk {
		cmd.Env = append(cmd.Env, "BRICK_MOUNT_REPLICA_DIR="+p)
	}
	if d.cfg.MountProcs > 0 {
		cmd.Env = append(cmd.Env, fmt.Sprintf("GOMAXPROCS=%d", d.cfg.MountProcs))
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{pw} // fd 3: "ready" or an error line
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		pw.Close()
		return nil, fmt.Errorf("starting the mount process: %w", err)
	}
	pw.Close()
	if d.cfg.MountCgroup != "" {
		if err := moveToCgroup("/proc/self/mountinfo", cmd.Process.Pid, d.cfg.MountCgroup); err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			return nil, status.Errorf(codes.FailedPrecondition,
				"mounting %s at %s: --mount-cgroup %s: %v (unset it to keep mount processes in brickd's cgroup)", vol.Name, dir, d.cfg.MountCgroup, err)
		}
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	line := make(chan string, 1)
	go func() {
		buf := make([]byte, 4096)
		n, _ := pr.Read(buf)
		line <- strings.TrimSpace(string(buf[:n]))
	}()
	rec := &MountRecord{Volume: vol.Name, VolumeID: vol.Id, Dir: dir, PID: cmd.Process.Pid, Epoch: vol.Epoch, Log: logPath, Started: time.Now()}
	select {
	case l := <-line:
		if l != "ready" {
			cmd.Process.Kill()
			if l == "" {
				l = "the mount process exited without a word; see " + logPath
			}
			return nil, status.Errorf(codes.Internal, "mounting %s at %s: %s", vol.Name, dir, l)
		}
	case <-ctx.Done():
		cmd.Process.Kill()
		return nil, status.Errorf(codes.DeadlineExceeded, "mounting %s at %s: the mount process did not become ready in time; see %s", vol.Name, dir, logPath)
	}
	b, _ := json.Marshal(rec)
	if err := atomicfile.Write(d.recordPath(dir), b); err != nil {
		return nil, fmt.Errorf("recording the mount: %w", err)
	}
	go func() { <-exited }() // reap; the process outlives us if brickd stops
	d.log.Info("volume mounted", "volume", vol.Name, "dir", dir, "pid", rec.PID, "epoch", vol.Epoch)
	return rec, nil
}

func (s *controlService) UnmountVolume(ctx context.Context, req *brickpb.UnmountVolumeRequest) (*brickpb.UnmountVolumeResponse, error) {
	d := s.d
	dir := filepath.Clean(req.Dir)
	if !filepath.IsAbs(dir) {
		return nil, invalid("mount directory %q must be an absolute path", req.Dir)
	}
	d.mountMu.Lock()
	defer d.mountMu.Unlock()
	r, err := d.readRecord(dir)
	if err != nil {
		return nil, status.Errorf(codes.NotFound, "%s is not a brick mount on this host", dir)
	}
	if processAlive(r.PID) {
		syscall.Kill(r.PID, syscall.SIGTERM)
		deadline := time.Now().Add(30 * time.Second)
		for processAlive(r.PID) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if processAlive(r.PID) {
			return nil, status.Errorf(codes.FailedPrecondition, "the mount process of %s (pid %d) did not stop within 30 s: is the mount busy? see %s", dir, r.PID, r.Log)
		}
	}
	if isMountPoint(dir) {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			d.log.Warn("lazy unmount", "dir", dir, "err", err)
		}
	}
	os.Remove(d.recordPath(dir))
	os.Remove(d.statusFile(r.Volume))
	if !req.KeepAttached {
		hdr := d.selfHeader()
		if _, err := s.DetachVolume(ctx, &brickpb.DetachVolumeRequest{Header: hdr, Name: r.Volume, Host: d.cfg.Name}); err != nil &&
			!isNotFound(err) {
			return nil, fmt.Errorf("unmounted %s, but detaching %s failed: %w", dir, r.Volume, err)
		}
	}
	d.log.Info("volume unmounted", "volume", r.Volume, "dir", dir)
	return &brickpb.UnmountVolumeResponse{Name: r.Volume, Dir: dir}, nil
}

// isNotFound holds for a NotFound status (forwarded) or ErrNotFound (local).
func isNotFound(err error) bool {
	return errors.Is(err, control.ErrNotFound) || status.Code(err) == codes.NotFound
}
