package daemon

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/brickvol/brick/control"
	"github.com/brickvol/brick/plugin/csi"
	"github.com/brickvol/brick/proto/brickpb"
)

func TestCSIConfigValidate(t *testing.T) {
	c := DefaultConfig()
	c.Name = "n1"
	for _, ep := range []string{"", "unix:///run/csi/csi.sock", "/var/lib/kubelet/plugins/brick.csi.brickvol.io/csi.sock"} {
		c.CSIEndpoint = ep
		if err := c.Validate(); err != nil {
			t.Errorf("--csi-endpoint %q: %v", ep, err)
		}
	}
	for _, tc := range []struct {
		ep, dir, want string
	}{
		{"tcp://127.0.0.1:1", "/var/lib/kubelet", "--csi-endpoint"},
		{"csi.sock", "/var/lib/kubelet", "--csi-endpoint"},
		{"unix:///run/csi.sock", "kubelet", "--csi-kubelet-dir"},
		{"unix:///run/csi.sock", "/", "--csi-kubelet-dir"},
	} {
		c.CSIEndpoint, c.CSIKubeletDir = tc.ep, tc.dir
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("endpoint %q dir %q: %v, want an error naming %s", tc.ep, tc.dir, err, tc.want)
		}
	}
}

// The adapter hands the driver the control service's errors classified,
// with their messages intact.
func TestCSIErrorsClassified(t *testing.T) {
	for in, want := range map[error]error{
		fmt.Errorf("volume %q: %w", "a", control.ErrNotFound):          csi.ErrNotFound,
		fmt.Errorf("volume %q: %w", "a", control.ErrExists):            csi.ErrExists,
		status.Error(codes.FailedPrecondition, "volume a is attached"): csi.ErrHeld,
		fmt.Errorf("placing: %w", control.ErrInvalid):                  csi.ErrInvalid,
		fmt.Errorf("%w: 1 of 3 voters", errNoLeader):                   csi.ErrUnavailable,
		fmt.Errorf("waiting: %w", context.DeadlineExceeded):            context.DeadlineExceeded,
	} {
		got := csiErr(in)
		if !errors.Is(got, want) {
			t.Errorf("%v: classified as %v, want %v", in, got, want)
		}
		if got.Error() != status.Convert(toStatus(in)).Message() {
			t.Errorf("%v: message %q lost", in, got)
		}
	}
	if csiErr(nil) != nil {
		t.Error("nil error classified")
	}
	if err := csiErr(errors.New("boom")); err == nil || errors.Is(err, csi.ErrNotFound) || err.Error() != "boom" {
		t.Errorf("an unclassified error: %v", err)
	}
}

func TestCSIVolumeConversion(t *testing.T) {
	v := csiVolume(&brickpb.Volume{Id: "v-1", Name: "a", SizeBytes: 5, Replicas: 3, Access: "single", MinIsr: 2, State: "degraded",
		Attachments: []*brickpb.Attachment{{BrickId: "b-1", BrickName: "n1"}}})
	if v.ID != "v-1" || v.Layout.Replicas != 3 || v.MinISR != 2 || len(v.AttachedTo) != 1 || v.AttachedTo[0] != "n1" || v.State != "degraded" {
		t.Fatalf("%+v", v)
	}
}
