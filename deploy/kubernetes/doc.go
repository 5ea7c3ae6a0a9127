// Package kubernetes holds brick's Kubernetes manifests (the YAML files
// beside this one: CSIDriver, StorageClasses, the brickd DaemonSet with
// the node-driver-registrar, the controller Deployment with the
// external-provisioner, -attacher and -resizer sidecars, RBAC) and the
// test that decodes every one of them strictly into the typed Kubernetes
// API objects, so a typo or a field in the wrong place fails CI.
//
// It has no Go code besides that test and must never grow any: what runs
// in the cluster is brickd (cmd/brickd, plugin/csi). docs/kubernetes.md
// explains how to install and use the manifests.
package kubernetes
