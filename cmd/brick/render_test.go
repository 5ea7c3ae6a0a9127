package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/brickvol/brick/proto/brickpb"
)

// golden compares rendered text with the expected text; the expected text
// is written with a leading newline for readability.
func golden(t *testing.T, got, want string) {
	t.Helper()
	want = strings.TrimPrefix(want, "\n")
	if got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

func render(t *testing.T, fn func(*bytes.Buffer) error) string {
	t.Helper()
	var b bytes.Buffer
	if err := fn(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

const wantPeersTable = `
NAME      ADDRESS        GOSSIP    RAFT    CAPACITY  FREE
ci-1      10.0.0.1:7400  dead 12s  voter   1 TiB     1.5 GiB
ci-2      10.0.0.2:7400  alive 3h  leader  1 TiB     200 GiB
tiebreak  10.0.0.9:7400  alive     voter   -         -
`

const wantVolumesTable = `
NAME     LAYOUT      ACCESS  SIZE     STATE     HEAD  EPOCH  ISR
gocd-db  replicas=3  single  10 GiB   degraded  ci-2  7      2/3
web      ec=2+1      shared  1.5 GiB  healthy   -     2      3/3
`

const wantGocdDetail = `
gocd-db   replicas=3  min-isr=2  single  10 GiB
state     degraded (b-4f1a is out of the ISR)
head      ci-2 (b-9c07, epoch 7)
attached  ci-2 (b-9c07) at epoch 7 since 2026-11-23 14:02:11 UTC (19s ago)
labels    app=gocd tier=db
id        v-31c9
created   2026-11-20 14:02:30 UTC (3d ago)

BRICK   HOST  STATE       GOSSIP
b-4f1a  ci-1  out-of-isr  dead
b-9c07  ci-2  in-sync     alive
b-e210  ci-3  in-sync     alive

HEALING  STATE             PROGRESS                     REMAINING         RATE      ETA
ci-1     healing (op-log)  [###############-----]  75%  48 MiB, 1200 ops  16 MiB/s  3s
`

func TestPeersTable(t *testing.T) {
	got := render(t, func(b *bytes.Buffer) error { return writePeersTable(b, fixturePeers(), fixtureNow) })
	golden(t, got, wantPeersTable)
}

func TestVolumesTable(t *testing.T) {
	got := render(t, func(b *bytes.Buffer) error { return writeVolumesTable(b, fixtureVolumes()) })
	golden(t, got, wantVolumesTable)
}

func TestVolumeDetail(t *testing.T) {
	got := render(t, func(b *bytes.Buffer) error {
		return writeVolumeDetail(b, fixtureVolumes()[1], fixtureNow, time.UTC)
	})
	golden(t, got, wantGocdDetail)

	// Detached, no labels, no attachments, no creation time.
	got = render(t, func(b *bytes.Buffer) error {
		return writeVolumeDetail(b, fixtureVolumes()[0], fixtureNow, time.UTC)
	})
	golden(t, got, `
web    ec=2+1  min-isr=3  shared  1.5 GiB
state  healthy
head   detached (epoch 2)
id     v-77aa

BRICK   HOST  STATE    GOSSIP
b-4f1a  ci-1  in-sync  alive
b-9c07  ci-2  in-sync  alive
b-e210  ci-3  in-sync  alive
`)
}

func TestClusterStatusView(t *testing.T) {
	got := render(t, func(b *bytes.Buffer) error { return writeClusterStatus(b, fixtureStatus(), fixtureNow) })
	golden(t, got, "\ncluster c-5e1d  degraded  leader ci-2  answered by ci-3\n"+
		wantPeersTable+wantVolumesTable)

	// No leader, no volumes.
	s := &brickpb.ClusterStatusResponse{ClusterId: "c-5e1d", Health: "unavailable", AnsweredBy: "ci-3"}
	got = render(t, func(b *bytes.Buffer) error { return writeClusterStatus(b, s, fixtureNow) })
	golden(t, got, `
cluster c-5e1d  unavailable  leader none  answered by ci-3

NAME  ADDRESS  GOSSIP  RAFT  CAPACITY  FREE

no volumes
`)
}

func TestCreatedLine(t *testing.T) {
	v := fixtureVolumes()[1]
	want := "created volume gocd-db (replicas=3, 10 GiB, single) on b-4f1a(ci-1), b-9c07(ci-2), b-e210(ci-3)"
	if got := createdLine(v); got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}

func TestAge(t *testing.T) {
	for d, want := range map[time.Duration]string{
		-time.Second:     "0s",
		0:                "0s",
		59 * time.Second: "59s",
		time.Minute:      "1m",
		59 * time.Minute: "59m",
		47 * time.Hour:   "47h",
		48 * time.Hour:   "2d",
		400 * time.Hour:  "16d",
	} {
		if got := age(d); got != want {
			t.Errorf("age(%s) = %q, want %q", d, got, want)
		}
	}
}

func TestPeersJSON(t *testing.T) {
	got := render(t, func(b *bytes.Buffer) error { return writeJSON(b, peersToJSON(fixturePeers())) })
	golden(t, got, `
[
  {
    "name": "ci-1",
    "brick_id": "b-4f1a",
    "address": "10.0.0.1:7400",
    "gossip_state": "dead",
    "gossip_since": "2026-11-23T14:02:18Z",
    "raft_role": "voter",
    "capacity_bytes": 1099511627776,
    "free_bytes": 1610612736
  },
  {
    "name": "ci-2",
    "brick_id": "b-9c07",
    "address": "10.0.0.2:7400",
    "gossip_state": "alive",
    "gossip_since": "2026-11-23T11:02:30Z",
    "raft_role": "leader",
    "capacity_bytes": 1099511627776,
    "free_bytes": 214748364800
  },
  {
    "name": "tiebreak",
    "brick_id": "b-0001",
    "address": "10.0.0.9:7400",
    "gossip_state": "alive",
    "gossip_since": null,
    "raft_role": "voter",
    "capacity_bytes": 0,
    "free_bytes": 0
  }
]
`)
	// An empty list is [], not null.
	got = render(t, func(b *bytes.Buffer) error { return writeJSON(b, peersToJSON(nil)) })
	golden(t, got, "[]\n")
}

const wantGocdJSON = `
{
  "id": "v-31c9",
  "name": "gocd-db",
  "size_bytes": 10737418240,
  "layout": "replicas=3",
  "replicas": 3,
  "ec_data": 0,
  "ec_parity": 0,
  "access": "single",
  "min_isr": 2,
  "labels": {
    "app": "gocd",
    "tier": "db"
  },
  "placement": [
    {
      "brick_id": "b-4f1a",
      "brick_name": "ci-1",
      "in_sync": false,
      "gossip_state": "dead"
    },
    {
      "brick_id": "b-9c07",
      "brick_name": "ci-2",
      "in_sync": true,
      "gossip_state": "alive"
    },
    {
      "brick_id": "b-e210",
      "brick_name": "ci-3",
      "in_sync": true,
      "gossip_state": "alive"
    }
  ],
  "epoch": 7,
  "head": "b-9c07",
  "head_name": "ci-2",
  "isr": [
    "b-9c07",
    "b-e210"
  ],
  "attachments": [
    {
      "brick_id": "b-9c07",
      "brick_name": "ci-2",
      "epoch": 7,
      "since": "2026-11-23T14:02:11Z",
      "head": true
    }
  ],
  "state": "degraded",
  "state_reason": "b-4f1a is out of the ISR",
  "created": "2026-11-20T14:02:30Z",
  "heals": [
    {
      "brick_id": "b-4f1a",
      "brick_name": "ci-1",
      "state": "healing",
      "phase": "op-log",
      "bytes_remaining": 50331648,
      "bytes_total": 201326592,
      "ops_remaining": 1200,
      "files_remaining": -1,
      "rate_bytes_per_sec": 16777216,
      "eta_seconds": 3,
      "reason": ""
    }
  ]
}
`

func TestVolumeJSON(t *testing.T) {
	got := render(t, func(b *bytes.Buffer) error { return writeJSON(b, volumeToJSON(fixtureVolumes()[1])) })
	golden(t, got, wantGocdJSON)

	// A bare volume: every field is still there, lists and maps empty, not null.
	got = render(t, func(b *bytes.Buffer) error { return writeJSON(b, volumeToJSON(&brickpb.Volume{Name: "x"})) })
	golden(t, got, `
{
  "id": "",
  "name": "x",
  "size_bytes": 0,
  "layout": "",
  "replicas": 0,
  "ec_data": 0,
  "ec_parity": 0,
  "access": "",
  "min_isr": 0,
  "labels": {},
  "placement": [],
  "epoch": 0,
  "head": "",
  "head_name": "",
  "isr": [],
  "attachments": [],
  "state": "",
  "state_reason": "",
  "created": null,
  "heals": []
}
`)
}

func TestStatusJSON(t *testing.T) {
	got := render(t, func(b *bytes.Buffer) error { return writeJSON(b, statusToJSON(fixtureStatus())) })
	var doc struct {
		ClusterID  string            `json:"cluster_id"`
		Health     string            `json:"health"`
		Leader     string            `json:"leader"`
		AnsweredBy string            `json:"answered_by"`
		Peers      []json.RawMessage `json:"peers"`
		Volumes    []struct {
			Name string `json:"name"`
		} `json:"volumes"`
	}
	if err := json.Unmarshal([]byte(got), &doc); err != nil {
		t.Fatalf("%v\n%s", err, got)
	}
	if doc.ClusterID != "c-5e1d" || doc.Health != "degraded" || doc.Leader != "ci-2" || doc.AnsweredBy != "ci-3" ||
		len(doc.Peers) != 3 || len(doc.Volumes) != 2 || doc.Volumes[0].Name != "gocd-db" {
		t.Errorf("unexpected status document:\n%s", got)
	}
}
