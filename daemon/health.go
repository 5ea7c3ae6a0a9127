package daemon

import (
	"encoding/json"
	"net/http"
)

// healthHandler serves GET /healthz: 200 when this daemon is part of a
// cluster that has a Raft leader, 503 otherwise, with a small JSON body.
// It reveals nothing a peer could not learn from gossip.
func (d *Daemon) healthHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		stats := d.node.Stats()
		body := map[string]any{
			"name":       d.cfg.Name,
			"brick_id":   d.id,
			"cluster_id": d.clusterID(),
			"raft_state": stats["state"],
			"leader":     d.node.Leader(),
			"members":    len(d.members.Members()),
			"status":     "ok",
		}
		code := http.StatusOK
		if d.node.Leader() == "" || d.clusterID() == "" {
			body["status"] = "no-leader"
			code = http.StatusServiceUnavailable
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(body)
	})
	return mux
}
