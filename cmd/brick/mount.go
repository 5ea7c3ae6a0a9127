package main

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/brickvol/brick/proto/brickpb"
	"github.com/brickvol/brick/volspec"
)

func (a *app) volumeMountCommand() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "mount NAME DIR",
		Short: "Attach a volume to this host and mount it at DIR",
		Long: `Attach the volume to the host of the daemon you talk to (a new epoch: every
in-sync brick is fenced before the first write) and start a mount process that
serves it through FUSE at DIR. The mount process outlives brickd restarts.`,
		Example: `  brick volume mount gocd-db /var/lib/go-server`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 2 {
				return usagef("%s takes a volume NAME and a directory DIR, got %d arguments", cmd.CommandPath(), len(args))
			}
			if err := volspec.ValidateName(args[0]); err != nil {
				return usageError{err}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, err := filepath.Abs(args[1])
			if err != nil {
				return usagef("directory %q: %v", args[1], err)
			}
			resp, err := call(cmd.Context(), a, func(ctx context.Context, c brickpb.ControlClient) (*brickpb.MountVolumeResponse, error) {
				return c.MountVolume(ctx, &brickpb.MountVolumeRequest{Header: header(), Name: args[0], Dir: dir, Force: force})
			})
			if err != nil {
				return err
			}
			if a.opts.json {
				return writeJSON(a.stdout, map[string]any{"name": args[0], "dir": resp.GetDir(), "pid": resp.GetPid(),
					"log": resp.GetLog(), "epoch": resp.GetVolume().GetEpoch()})
			}
			_, err = fmt.Fprintf(a.stdout, "mounted volume %s at %s (epoch %d, mount process %d, log %s)\n",
				args[0], resp.GetDir(), resp.GetVolume().GetEpoch(), resp.GetPid(), resp.GetLog())
			return err
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "take the volume over even while another host holds it")
	return cmd
}

func (a *app) volumeUnmountCommand() *cobra.Command {
	var keep bool
	cmd := &cobra.Command{
		Use:     "unmount DIR",
		Aliases: []string{"umount"},
		Short:   "Unmount a volume mounted at DIR on this host and detach it",
		Example: `  brick volume unmount /var/lib/go-server`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("%s takes exactly one directory DIR, got %d arguments", cmd.CommandPath(), len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, err := filepath.Abs(args[0])
			if err != nil {
				return usagef("directory %q: %v", args[0], err)
			}
			resp, err := call(cmd.Context(), a, func(ctx context.Context, c brickpb.ControlClient) (*brickpb.UnmountVolumeResponse, error) {
				return c.UnmountVolume(ctx, &brickpb.UnmountVolumeRequest{Header: header(), Dir: dir, KeepAttached: keep})
			})
			if err != nil {
				return err
			}
			if a.opts.json {
				return writeJSON(a.stdout, map[string]any{"name": resp.GetName(), "dir": resp.GetDir()})
			}
			_, err = fmt.Fprintf(a.stdout, "unmounted volume %s from %s\n", resp.GetName(), resp.GetDir())
			return err
		},
	}
	cmd.Flags().BoolVar(&keep, "keep-attached", false, "leave the volume attached to this host")
	return cmd
}

func (a *app) volumeAttachCommand() *cobra.Command {
	var host string
	var force bool
	cmd := &cobra.Command{
		Use:     "attach NAME",
		Short:   "Attach a volume to a host (default: the daemon's own host)",
		Example: `  brick volume attach gocd-db --host ci-2 --force`,
		Args:    oneName,
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, err := call(cmd.Context(), a, func(ctx context.Context, c brickpb.ControlClient) (*brickpb.VolumeResponse, error) {
				return c.AttachVolume(ctx, &brickpb.AttachVolumeRequest{Header: header(), Name: args[0], Host: host, Force: force})
			})
			if err != nil {
				return err
			}
			if a.opts.json {
				return writeJSON(a.stdout, volumeToJSON(resp.GetVolume()))
			}
			_, err = fmt.Fprintf(a.stdout, "attached volume %s to %s at epoch %d\n", args[0], resp.GetVolume().GetHeadName(), resp.GetVolume().GetEpoch())
			return err
		},
	}
	cmd.Flags().StringVar(&host, "host", "", "daemon name of the host to attach to")
	cmd.Flags().BoolVar(&force, "force", false, "take the volume over even while another host holds it")
	return cmd
}

func (a *app) volumeDetachCommand() *cobra.Command {
	var host string
	cmd := &cobra.Command{
		Use:   "detach NAME",
		Short: "Detach a volume from a host (default: the daemon's own host)",
		Args:  oneName,
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, err := call(cmd.Context(), a, func(ctx context.Context, c brickpb.ControlClient) (*brickpb.VolumeResponse, error) {
				return c.DetachVolume(ctx, &brickpb.DetachVolumeRequest{Header: header(), Name: args[0], Host: host})
			})
			if err != nil {
				return err
			}
			if a.opts.json {
				return writeJSON(a.stdout, volumeToJSON(resp.GetVolume()))
			}
			_, err = fmt.Fprintf(a.stdout, "detached volume %s\n", args[0])
			return err
		},
	}
	cmd.Flags().StringVar(&host, "host", "", "daemon name of the host to detach from")
	return cmd
}
