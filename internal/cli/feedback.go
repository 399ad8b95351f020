package cli

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"

	"connectrpc.com/connect/v2"
	"github.com/spf13/cobra"

	"github.com/droverhq/drover/agent"
)

func (a *app) feedbackCommand() *cobra.Command {
	var agentAddr, model, id, label, file string
	var value float64
	cmd := &cobra.Command{
		Use:   "feedback --agent host:port --model <model> (--id <request id> --label <label> | --value <number> | --file labels.csv)",
		Short: "Send ground-truth labels for answered predictions to the agent that answered them",
		Long: `Send an agent the true labels of predictions it answered, by request id. The
agent joins them to the predictions it kept (it keeps --sample-rate of them,
for --feedback-retention) and counts accuracy, F1 and log loss (MAE and RMSE
for a regression) in the answering version's metric windows, which rollout
gates judge. --file takes a CSV with a header: id, then label (text) or
value (a number), one row per request row (repeat the id for a request of
several rows, in order). Labels for requests the agent did not keep are
counted and listed as unknown.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if agentAddr == "" || model == "" {
				return usagef("--agent and --model are required")
			}
			req := agent.FeedbackRequest{Model: model}
			switch {
			case file != "":
				items, err := readFeedbackFile(file)
				if err != nil {
					return err
				}
				req.Items = items
			case id != "" && cmd.Flags().Changed("value"):
				req.Items = []agent.FeedbackItem{{ID: id, Value: &value}}
			case id != "" && label != "":
				req.Items = []agent.FeedbackItem{{ID: id, Label: &label}}
			default:
				return usagef("give --id with --label or --value, or --file")
			}
			body, _ := json.Marshal(req)
			addr := agentAddr
			if !strings.Contains(addr, "://") {
				addr = "http://" + addr
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, addr+"/v1/feedback", bytes.NewReader(body))
			if err != nil {
				return err
			}
			hreq.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(hreq)
			if err != nil {
				return connect.NewError(connect.CodeUnavailable, fmt.Sprintf("cannot reach the agent at %s: %v", agentAddr, errors.Unwrap(err)))
			}
			defer resp.Body.Close()
			raw, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("the agent refused the feedback: %s: %s", resp.Status, bytes.TrimSpace(raw))
			}
			var out agent.FeedbackResponse
			if err := json.Unmarshal(raw, &out); err != nil {
				return fmt.Errorf("the agent's answer: %w", err)
			}
			return a.emit(out, func(w io.Writer) {
				fmt.Fprintf(w, "%d joined, %d unknown, %d invalid\n", out.Joined, len(out.Unknown), len(out.Invalid))
				const most = 20
				for i, id := range out.Unknown {
					if i == most {
						fmt.Fprintf(w, "  … and %d more unknown (--json lists them all)\n", len(out.Unknown)-most)
						break
					}
					fmt.Fprintf(w, "  %s: unknown (not kept, expired, or labelled before)\n", id)
				}
				for _, k := range slices.Sorted(maps.Keys(out.Invalid)) {
					fmt.Fprintf(w, "  %s: %s\n", k, out.Invalid[k])
				}
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&agentAddr, "agent", "", "the agent's serve address, host:port")
	f.StringVar(&model, "model", "", "the model the predictions were asked of")
	f.StringVar(&id, "id", "", "the request id of one prediction")
	f.StringVar(&label, "label", "", "its true label")
	f.Float64Var(&value, "value", 0, "its true value (a regression)")
	f.StringVar(&file, "file", "", "a CSV of id,label or id,value rows")
	return cmd
}

// readFeedbackFile reads id,label or id,value rows, grouping the rows of
// one request id in order.
func readFeedbackFile(path string) ([]agent.FeedbackItem, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(rows) < 2 || len(rows[0]) != 2 || rows[0][0] != "id" || (rows[0][1] != "label" && rows[0][1] != "value") {
		return nil, fmt.Errorf("%s: want a header id,label or id,value and at least one row", path)
	}
	numeric := rows[0][1] == "value"
	var items []agent.FeedbackItem
	at := map[string]int{}
	for i, r := range rows[1:] {
		if r[0] == "" {
			return nil, fmt.Errorf("%s: row %d: no id", path, i+2)
		}
		k, ok := at[r[0]]
		if !ok {
			k = len(items)
			at[r[0]] = k
			items = append(items, agent.FeedbackItem{ID: r[0]})
		}
		if numeric {
			v, err := strconv.ParseFloat(r[1], 64)
			if err != nil {
				return nil, fmt.Errorf("%s: row %d: %q is not a number", path, i+2, r[1])
			}
			items[k].Values = append(items[k].Values, v)
		} else {
			items[k].Labels = append(items[k].Labels, r[1])
		}
	}
	return items, nil
}
