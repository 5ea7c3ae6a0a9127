package csi

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/brickvol/brick/volspec"
)

// reservedPrefix marks parameters the external-provisioner adds or
// reserves (--extra-create-metadata, secrets, fstype); they are not volume
// options.
const reservedPrefix = "csi.storage.k8s.io/"

// Labels the driver records from the provisioner's extra metadata, so
// `brick volume ls` shows which claim a volume belongs to.
const (
	labelPVCName      = "csi.storage.k8s.io/pvc-name"
	labelPVCNamespace = "csi.storage.k8s.io/pvc-namespace"
	labelPVName       = "csi.storage.k8s.io/pv-name"
)

var metadataLabels = map[string]string{
	"csi.storage.k8s.io/pvc/name":      labelPVCName,
	"csi.storage.k8s.io/pvc/namespace": labelPVCNamespace,
	"csi.storage.k8s.io/pv/name":       labelPVName,
}

// parseParameters turns StorageClass parameters into a partial spec:
// replicas, ec, minIsr (or min-isr), access and label are volume options;
// size is refused (the claim's storage request is the size); keys under
// csi.storage.k8s.io/ are the provisioner's and are skipped, except the
// claim's name and namespace, which become labels. Anything else is
// refused with the list of known keys.
func parseParameters(params map[string]string) (volspec.Spec, error) {
	opts := map[string]string{}
	extra := map[string]string{}
	for k, v := range params {
		switch {
		case metadataLabels[k] != "":
			if volspec.ValidateLabel(metadataLabels[k], v) == nil {
				extra[metadataLabels[k]] = v
			}
		case strings.HasPrefix(k, reservedPrefix):
		case k == volspec.OptSize:
			return volspec.Spec{}, fmt.Errorf("parameter %q is not accepted: the size is the claim's storage request (capacity range)", k)
		default:
			opts[k] = v
		}
	}
	spec, err := volspec.ParseOptions(opts)
	if err != nil {
		return volspec.Spec{}, fmt.Errorf("parameters: %w", err)
	}
	if len(extra) > 0 {
		if spec.Labels == nil {
			spec.Labels = map[string]string{}
		}
		for k, v := range extra {
			spec.Labels[k] = v
		}
	}
	return spec, nil
}

// accessOf maps CSI access modes to brick's access: any multi-node mode
// needs a shared volume, single-node modes a single one. Block access and
// unknown modes are refused; so are file system types other than brick's
// and mount flags the bind cannot apply.
func accessOf(caps []*csi.VolumeCapability) (string, error) {
	if len(caps) == 0 {
		return "", fmt.Errorf("no volume capabilities given")
	}
	access := volspec.AccessSingle
	for _, c := range caps {
		if err := checkCapability(c); err != nil {
			return "", err
		}
		if isMultiNode(c.GetAccessMode().GetMode()) {
			access = volspec.AccessShared
		}
	}
	return access, nil
}

func isMultiNode(m csi.VolumeCapability_AccessMode_Mode) bool {
	switch m {
	case csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY,
		csi.VolumeCapability_AccessMode_MULTI_NODE_SINGLE_WRITER,
		csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER:
		return true
	}
	return false
}

func isReaderOnly(m csi.VolumeCapability_AccessMode_Mode) bool {
	return m == csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY ||
		m == csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY
}

// fsTypes are the fs_type values a mount capability may carry: none (the
// usual), or brick's own.
var fsTypes = map[string]bool{"": true, "brick": true, "fuse": true, "fuse.brick": true}

// checkCapability refuses what brick cannot serve: block volumes, an
// unknown access mode, a foreign file system type, unsupported mount flags.
func checkCapability(c *csi.VolumeCapability) error {
	if c == nil {
		return fmt.Errorf("a volume capability is empty")
	}
	if c.GetBlock() != nil {
		return fmt.Errorf("access type block is not supported: brick volumes are file systems (use access type mount)")
	}
	m := c.GetMount()
	if m == nil {
		return fmt.Errorf("a volume capability has no access type (use mount)")
	}
	if !fsTypes[m.GetFsType()] {
		return fmt.Errorf("file system type %q is not supported: brick volumes are brick's own FUSE file system (leave fs_type empty)", m.GetFsType())
	}
	if _, err := mountOptions(m.GetMountFlags()); err != nil {
		return err
	}
	switch c.GetAccessMode().GetMode() {
	case csi.VolumeCapability_AccessMode_UNKNOWN:
		return fmt.Errorf("a volume capability has no access mode")
	case csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY,
		csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER, csi.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER,
		csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY, csi.VolumeCapability_AccessMode_MULTI_NODE_SINGLE_WRITER,
		csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER:
		return nil
	}
	return fmt.Errorf("access mode %v is not known to this driver", c.GetAccessMode().GetMode())
}

// mountOptions parses the mount flags a bind can honour.
func mountOptions(flags []string) (MountOptions, error) {
	var o MountOptions
	for _, f := range flags {
		switch f {
		case "ro":
			o.ReadOnly = true
		case "rw", "defaults":
		case "nosuid":
			o.NoSuid = true
		case "nodev":
			o.NoDev = true
		case "noexec":
			o.NoExec = true
		case "noatime":
			o.NoAtime = true
		default:
			return o, fmt.Errorf("mount flag %q is not supported (supported: ro, rw, nosuid, nodev, noexec, noatime)", f)
		}
	}
	return o, nil
}

// fitsAccess reports why capabilities cannot be served by a volume of the
// given access, or "" when they can.
func fitsAccess(access string, caps []*csi.VolumeCapability) string {
	for _, c := range caps {
		if err := checkCapability(c); err != nil {
			return err.Error()
		}
		if access == volspec.AccessSingle && isMultiNode(c.GetAccessMode().GetMode()) {
			return fmt.Sprintf("access mode %v needs a shared volume; this one is access=single", c.GetAccessMode().GetMode())
		}
	}
	return ""
}

// brickName maps a CSI volume name to a brick volume name: the name itself
// when brick accepts it, else up to 47 of its valid characters, '-' and 16
// hex digits of its SHA-256 (deterministic, so CreateVolume stays
// idempotent by name).
func brickName(name string) string {
	if volspec.ValidateName(name) == nil {
		return name
	}
	var b strings.Builder
	for i := 0; i < len(name) && b.Len() < 47; i++ {
		c := name[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' ||
			(c == '.' && b.Len() > 0 && !strings.HasSuffix(b.String(), ".")) {
			if b.Len() == 0 && (c == '-' || c == '_') {
				continue
			}
			b.WriteByte(c)
		}
	}
	sum := sha256.Sum256([]byte(name))
	prefix := strings.TrimRight(b.String(), ".")
	if prefix == "" {
		prefix = "csi"
	}
	return prefix + "-" + hex.EncodeToString(sum[:8])
}

// sizeFor picks a volume size from a capacity range: the required bytes,
// else the default size capped by the limit. ok false means the range is
// contradictory.
func sizeFor(r *csi.CapacityRange) (uint64, error) {
	req, lim := r.GetRequiredBytes(), r.GetLimitBytes()
	if req < 0 || lim < 0 {
		return 0, fmt.Errorf("capacity range %d..%d: bytes may not be negative", req, lim)
	}
	if lim > 0 && req > lim {
		return 0, fmt.Errorf("capacity range: required %d bytes exceeds the limit of %d bytes", req, lim)
	}
	switch {
	case req > 0:
		return uint64(req), nil
	case lim > 0:
		return min(uint64(lim), volspec.DefaultSize), nil
	}
	return volspec.DefaultSize, nil
}

// sizeFits reports whether an existing size lies in a capacity range.
func sizeFits(size uint64, r *csi.CapacityRange) bool {
	if req := r.GetRequiredBytes(); req > 0 && size < uint64(req) {
		return false
	}
	if lim := r.GetLimitBytes(); lim > 0 && size > uint64(lim) {
		return false
	}
	return true
}

// sameOptions says how an existing volume differs from a requested spec
// (with defaults filled), or "" when it matches.
func sameOptions(v *Volume, s volspec.Spec) string {
	var diffs []string
	if v.Layout != s.Layout {
		diffs = append(diffs, fmt.Sprintf("layout %s, not %s", v.Layout, s.Layout))
	}
	if v.Access != s.Access {
		diffs = append(diffs, fmt.Sprintf("access %s, not %s", v.Access, s.Access))
	}
	if v.MinISR != s.MinISR {
		diffs = append(diffs, fmt.Sprintf("min-isr %d, not %d", v.MinISR, s.MinISR))
	}
	sort.Strings(diffs)
	return strings.Join(diffs, ", ")
}

// ValidateParameters checks StorageClass parameters as CreateVolume would,
// without the access modes (tests of the deploy manifests use it).
func ValidateParameters(params map[string]string) error {
	spec, err := parseParameters(params)
	if err != nil {
		return err
	}
	spec.Name = "check"
	spec.Defaults()
	return spec.Validate()
}
