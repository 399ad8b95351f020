package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

type auditView struct {
	Index    uint64     `json:"index"`
	Time     *time.Time `json:"time"`
	Actor    actorView  `json:"actor"`
	Action   string     `json:"action"`
	Resource string     `json:"resource"`
	Summary  string     `json:"summary,omitempty"`
	Reason   string     `json:"reason,omitempty"`
}

func (a *app) auditCommand() *cobra.Command {
	var (
		resource, actorID string
		limit             int32
		after             uint64
		follow            bool
	)
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "List the audit trail: who changed what, and when",
		Long: `audit lists the newest events (oldest first). --resource model/churn keeps the
events about that model and everything beneath it (its versions and aliases).
--follow keeps printing new events as they happen.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.hub()
			if err != nil {
				return err
			}
			req := &droverv1.ListAuditEventsRequest{
				Read: a.read(), AfterIndex: after, Limit: limit, ResourcePrefix: resource, ActorTokenId: actorID,
				Newest: after == 0,
			}
			var all []auditView
			t := newTable(a.stdout)
			if !a.json {
				fmt.Fprintln(t, "INDEX\tTIME\tACTOR\tACTION\tRESOURCE\tSUMMARY\tREASON")
			}
			for {
				ctx, cancel := a.ctx(cmd)
				resp, err := c.Audit.ListAuditEvents(ctx, req)
				cancel()
				if err != nil {
					return err
				}
				for _, ev := range resp.GetEvents() {
					v := auditView{Index: ev.GetIndex(), Time: ts(ev.GetTime()), Actor: actor(ev.GetActor()), Action: ev.GetAction(),
						Resource: ev.GetResource(), Summary: ev.GetSummary(), Reason: ev.GetReason()}
					req.AfterIndex = v.Index
					switch {
					case a.json && follow:
						if err := a.printJSONLine(v); err != nil {
							return err
						}
					case a.json:
						all = append(all, v)
					default:
						fmt.Fprintf(t, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", v.Index, fmtTimeP(v.Time), v.Actor.Name, v.Action, v.Resource, dash(v.Summary), dash(v.Reason))
					}
				}
				t.Flush()
				req.Newest = false
				if resp.GetNextAfterIndex() != 0 {
					continue // more pages
				}
				if !follow {
					break
				}
				select {
				case <-cmd.Context().Done():
					return nil
				case <-time.After(time.Second):
				}
			}
			if a.json {
				if all == nil {
					all = []auditView{}
				}
				return a.printJSON(map[string]any{"events": all})
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&resource, "resource", "", "only events on this resource and beneath it, e.g. model/churn")
	f.StringVar(&actorID, "actor", "", "only events by this token id")
	f.Int32Var(&limit, "limit", 50, "at most this many events (per page)")
	f.Uint64Var(&after, "after", 0, "only events after this index, oldest first (all of them, page by page)")
	f.BoolVarP(&follow, "follow", "f", false, "keep printing new events")
	return cmd
}
