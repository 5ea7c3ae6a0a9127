package kubernetes

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	"sigs.k8s.io/yaml"

	"github.com/brickvol/brick/plugin/csi"
)

// object is one decoded manifest document.
type object struct {
	file string
	kind string
	obj  any
}

// newObject returns an empty typed object for apiVersion/kind.
func newObject(apiVersion, kind string) (any, error) {
	switch apiVersion + "/" + kind {
	case "v1/Namespace":
		return &corev1.Namespace{}, nil
	case "v1/ServiceAccount":
		return &corev1.ServiceAccount{}, nil
	case "v1/Secret":
		return &corev1.Secret{}, nil
	case "v1/Service":
		return &corev1.Service{}, nil
	case "apps/v1/DaemonSet":
		return &appsv1.DaemonSet{}, nil
	case "apps/v1/Deployment":
		return &appsv1.Deployment{}, nil
	case "rbac.authorization.k8s.io/v1/ClusterRole":
		return &rbacv1.ClusterRole{}, nil
	case "rbac.authorization.k8s.io/v1/ClusterRoleBinding":
		return &rbacv1.ClusterRoleBinding{}, nil
	case "rbac.authorization.k8s.io/v1/Role":
		return &rbacv1.Role{}, nil
	case "rbac.authorization.k8s.io/v1/RoleBinding":
		return &rbacv1.RoleBinding{}, nil
	case "storage.k8s.io/v1/CSIDriver":
		return &storagev1.CSIDriver{}, nil
	case "storage.k8s.io/v1/StorageClass":
		return &storagev1.StorageClass{}, nil
	}
	return nil, fmt.Errorf("apiVersion %q kind %q is not one the manifests should use", apiVersion, kind)
}

var docSep = regexp.MustCompile(`(?m)^---\s*$`)

// load decodes every document of every YAML file here, strictly: unknown
// or duplicate fields fail.
func load(t *testing.T) []object {
	t.Helper()
	files, err := filepath.Glob("*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	var out []object
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range docSep.Split(string(b), -1) {
			if strings.TrimSpace(stripComments(doc)) == "" {
				continue
			}
			var meta struct {
				APIVersion string `json:"apiVersion"`
				Kind       string `json:"kind"`
			}
			if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
				t.Fatalf("%s document %d: %v", f, i+1, err)
			}
			obj, err := newObject(meta.APIVersion, meta.Kind)
			if err != nil {
				t.Fatalf("%s document %d: %v", f, i+1, err)
			}
			if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
				t.Fatalf("%s document %d (%s): %v", f, i+1, meta.Kind, err)
			}
			out = append(out, object{file: f, kind: meta.Kind, obj: obj})
		}
	}
	return out
}

func stripComments(doc string) string {
	var b bytes.Buffer
	for _, l := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

func TestManifestsDecodeStrictly(t *testing.T) {
	objs := load(t)
	kinds := map[string]int{}
	for _, o := range objs {
		kinds[o.kind]++
	}
	for _, k := range []string{"Namespace", "CSIDriver", "StorageClass", "DaemonSet", "Deployment", "ServiceAccount",
		"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Service", "Secret"} {
		if kinds[k] == 0 {
			t.Errorf("no %s among the manifests", k)
		}
	}
	t.Logf("decoded %d objects: %v", len(objs), kinds)
}

// A field the strict decoder must refuse, so the test above is known to bite.
func TestStrictDecodingRefusesTypos(t *testing.T) {
	bad := "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: x}\nprovisoner: brick.csi.brickvol.io\n"
	if err := yaml.UnmarshalStrict([]byte(bad), &storagev1.StorageClass{}); err == nil {
		t.Fatal("a misspelt field decoded without error")
	}
}

func find[T any](objs []object) []T {
	var out []T
	for _, o := range objs {
		if v, ok := o.obj.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

func container(t *testing.T, spec corev1.PodSpec, name string) corev1.Container {
	t.Helper()
	for _, c := range spec.Containers {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %s", name)
	return corev1.Container{}
}

func env(c corev1.Container, name string) (corev1.EnvVar, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e, true
		}
	}
	return corev1.EnvVar{}, false
}

// The manifests agree with the driver and with each other.
func TestManifestsFitTheDriver(t *testing.T) {
	objs := load(t)
	drivers := find[*storagev1.CSIDriver](objs)
	if len(drivers) != 1 || drivers[0].Name != csi.DriverName || drivers[0].Spec.AttachRequired == nil || !*drivers[0].Spec.AttachRequired {
		t.Fatalf("CSIDriver: want one named %s with attachRequired (ControllerPublish is the attach)", csi.DriverName)
	}
	scs := find[*storagev1.StorageClass](objs)
	names := map[string]bool{}
	for _, sc := range scs {
		names[sc.Name] = true
		if sc.Provisioner != csi.DriverName {
			t.Errorf("StorageClass %s: provisioner %q", sc.Name, sc.Provisioner)
		}
		if err := csi.ValidateParameters(sc.Parameters); err != nil {
			t.Errorf("StorageClass %s: the driver refuses its parameters: %v", sc.Name, err)
		}
	}
	if !names["brick-replicated"] || !names["brick-shared"] {
		t.Errorf("StorageClasses %v: want brick-replicated and brick-shared", names)
	}

	ds := find[*appsv1.DaemonSet](objs)
	if len(ds) != 1 {
		t.Fatalf("%d DaemonSets", len(ds))
	}
	pod := ds[0].Spec.Template.Spec
	if !pod.HostNetwork {
		t.Error("brickd must use the host network (fixed ports on the host address)")
	}
	b := container(t, pod, "brickd")
	if b.SecurityContext == nil || b.SecurityContext.Privileged == nil || !*b.SecurityContext.Privileged {
		t.Error("brickd must be privileged (FUSE mounts)")
	}
	for _, name := range []string{"BRICK_NAME", "BRICK_BIND", "BRICK_PEERS", "BRICK_CLUSTER_KEY", "BRICK_CSI_ENDPOINT", "BRICK_CSI_KUBELET_DIR"} {
		if _, ok := env(b, name); !ok {
			t.Errorf("brickd has no %s", name)
		}
	}
	ep, _ := env(b, "BRICK_CSI_ENDPOINT")
	sock, err := csi.ParseEndpoint(ep.Value)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := env(b, "BRICK_CSI_KUBELET_DIR")
	propagated := false
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range b.VolumeMounts {
		mounts[m.MountPath] = m
		if m.MountPath == kd.Value && m.MountPropagation != nil && *m.MountPropagation == corev1.MountPropagationBidirectional {
			propagated = true
		}
	}
	if !propagated {
		t.Errorf("brickd must mount the kubelet directory %s with Bidirectional propagation", kd.Value)
	}
	if _, ok := mounts["/dev/fuse"]; !ok {
		t.Error("brickd has no /dev/fuse")
	}
	sockDir, ok := mounts[filepath.Dir(sock)]
	if !ok {
		t.Fatalf("the CSI socket directory %s is not a volume mount of brickd", filepath.Dir(sock))
	}
	hostSock := ""
	for _, v := range pod.Volumes {
		if v.Name == sockDir.Name && v.HostPath != nil {
			hostSock = filepath.Join(v.HostPath.Path, filepath.Base(sock))
		}
	}
	reg := container(t, pod, "node-driver-registrar")
	if !slices.Contains(reg.Args, "--kubelet-registration-path="+hostSock) {
		t.Errorf("node-driver-registrar args %v: want --kubelet-registration-path=%s", reg.Args, hostSock)
	}

	deps := find[*appsv1.Deployment](objs)
	if len(deps) != 1 {
		t.Fatalf("%d Deployments", len(deps))
	}
	cpod := deps[0].Spec.Template.Spec
	for _, name := range []string{"csi-provisioner", "csi-attacher", "csi-resizer"} {
		c := container(t, cpod, name)
		if !slices.Contains(c.Args, "--csi-address="+filepath.Join(c.VolumeMounts[0].MountPath, filepath.Base(sock))) {
			t.Errorf("%s args %v do not reach the CSI socket", name, c.Args)
		}
	}
	for _, v := range cpod.Volumes {
		if v.HostPath == nil || v.HostPath.Path != filepath.Dir(hostSock) {
			t.Errorf("controller volume %s: want the host's plugin directory %s", v.Name, filepath.Dir(hostSock))
		}
	}
	sas := map[string]bool{}
	for _, sa := range find[*corev1.ServiceAccount](objs) {
		sas[sa.Namespace+"/"+sa.Name] = true
	}
	for _, p := range []struct {
		ns   string
		spec corev1.PodSpec
	}{{ds[0].Namespace, pod}, {deps[0].Namespace, cpod}} {
		if !sas[p.ns+"/"+p.spec.ServiceAccountName] {
			t.Errorf("service account %s/%s is not defined", p.ns, p.spec.ServiceAccountName)
		}
	}
	for _, rb := range find[*rbacv1.ClusterRoleBinding](objs) {
		for _, s := range rb.Subjects {
			if !sas[s.Namespace+"/"+s.Name] {
				t.Errorf("ClusterRoleBinding %s names an undefined service account %s/%s", rb.Name, s.Namespace, s.Name)
			}
		}
	}
}
