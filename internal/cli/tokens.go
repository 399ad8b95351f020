package cli

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/droverhq/drover/hub/auth"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

func (a *app) tokensCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "tokens",
		Aliases: []string{"token"},
		Short:   "Manage API tokens (admin)",
	}
	cmd.AddCommand(a.tokensCreate(), a.tokensList(), a.tokensRevoke(), a.tokensWhoAmI())
	return cmd
}

type tokenView struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	Role       string     `json:"role"`
	CreatedBy  actorView  `json:"created_by"`
	CreateTime *time.Time `json:"create_time"`
	ExpireTime *time.Time `json:"expire_time,omitempty"`
	// Token is the secret, present only when the token was just created.
	Token string `json:"token,omitempty"`
}

func tokenOf(t *droverv1.Token) tokenView {
	return tokenView{ID: t.GetId(), Name: t.GetName(), Role: auth.RoleName(t.GetRole()), CreatedBy: actor(t.GetCreatedBy()),
		CreateTime: ts(t.GetCreateTime()), ExpireTime: ts(t.GetExpireTime())}
}

func (a *app) tokensCreate() *cobra.Command {
	var (
		role, name string
		ttl        time.Duration
	)
	cmd := &cobra.Command{
		Use:   "create --role <admin|operator|viewer|agent>",
		Short: "Create a token; its secret is shown once",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := auth.ParseRole(role)
			if err != nil {
				return usagef("--role: %v", err)
			}
			if cmd.Flags().Changed("ttl") && ttl <= 0 {
				return usagef("--ttl %s: want a positive duration (leave it out for a token that does not expire)", ttl)
			}
			c, err := a.hub()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			req := &droverv1.CreateTokenRequest{Role: r, Name: name}
			if ttl > 0 {
				req.Ttl = durationpb.New(ttl)
			}
			resp, err := c.Tokens.CreateToken(ctx, req)
			if err != nil {
				return err
			}
			v := tokenOf(resp.GetToken())
			v.Token = resp.GetSecret()
			return a.emit(v, func(w io.Writer) {
				fmt.Fprintf(w, "Created %s token %s", v.Role, v.ID)
				if v.ExpireTime != nil {
					fmt.Fprintf(w, ", expiring %s", fmtTimeP(v.ExpireTime))
				}
				fmt.Fprintf(w, ". Its secret, shown only now:\n\n%s\n", v.Token)
			})
		},
	}
	cmd.Flags().StringVar(&role, "role", "", "admin, operator, viewer or agent (required)")
	cmd.Flags().StringVar(&name, "name", "", "what the token is for")
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "how long the token lives, e.g. 720h (default: for ever)")
	return cmd
}

func (a *app) tokensList() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List tokens (never their secrets)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.hub()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			resp, err := c.Tokens.ListTokens(ctx, &droverv1.ListTokensRequest{Read: a.read()})
			if err != nil {
				return err
			}
			views := []tokenView{}
			for _, t := range resp.GetTokens() {
				views = append(views, tokenOf(t))
			}
			return a.emit(map[string]any{"tokens": views}, func(w io.Writer) {
				t := newTable(w)
				fmt.Fprintln(t, "ID\tROLE\tNAME\tCREATED\tBY\tEXPIRES")
				for _, v := range views {
					fmt.Fprintf(t, "%s\t%s\t%s\t%s\t%s\t%s\n", v.ID, v.Role, dash(v.Name), fmtTimeP(v.CreateTime), v.CreatedBy.Name, fmtTimeP(v.ExpireTime))
				}
				t.Flush()
			})
		},
	}
}

func (a *app) tokensRevoke() *cobra.Command {
	return &cobra.Command{
		Use:   "revoke <id>",
		Short: "Revoke a token; calls with it fail from then on",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.hub()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			if _, err := c.Tokens.RevokeToken(ctx, &droverv1.RevokeTokenRequest{Id: args[0]}); err != nil {
				return err
			}
			return a.emit(map[string]any{"id": args[0], "revoked": true}, func(w io.Writer) {
				fmt.Fprintf(w, "Revoked token %s\n", args[0])
			})
		},
	}
}

func (a *app) tokensWhoAmI() *cobra.Command {
	return &cobra.Command{
		Use:   "whoami",
		Short: "Show the token in use",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.hub()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			resp, err := c.Tokens.WhoAmI(ctx, &droverv1.WhoAmIRequest{})
			if err != nil {
				return err
			}
			v := tokenOf(resp.GetToken())
			return a.emit(v, func(w io.Writer) { fmt.Fprintf(w, "%s token %s (%s)\n", v.Role, v.ID, dash(v.Name)) })
		},
	}
}
