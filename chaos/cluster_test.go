package chaos

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/brickvol/brick/chaos/harness"
)

// Subnets: each scenario owns 127.0.<n>.0/24 (see package harness).
const (
	netJoin = 10 + iota
	netLeaderKill
	netCatalog
	netVoters
	netBadInput
	netWrongKey
)

type peer struct {
	Name        string `json:"name"`
	BrickID     string `json:"brick_id"`
	Address     string `json:"address"`
	GossipState string `json:"gossip_state"`
	RaftRole    string `json:"raft_role"`
}

type placement struct {
	BrickID   string `json:"brick_id"`
	BrickName string `json:"brick_name"`
}

type volume struct {
	ID        string      `json:"id"`
	Name      string      `json:"name"`
	Layout    string      `json:"layout"`
	Placement []placement `json:"placement"`
	State     string      `json:"state"`
}

func peers(t *testing.T, d *harness.Daemon) ([]peer, error) {
	var ps []peer
	err := d.JSON(&ps, "peer", "ls")
	return ps, err
}

// roles summarises peer ls as "name=gossip/role ..." sorted by name.
func roles(ps []peer) string {
	var parts []string
	for _, p := range ps {
		parts = append(parts, fmt.Sprintf("%s=%s/%s", p.Name, p.GossipState, p.RaftRole))
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

// waitRoles waits until d's peer ls shows exactly want (from roles()).
func waitRoles(t *testing.T, d *harness.Daemon, bound time.Duration, want func([]peer) bool) []peer {
	t.Helper()
	var got []peer
	harness.Eventually(t, bound, "peer ls on "+d.Name, func() (bool, string) {
		ps, err := peers(t, d)
		if err != nil {
			return false, err.Error()
		}
		got = ps
		return want(ps), roles(ps)
	})
	return got
}

func count(ps []peer, gossip string, roles ...string) int {
	n := 0
	for _, p := range ps {
		if gossip != "" && p.GossipState != gossip {
			continue
		}
		for _, r := range roles {
			if p.RaftRole == r {
				n++
				break
			}
		}
	}
	return n
}

func voters(ps []peer) int { return count(ps, "alive", "leader", "voter") }

func leaderOf(ps []peer) string {
	for _, p := range ps {
		if p.RaftRole == "leader" {
			return p.Name
		}
	}
	return ""
}

func needRoot(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("SKIPPING: chaos scenarios bind loopback addresses and kill processes; run as root (CI does)")
	}
}

// Promise: three daemons started in any order, with only BRICK_PEERS naming
// one of them, form one cluster of three Raft voters.
func TestJoinAnyOrder(t *testing.T) {
	needRoot(t)
	c := harness.New(t, netJoin)
	n1 := c.Add("n1")
	n2 := c.Add("n2", "BRICK_PEERS="+n1.GossipAddr())
	n3 := c.Add("n3", "BRICK_PEERS="+n1.GossipAddr())
	// The joiners start first: they must retry until n1 answers.
	n3.Start()
	n2.Start()
	harness.Eventually(t, 20*time.Second, "n2 logs a failed join attempt", func() (bool, string) {
		return n2.LogContains("join"), "no join attempt logged yet"
	})
	n1.Start()
	for _, d := range []*harness.Daemon{n1, n2, n3} {
		waitRoles(t, d, 60*time.Second, func(ps []peer) bool { return len(ps) == 3 && voters(ps) == 3 })
	}
	var st struct {
		ClusterID string `json:"cluster_id"`
		Health    string `json:"health"`
	}
	harness.Eventually(t, 20*time.Second, "brick status says healthy", func() (bool, string) {
		err := n3.JSON(&st, "status")
		return err == nil && st.Health == "healthy" && st.ClusterID != "", fmt.Sprint(st, err)
	})
}

func startThree(t *testing.T, c *harness.Cluster) []*harness.Daemon {
	n1 := c.Add("n1").Start()
	n2 := c.Add("n2", "BRICK_PEERS="+n1.GossipAddr()).Start()
	n3 := c.Add("n3", "BRICK_PEERS="+n1.GossipAddr()).Start()
	ds := []*harness.Daemon{n1, n2, n3}
	for _, d := range ds {
		waitRoles(t, d, 60*time.Second, func(ps []peer) bool { return voters(ps) == 3 && leaderOf(ps) != "" })
	}
	return ds
}

func createVolume(t *testing.T, d *harness.Daemon, args ...string) volume {
	t.Helper()
	var v volume
	harness.Eventually(t, 30*time.Second, "volume create "+args[0]+" via "+d.Name, func() (bool, string) {
		err := d.JSON(&v, append([]string{"volume", "create"}, args...)...)
		if err != nil && strings.Contains(err.Error(), "already exists") {
			// An earlier attempt committed but its answer was lost.
			err = d.JSON(&v, "volume", "inspect", args[0])
		}
		return err == nil, fmt.Sprint(err)
	})
	return v
}

// Promise: losing the Raft leader costs an election, not the catalog; the
// killed daemon rejoins as a voter.
func TestLeaderKill(t *testing.T) {
	needRoot(t)
	c := harness.New(t, netLeaderKill)
	ds := startThree(t, c)
	ps, _ := peers(t, ds[0])
	lead := c.All[leaderOf(ps)]
	var rest []*harness.Daemon
	for _, d := range ds {
		if d != lead {
			rest = append(rest, d)
		}
	}
	createVolume(t, rest[0], "before", "--replicas", "3", "--size", "1G")
	lead.Kill()
	killed := time.Now()
	t.Logf("killed leader %s", lead.Name)
	waitRoles(t, rest[0], 30*time.Second, func(ps []peer) bool {
		l := leaderOf(ps)
		return l != "" && l != lead.Name
	})
	t.Logf("new leader seen %v after the kill", time.Since(killed).Round(time.Millisecond))
	// Through both survivors: create (replicas=2 fits the two live bricks) and rm.
	createVolume(t, rest[0], "after", "--replicas", "2", "--size", "1G")
	if _, e, err := rest[1].CLI("volume", "rm", "before"); err != nil {
		t.Fatalf("volume rm through %s after the leader died: %v: %s", rest[1].Name, err, e)
	}
	var vs []volume
	if err := rest[1].JSON(&vs, "volume", "ls"); err != nil {
		t.Fatal(err)
	}
	if len(vs) != 1 || vs[0].Name != "after" {
		t.Fatalf("volume ls after create/rm: %+v", vs)
	}
	t.Logf("create and rm through the survivors done %v after the kill", time.Since(killed).Round(time.Millisecond))
	lead.Start()
	restarted := time.Now()
	for _, d := range ds {
		waitRoles(t, d, 60*time.Second, func(ps []peer) bool { return len(ps) == 3 && voters(ps) == 3 })
	}
	t.Logf("restarted daemon is a voter again, seen by all, %v after its restart", time.Since(restarted).Round(time.Millisecond))
	// The restarted daemon sees the catalog as it is now.
	harness.Eventually(t, 20*time.Second, "restarted daemon lists the volumes", func() (bool, string) {
		var vs []volume
		err := lead.JSON(&vs, "volume", "ls")
		return err == nil && len(vs) == 1 && vs[0].Name == "after", fmt.Sprint(vs, err)
	})
}

// Promise: the catalog survives restarts of every daemon, graceful or not,
// with nothing lost or duplicated.
func TestCatalogSurvivesRestarts(t *testing.T) {
	needRoot(t)
	c := harness.New(t, netCatalog)
	ds := startThree(t, c)
	want := map[string]volume{}
	for i, layout := range [][]string{{"--replicas", "3"}, {"--replicas", "2"}, {"--replicas", "1"}, {"--ec", "2+1"}} {
		name := fmt.Sprintf("vol-%d", i)
		v := createVolume(t, ds[i%3], append([]string{name, "--size", "1G"}, layout...)...)
		want[name] = v
	}
	check := func(when string) {
		for _, d := range ds {
			harness.Eventually(t, 60*time.Second, when+": catalog on "+d.Name, func() (bool, string) {
				var vs []volume
				if err := d.JSON(&vs, "volume", "ls"); err != nil {
					return false, err.Error()
				}
				if len(vs) != len(want) {
					return false, fmt.Sprintf("%d volumes: %+v", len(vs), vs)
				}
				for _, v := range vs {
					w, ok := want[v.Name]
					if !ok || w.ID != v.ID || fmt.Sprint(w.Placement) != fmt.Sprint(v.Placement) {
						return false, fmt.Sprintf("got %+v, want %+v", v, w)
					}
				}
				return true, ""
			})
		}
		// Every placed brick holds the replica directory.
		for _, v := range want {
			for _, p := range v.Placement {
				dir := c.All[p.BrickName].DataDir + "/bricks/" + v.ID
				if _, err := os.Stat(dir); err != nil {
					t.Errorf("%s: replica of %s on %s: %v", when, v.Name, p.BrickName, err)
				}
			}
		}
	}
	check("before restarts")
	for _, d := range ds {
		d.Term()
	}
	for _, d := range ds {
		d.Start()
	}
	check("after SIGTERM of all")
	for _, d := range ds {
		d.Kill()
	}
	for _, d := range ds {
		d.Start()
	}
	check("after kill -9 of all")
}

// Promise: voters up to five, non-voters beyond; a voter dead past the
// timeout is removed and the cluster still elects leaders.
func TestVotersAndNonvoters(t *testing.T) {
	needRoot(t)
	c := harness.New(t, netVoters)
	c.Env = append(c.Env, "BRICK_DEAD_VOTER_TIMEOUT=4s")
	ds := startThree(t, c)
	for _, name := range []string{"n4", "n5", "n6"} {
		ds = append(ds, c.Add(name, "BRICK_PEERS="+ds[0].GossipAddr()).Start())
	}
	ps := waitRoles(t, ds[0], 60*time.Second, func(ps []peer) bool {
		return len(ps) == 6 && voters(ps) == 5 && count(ps, "alive", "nonvoter") == 1
	})
	t.Logf("six daemons: %s", roles(ps))
	// Kill a voter that is not the leader; it must be removed, and the
	// non-voter promoted in its place.
	var victim *harness.Daemon
	for _, p := range ps {
		if p.RaftRole == "voter" {
			victim = c.All[p.Name]
			break
		}
	}
	victim.Kill()
	t.Logf("killed voter %s", victim.Name)
	var observer *harness.Daemon
	for _, d := range ds {
		if d != victim {
			observer = d
			break
		}
	}
	ps = waitRoles(t, observer, 60*time.Second, func(ps []peer) bool {
		for _, p := range ps {
			if p.Name == victim.Name && p.RaftRole != "none" {
				return false
			}
		}
		return voters(ps) == 5
	})
	t.Logf("after removal: %s", roles(ps))
	// The cluster still elects: kill the leader, a new one appears.
	lead := c.All[leaderOf(ps)]
	lead.Kill()
	for _, d := range ds {
		if d != victim && d != lead {
			observer = d
			break
		}
	}
	waitRoles(t, observer, 60*time.Second, func(ps []peer) bool {
		l := leaderOf(ps)
		return l != "" && l != lead.Name
	})
	createVolume(t, observer, "still-works", "--replicas", "2", "--size", "1G")
}

// Promise 6: bad input is refused with a message naming the problem, and
// nothing is created.
func TestBadInputRefused(t *testing.T) {
	needRoot(t)
	c := harness.New(t, netBadInput)
	ds := startThree(t, c)
	d := ds[1]
	createVolume(t, d, "exists", "--replicas", "1", "--size", "1G")
	cases := []struct {
		args []string
		want string // a fragment the error must contain
	}{
		{[]string{"volume", "create", ""}, "name"},
		{[]string{"volume", "create", strings.Repeat("a", 65)}, "64"},
		{[]string{"volume", "create", "a/b"}, "/"},
		{[]string{"volume", "create", ".."}, "name"},
		{[]string{"volume", "create", "a b"}, "' '"},
		{[]string{"volume", "create", "a\x01b"}, "name"},
		{[]string{"volume", "create", "ok", "--colour", "red"}, "colour"},
		{[]string{"volume", "create", "ok", "--size", "-1"}, "size"},
		{[]string{"volume", "create", "ok", "--size", "0"}, "size"},
		{[]string{"volume", "create", "ok", "--size", "10Q"}, "10Q"},
		{[]string{"volume", "create", "ok", "--size", "1e99"}, "1e99"},
		{[]string{"volume", "create", "ok", "--replicas", "4"}, "4"},
		{[]string{"volume", "create", "ok", "--replicas", "0"}, "replicas"},
		{[]string{"volume", "create", "ok", "--ec", "4+"}, "4+"},
		{[]string{"volume", "create", "ok", "--ec", "a+b"}, "a+b"},
		{[]string{"volume", "create", "ok", "--ec", "4+2"}, "bricks"},
		{[]string{"volume", "create", "ok", "--replicas", "2", "--ec", "2+1"}, "ec"},
		{[]string{"volume", "create", "ok", "--access", "everyone"}, "everyone"},
		{[]string{"volume", "create", "ok", "--min-isr", "5", "--replicas", "3"}, "min-isr"},
		{[]string{"volume", "create", "exists", "--replicas", "1"}, "already exists"},
		{[]string{"volume", "rm", "missing"}, "missing"},
		{[]string{"volume", "inspect", "missing"}, "missing"},
	}
	for _, tc := range cases {
		_, stderr, err := d.CLI(tc.args...)
		if err == nil {
			t.Errorf("brick %q succeeded", tc.args)
			continue
		}
		if !strings.Contains(strings.ToLower(stderr), strings.ToLower(tc.want)) {
			t.Errorf("brick %q: error %q does not mention %q", tc.args, strings.TrimSpace(stderr), tc.want)
		}
		if strings.Count(strings.TrimSpace(stderr), "\n") > 3 {
			t.Errorf("brick %q: error is not one clear message: %q", tc.args, stderr)
		}
	}
	var vs []volume
	if err := d.JSON(&vs, "volume", "ls"); err != nil {
		t.Fatal(err)
	}
	if len(vs) != 1 || vs[0].Name != "exists" {
		t.Fatalf("bad input changed the catalog: %+v", vs)
	}
	// No stray replica directory anywhere either.
	for _, n := range ds {
		ents, _ := os.ReadDir(n.DataDir + "/bricks")
		for _, e := range ents {
			if e.Name() != vs[0].ID {
				t.Errorf("stray replica %s on %s", e.Name(), n.Name)
			}
		}
	}
}

// Promise 7: a daemon with another cluster key cannot join, and the members
// log why.
func TestWrongKeyCannotJoin(t *testing.T) {
	needRoot(t)
	c := harness.New(t, netWrongKey)
	ds := startThree(t, c)
	intruder := c.Add("intruder", "BRICK_PEERS="+ds[0].GossipAddr(), "BRICK_CLUSTER_KEY=not-the-cluster-key-at-all").Start()
	harness.Eventually(t, 30*time.Second, "a member logs the refused gossip", func() (bool, string) {
		return ds[0].LogContains("gossip refused", "cluster's key"), "no such log line on " + ds[0].Name
	})
	harness.Eventually(t, 30*time.Second, "the intruder logs why it cannot join", func() (bool, string) {
		return intruder.LogContains("BRICK_CLUSTER_KEY"), "no such log line on the intruder"
	})
	for _, d := range ds {
		ps, err := peers(t, d)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range ps {
			if p.Name == "intruder" {
				t.Errorf("%s lists the intruder: %s", d.Name, roles(ps))
			}
		}
	}
	// A CLI with the wrong key cannot talk to a daemon over TCP either.
	_, stderr, err := c.CLIEnv([]string{"BRICK_SERVER=" + ds[0].IP, "BRICK_CLUSTER_KEY=not-the-cluster-key-at-all"}, "volume", "ls")
	if err == nil || !strings.Contains(stderr, "BRICK_CLUSTER_KEY") {
		t.Errorf("CLI with a wrong key: err=%v stderr=%q", err, stderr)
	}
	// While the right key works over TCP.
	if _, stderr, err := c.CLIEnv([]string{"BRICK_SERVER=" + ds[0].IP}, "volume", "ls"); err != nil {
		t.Errorf("CLI over TCP with the right key: %v: %s", err, stderr)
	}
	harness.Eventually(t, 30*time.Second, "a member logs the refused TLS client", func() (bool, string) {
		return ds[0].LogContains("failed cluster authentication"), "no such log line"
	})
}
