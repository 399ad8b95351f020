package cli

import (
	"errors"
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
	StateDigest  string `json:"state_digest,omitempty"`
}

type clusterView struct {
	ClusterID   string       `json:"cluster_id"`
	Leader      string       `json:"leader"`
	ServedBy    string       `json:"served_by"`
	CommitIndex uint64       `json:"commit_index"`
	Members     []memberView `json:"members"`
	// With --verify: whether every pair of members at the same applied
	// index has the same state digest.
	Consistent *bool `json:"consistent,omitempty"`
}

// checkConsistent reports whether members at the same applied index agree.
func checkConsistent(members []memberView) bool {
	byIndex := map[uint64]string{}
	for _, m := range members {
		if m.StateDigest == "" {
			continue
		}
		if d, ok := byIndex[m.AppliedIndex]; ok && d != m.StateDigest {
			return false
		}
		byIndex[m.AppliedIndex] = m.StateDigest
	}
	return true
}

func (a *app) clusterStatus() *cobra.Command {
	var verify bool
	cmd := &cobra.Command{
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
			resp, err := c.Cluster.GetClusterStatus(ctx, &droverv1.GetClusterStatusRequest{Verify: verify})
			if err != nil {
				return err
			}
			v := clusterView{ClusterID: resp.GetClusterId(), Leader: resp.GetLeader(), ServedBy: resp.GetServedBy(), CommitIndex: resp.GetCommitIndex(), Members: []memberView{}}
			for _, m := range resp.GetMembers() {
				v.Members = append(v.Members, memberView{
					Name: m.GetName(), Role: enumName(m.GetRole().String(), "MEMBER_ROLE_"), Voter: m.GetVoter(),
					RaftAddress: m.GetRaftAddress(), HTTPAddress: m.GetHttpAddress(), LastIndex: m.GetLastIndex(),
					AppliedIndex: m.GetAppliedIndex(), Term: m.GetTerm(), Version: m.GetVersion(), Error: m.GetError(),
					StateDigest: m.GetStateDigest(),
				})
			}
			if verify {
				ok := checkConsistent(v.Members)
				v.Consistent = &ok
			}
			err = a.emit(v, func(w io.Writer) {
				fmt.Fprintf(w, "Cluster %s, leader %s (as seen by %s)\n\n", dash(v.ClusterID), dash(v.Leader), v.ServedBy)
				t := newTable(w)
				fmt.Fprint(t, "NAME\tROLE\tVOTER\tRAFT\tHTTP\tLAST INDEX\tAPPLIED\tTERM\tVERSION")
				if verify {
					fmt.Fprint(t, "\tSTATE")
				}
				fmt.Fprintln(t)
				for _, m := range v.Members {
					role := m.Role
					if m.Error != "" {
						role += " (" + m.Error + ")"
					}
					fmt.Fprintf(t, "%s\t%s\t%v\t%s\t%s\t%d\t%d\t%d\t%s", m.Name, role, m.Voter, m.RaftAddress, dash(m.HTTPAddress), m.LastIndex, m.AppliedIndex, m.Term, dash(m.Version))
					if verify {
						fmt.Fprintf(t, "\t%s", dash(shortDigest(m.StateDigest)))
					}
					fmt.Fprintln(t)
				}
				t.Flush()
				if v.Consistent != nil {
					if *v.Consistent {
						fmt.Fprintln(w, "\nReplicas agree: members at the same applied index have the same state.")
					} else {
						fmt.Fprintln(w, "\nREPLICAS DISAGREE: members at the same applied index have different states.")
					}
				}
			})
			if err == nil && v.Consistent != nil && !*v.Consistent {
				err = errors.New("replicas disagree")
			}
			return err
		},
	}
	cmd.Flags().BoolVar(&verify, "verify", false, "ask every member for a digest of its state and check that replicas agree")
	return cmd
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
