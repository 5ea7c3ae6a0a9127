package main

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"

	"github.com/brickvol/brick/proto/brickpb"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3";
// otherwise the module version from the build info, or "dev".
var version = ""

func (a *app) statusCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the cluster on one screen: health, leader, peers, volumes",
		Long: `Show the cluster on one screen: its ID and health (healthy, degraded or
unavailable), the Raft leader, the daemon that answered, then every peer and
every volume.`,
		Example: `  brick status
  brick status --json | jq .health`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := call(cmd.Context(), a, func(ctx context.Context, c brickpb.ControlClient) (*brickpb.ClusterStatusResponse, error) {
				return c.ClusterStatus(ctx, &brickpb.ClusterStatusRequest{Header: header()})
			})
			if err != nil {
				return err
			}
			if a.opts.json {
				return writeJSON(a.stdout, statusToJSON(resp))
			}
			return writeClusterStatus(a.stdout, resp, a.now())
		},
	}
}

func (a *app) peerCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "peer",
		Aliases: []string{"peers"},
		Short:   "Show the cluster's daemons",
		Args:    cobra.ArbitraryArgs,
		RunE:    groupRunE,
	}
	cmd.AddCommand(&cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the cluster's daemons (peers)",
		Long: `List every daemon the cluster knows, sorted by name: its gRPC address, its
gossip state (alive, suspect, dead, left) and for how long, its Raft role
(leader, voter, nonvoter, none), and its brick's capacity and free space
("-" for a daemon without a disk).`,
		Example: `  brick peer ls
  brick peer ls --json | jq -r '.[] | select(.gossip_state == "dead") | .name'`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := call(cmd.Context(), a, func(ctx context.Context, c brickpb.ControlClient) (*brickpb.ListPeersResponse, error) {
				return c.ListPeers(ctx, &brickpb.ListPeersRequest{Header: header()})
			})
			if err != nil {
				return err
			}
			if a.opts.json {
				return writeJSON(a.stdout, peersToJSON(resp.GetPeers()))
			}
			return writePeersTable(a.stdout, resp.GetPeers(), a.now())
		},
	})
	return cmd
}

func (a *app) versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "version",
		Short:   "Print the brick command's version",
		Example: `  brick version`,
		Args:    noArgs,
		RunE: func(*cobra.Command, []string) error {
			v := versionJSON{Version: buildVersion(), ProtocolVersion: brickpb.ProtocolVersion, GoVersion: runtime.Version()}
			if a.opts.json {
				return writeJSON(a.stdout, v)
			}
			_, err := fmt.Fprintf(a.stdout, "brick %s (protocol %d, %s)\n", v.Version, v.ProtocolVersion, v.GoVersion)
			return err
		},
	}
}

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}
