package cli

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

func (a *app) clusterCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Show and change the hub cluster's membership",
	}
	cmd.AddCommand(a.clusterStatus(), a.clusterRemove())
	return cmd
}

type memberView struct {
	Name         string `json:"name"`
	Role         string `json:"role"`
	Voter        bool   `json:"voter"`
	RaftAddress  string `json:"raft_address"`
	HTTPAddress  string `json:"http_address"`
	LastIndex    uint64 `json:"last_index"`
	AppliedIndex uint64 `json:"applied_index"`
	Term         uint64 `json:"term"`
	Version      string `json:"version,omitempty"`
	Error        string `json:"error,omitempty"`
}

type clusterView struct {
	ClusterID   string       `json:"cluster_id"`
	Leader      string       `json:"leader"`
	ServedBy    string       `json:"served_by"`
	CommitIndex uint64       `json:"commit_index"`
	Members     []memberView `json:"members"`
}

func (a *app) clusterStatus() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show every member, its role, the leader and the Raft indexes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.hub()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			resp, err := c.Cluster.GetClusterStatus(ctx, &droverv1.GetClusterStatusRequest{})
			if err != nil {
				return err
			}
			v := clusterView{ClusterID: resp.GetClusterId(), Leader: resp.GetLeader(), ServedBy: resp.GetServedBy(), CommitIndex: resp.GetCommitIndex(), Members: []memberView{}}
			for _, m := range resp.GetMembers() {
				v.Members = append(v.Members, memberView{
					Name: m.GetName(), Role: enumName(m.GetRole().String(), "MEMBER_ROLE_"), Voter: m.GetVoter(),
					RaftAddress: m.GetRaftAddress(), HTTPAddress: m.GetHttpAddress(), LastIndex: m.GetLastIndex(),
					AppliedIndex: m.GetAppliedIndex(), Term: m.GetTerm(), Version: m.GetVersion(), Error: m.GetError(),
				})
			}
			return a.emit(v, func(w io.Writer) {
				fmt.Fprintf(w, "Cluster %s, leader %s (as seen by %s)\n\n", dash(v.ClusterID), dash(v.Leader), v.ServedBy)
				t := newTable(w)
				fmt.Fprintln(t, "NAME\tROLE\tVOTER\tRAFT\tHTTP\tLAST INDEX\tAPPLIED\tTERM\tVERSION")
				for _, m := range v.Members {
					role := m.Role
					if m.Error != "" {
						role += " (" + m.Error + ")"
					}
					fmt.Fprintf(t, "%s\t%s\t%v\t%s\t%s\t%d\t%d\t%d\t%s\n", m.Name, role, m.Voter, m.RaftAddress, dash(m.HTTPAddress), m.LastIndex, m.AppliedIndex, m.Term, dash(m.Version))
				}
				t.Flush()
			})
		},
	}
}

func (a *app) clusterRemove() *cobra.Command {
	return &cobra.Command{
		Use:   "remove <node>",
		Short: "Remove a node from the cluster (admin)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.hub()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			if _, err := c.Cluster.RemoveNode(ctx, &droverv1.RemoveNodeRequest{Name: args[0]}); err != nil {
				return err
			}
			return a.emit(map[string]any{"removed": args[0]}, func(w io.Writer) {
				fmt.Fprintf(w, "Removed %s from the cluster\n", args[0])
			})
		},
	}
}
