package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/skiffnet/skiff/controlplane/etcd"
)

// newMembersCommand lists and removes the servers of a multi-server
// cluster: each server is one member of the embedded etcd.
func newMembersCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "etcd-member",
		Short: "List or remove the servers' embedded etcd members (multi-server clusters)",
	}
	var dataDir string
	cmd.PersistentFlags().StringVar(&dataDir, "data-dir", envOr("SKIFF_DATA_DIR", "/var/lib/skiff/server"), "data dir of a running server of the cluster")
	list := &cobra.Command{
		Use:   "list",
		Short: "Show every member, whether it answers, and which one leads",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := openMembers(dataDir)
			if err != nil {
				return err
			}
			defer m.Close()
			members, err := m.List(cmd.Context())
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tID\tPEER URL\tROLE\tHEALTH")
			for _, mem := range members {
				fmt.Fprintf(w, "%s\t%x\t%s\t%s\t%s\n", mem.Name, mem.ID, mem.PeerURL, role(mem), health(mem))
			}
			return w.Flush()
		},
	}
	remove := &cobra.Command{
		Use:   "remove NAME",
		Short: "Remove a server that is gone for good from etcd (run on a server that stays)",
		Long: `Remove the etcd member NAME, as ` + "`skiff etcd-member list`" + ` names it. Do this only for a
server that will not come back: a cluster of three that lost one keeps its
quorum, but a second loss would end it. To bring the server back later, start it
with an empty --data-dir and --join.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := openMembers(dataDir)
			if err != nil {
				return err
			}
			defer m.Close()
			if err := m.Remove(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed etcd member %s\n", args[0])
			return nil
		},
	}
	cmd.AddCommand(list, remove)
	return cmd
}

func openMembers(dataDir string) (*etcd.Members, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, "etcd-endpoint"))
	if err != nil {
		return nil, fmt.Errorf("no embedded etcd recorded in %s (%w): run this on a server, with its --data-dir", dataDir, err)
	}
	tls := filepath.Join(dataDir, "tls")
	return etcd.OpenMembers(strings.TrimSpace(string(b)), &etcd.TLSFiles{
		Cert: filepath.Join(tls, "etcd.crt"), Key: filepath.Join(tls, "etcd.key"), CA: filepath.Join(tls, "etcd-ca.crt"),
	})
}

func role(m etcd.Member) string {
	switch {
	case m.Leader:
		return "leader"
	case m.Learner:
		return "learner"
	}
	return "follower"
}

func health(m etcd.Member) string {
	if m.Healthy {
		return "healthy"
	}
	return "unhealthy: " + m.Err
}
