package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/brickvol/brick/proto/brickpb"
	"github.com/brickvol/brick/volspec"
)

func (a *app) volumeCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "volume",
		Aliases: []string{"volumes", "vol"},
		Short:   "Create, list, inspect and remove volumes",
		Args:    cobra.ArbitraryArgs,
		RunE:    groupRunE,
	}
	cmd.AddCommand(a.volumeCreateCommand(), a.volumeListCommand(), a.volumeInspectCommand(),
		a.volumeStatusCommand(), a.volumeRemoveCommand(), a.volumeMountCommand(), a.volumeUnmountCommand(),
		a.volumeAttachCommand(), a.volumeDetachCommand(), a.volumeResizeCommand())
	return cmd
}

// oneName checks that a command got exactly one argument, a valid volume
// name.
func oneName(cmd *cobra.Command, args []string) error {
	if len(args) != 1 {
		return usagef("%s takes exactly one volume NAME, got %d arguments", cmd.CommandPath(), len(args))
	}
	if err := volspec.ValidateName(args[0]); err != nil {
		return usageError{err}
	}
	return nil
}

func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("%s takes no arguments, got %q", cmd.CommandPath(), args[0])
	}
	return nil
}

// createFlags are the raw `volume create` flags, parsed by createRequest.
type createFlags struct {
	size, replicas, ec, access, minISR string
	labels                             []string
}

func (a *app) volumeCreateCommand() *cobra.Command {
	var f createFlags
	cmd := &cobra.Command{
		Use:   "create NAME [flags]",
		Short: "Create a volume",
		Long: `Create a volume and place its replicas (or erasure-coded fragments) on the
cluster's bricks. It is not attached anywhere until a host mounts it.

Everything is checked before the daemon is contacted. Options left out get the
cluster's defaults: 10 GiB, replicas=3, single access, and min-isr 2 for
replicas=N (K+1 for ec=K+M). Sizes use binary units: 10G, 10GiB and 10GB all
mean 10 GiB.

NAME is 1 to 64 letters, digits, '-', '_' or '.', starting with a letter or digit.`,
		Example: `  brick volume create gocd-db
  brick volume create jenkins-home --size 50G --replicas 2 --min-isr 2
  brick volume create web-assets --ec 4+2 --access shared --label app=web --label tier=static`,
		Args: oneName,
		RunE: func(cmd *cobra.Command, args []string) error {
			req, err := f.request(cmd, args[0])
			if err != nil {
				return err
			}
			resp, err := call(cmd.Context(), a, func(ctx context.Context, c brickpb.ControlClient) (*brickpb.VolumeResponse, error) {
				return c.CreateVolume(ctx, req)
			})
			if err != nil {
				return err
			}
			if a.opts.json {
				return writeJSON(a.stdout, volumeToJSON(resp.GetVolume()))
			}
			_, err = fmt.Fprintln(a.stdout, createdLine(resp.GetVolume()))
			return err
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.size, "size", "", "size quota, e.g. `10G`, 512MiB, 1.5T (default 10 GiB)")
	fl.StringVar(&f.replicas, "replicas", "", "keep `N` full copies on N bricks (default 3)")
	fl.StringVar(&f.ec, "ec", "", "erasure-code as `K+M`: K data and M parity fragments on K+M bricks (instead of --replicas)")
	fl.StringVar(&f.access, "access", "", "who may attach: `single` host at a time, or shared by many hosts at once (default single)")
	fl.StringVar(&f.minISR, "min-isr", "", "writes need `N` in-sync bricks, else the volume turns read-only (default 2 for replicas, K+1 for ec)")
	fl.StringArrayVar(&f.labels, "label", nil, "add a label `key=value` (repeatable)")
	return cmd
}

// request validates the flags with volspec and builds the create request.
// Options not given stay zero in the request, so the daemon applies its
// defaults; they are still checked here against those same defaults, so
// a min-isr that does not fit the default layout is refused before sending.
func (f *createFlags) request(cmd *cobra.Command, name string) (*brickpb.CreateVolumeRequest, error) {
	spec := volspec.Spec{Name: name}
	changed := cmd.Flags().Changed
	var err error
	if changed("size") {
		if spec.SizeBytes, err = volspec.ParseSize(f.size); err != nil {
			return nil, usageError{err}
		}
	}
	if spec.Layout, err = volspec.ParseLayout(f.replicas, f.ec); err != nil {
		return nil, usageError{err}
	}
	if changed("replicas") && changed("ec") {
		// ParseLayout refuses both when both are non-empty; also refuse an
		// explicit empty one, rather than guess which was meant.
		return nil, usagef("--replicas and --ec are both set: a volume is either replicated or erasure-coded, choose one")
	}
	if changed("access") {
		if spec.Access, err = volspec.ParseAccess(f.access); err != nil {
			return nil, usageError{err}
		}
	}
	if changed("min-isr") {
		n, err := strconv.Atoi(f.minISR)
		if err != nil {
			return nil, usagef("min-isr %q is not a whole number (e.g. 2)", f.minISR)
		}
		spec.MinISR = n
		layout := spec.Layout
		if layout.IsZero() {
			layout = volspec.Layout{Replicas: volspec.DefaultReplicas}
		}
		if err := volspec.ValidateMinISR(n, layout); err != nil {
			return nil, usageError{err}
		}
	}
	for _, l := range f.labels {
		k, v, err := volspec.ParseLabel(l)
		if err != nil {
			return nil, usageError{err}
		}
		if spec.Labels == nil {
			spec.Labels = map[string]string{}
		}
		if _, dup := spec.Labels[k]; dup {
			return nil, usagef("label %q is given twice", k)
		}
		spec.Labels[k] = v
	}
	// The whole spec as the daemon will see it once defaults are applied.
	full := spec
	full.Defaults()
	if err := full.Validate(); err != nil {
		if errors.Is(err, volspec.ErrInvalid) {
			return nil, usageError{err}
		}
		return nil, err
	}
	return &brickpb.CreateVolumeRequest{
		Header:    header(),
		Name:      spec.Name,
		SizeBytes: spec.SizeBytes,
		Replicas:  uint32(spec.Layout.Replicas),
		EcData:    uint32(spec.Layout.ECData),
		EcParity:  uint32(spec.Layout.ECParity),
		Access:    spec.Access,
		MinIsr:    uint32(spec.MinISR),
		Labels:    spec.Labels,
	}, nil
}

func (a *app) volumeListCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List volumes",
		Long: `List the cluster's volumes, sorted by name.

ISR is in-sync bricks / placed bricks. HEAD is the host that orders the
volume's writes, "-" when the volume is attached nowhere.`,
		Example: `  brick volume ls
  brick volume ls --json | jq -r '.[] | select(.state != "healthy") | .name'`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := call(cmd.Context(), a, func(ctx context.Context, c brickpb.ControlClient) (*brickpb.ListVolumesResponse, error) {
				return c.ListVolumes(ctx, &brickpb.ListVolumesRequest{Header: header()})
			})
			if err != nil {
				return err
			}
			if a.opts.json {
				return writeJSON(a.stdout, volumesToJSON(resp.GetVolumes()))
			}
			if len(resp.GetVolumes()) == 0 {
				_, err := fmt.Fprintln(a.stdout, "no volumes (create one with: brick volume create NAME)")
				return err
			}
			return writeVolumesTable(a.stdout, resp.GetVolumes())
		},
	}
}

// getVolume fetches one volume by name.
func (a *app) getVolume(ctx context.Context, name string) (*brickpb.Volume, error) {
	resp, err := call(ctx, a, func(ctx context.Context, c brickpb.ControlClient) (*brickpb.VolumeResponse, error) {
		return c.GetVolume(ctx, &brickpb.GetVolumeRequest{Header: header(), Name: name})
	})
	if err != nil {
		return nil, err
	}
	return resp.GetVolume(), nil
}

func (a *app) volumeInspectCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "inspect NAME",
		Short: "Show everything about one volume",
		Long: `Show one volume: layout, min-isr, access, size, state, head and epoch, and
each of its bricks with its place in the ISR and its host's gossip state.
With --json, the full volume object.`,
		Example: `  brick volume inspect gocd-db
  brick volume inspect gocd-db --json | jq .isr`,
		Args: oneName,
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := a.getVolume(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if a.opts.json {
				return writeJSON(a.stdout, volumeToJSON(v))
			}
			return writeVolumeDetail(a.stdout, v, a.now(), a.loc)
		},
	}
}

func (a *app) volumeStatusCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "status NAME",
		Short: "Show a volume's health: state, head, and each brick",
		Long: `Show a volume's health: its state (healthy, degraded, healing, read-only,
fenced or unavailable) and why, who serves it at which epoch, and each brick
in or out of the in-sync replica set.`,
		Example: `  brick volume status gocd-db`,
		Args:    oneName,
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := a.getVolume(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if a.opts.json {
				return writeJSON(a.stdout, volumeToJSON(v))
			}
			// Heal progress will be fetched and printed as a section of its
			// own after the bricks.
			return writeVolumeDetail(a.stdout, v, a.now(), a.loc)
		},
	}
}

func (a *app) volumeResizeCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "resize NAME SIZE",
		Short: "Grow a volume's size quota, online",
		Long: `Grow a volume's size (its quota: what df shows and where writes get ENOSPC).
Volumes only grow; mounts see the new size within a few seconds.`,
		Example: `  brick volume resize gocd-db 20G`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 2 {
				return usageError{fmt.Errorf("resize takes a volume name and a size, like: brick volume resize data 20G")}
			}
			if err := volspec.ValidateName(args[0]); err != nil {
				return usageError{err}
			}
			if _, err := volspec.ParseSize(args[1]); err != nil {
				return usageError{err}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			size, _ := volspec.ParseSize(args[1])
			resp, err := call(cmd.Context(), a, func(ctx context.Context, c brickpb.ControlClient) (*brickpb.VolumeResponse, error) {
				return c.ResizeVolume(ctx, &brickpb.ResizeVolumeRequest{Header: header(), Name: args[0], SizeBytes: size})
			})
			if err != nil {
				return err
			}
			if a.opts.json {
				return writeJSON(a.stdout, volumeToJSON(resp.GetVolume()))
			}
			_, err = fmt.Fprintf(a.stdout, "volume %s is now %s\n", args[0], volspec.FormatSize(resp.GetVolume().GetSizeBytes()))
			return err
		},
	}
}

func (a *app) volumeRemoveCommand() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:     "rm NAME",
		Aliases: []string{"remove", "delete"},
		Short:   "Remove a volume and all its data",
		Long: `Remove a volume and delete its data on every brick. This cannot be undone.

A volume attached to a host is refused unless --force is given.`,
		Example: `  brick volume rm scratch
  brick volume rm scratch --force`,
		Args: oneName,
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, err := call(cmd.Context(), a, func(ctx context.Context, c brickpb.ControlClient) (*brickpb.DeleteVolumeResponse, error) {
				return c.DeleteVolume(ctx, &brickpb.DeleteVolumeRequest{Header: header(), Name: args[0], Force: force})
			})
			if err != nil {
				return err
			}
			if a.opts.json {
				return writeJSON(a.stdout, removedJSON{Name: args[0], ID: resp.GetVolumeId()})
			}
			_, err = fmt.Fprintf(a.stdout, "removed volume %s\n", args[0])
			return err
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "remove the volume even while it is attached")
	return cmd
}
