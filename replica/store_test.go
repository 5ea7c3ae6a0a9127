package replica

import (
	"os"
	"testing"
)

func TestEnsureRemoveIdempotent(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	p1, err := s.Ensure("v-1")
	if err != nil {
		t.Fatal(err)
	}
	p2, err := s.Ensure("v-1")
	if err != nil || p1 != p2 {
		t.Fatalf("second Ensure: %q %v", p2, err)
	}
	ids, _ := s.List()
	if len(ids) != 1 || ids[0] != "v-1" {
		t.Fatalf("List = %v", ids)
	}
	if err := s.Remove("v-1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove("v-1"); err != nil {
		t.Fatalf("removing a missing replica: %v", err)
	}
	if _, err := os.Stat(p1); !os.IsNotExist(err) {
		t.Fatalf("replica still there: %v", err)
	}
}

func TestBadIDsRefused(t *testing.T) {
	s, _ := Open(t.TempDir())
	for _, id := range []string{"", ".", "..", "a/b", "../x", "a\x00"} {
		if _, err := s.Ensure(id); err == nil {
			t.Errorf("Ensure(%q) succeeded", id)
		}
		if err := s.Remove(id); err == nil {
			t.Errorf("Remove(%q) succeeded", id)
		}
	}
}

func TestStoreOpensReplicas(t *testing.T) {
	needRoot(t)
	s, _ := Open(t.TempDir())
	r, err := s.OpenReplica("v-2", ReplicaOptions{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if p, _ := s.Path("v-2"); r.Dir() != p {
		t.Errorf("replica in %s, want %s", r.Dir(), p)
	}
	if _, err := s.OpenReplica("../x", ReplicaOptions{}); err == nil {
		t.Errorf("opened a replica with a bad ID")
	}
}
