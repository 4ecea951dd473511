package caddyplugin

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/vigilgw/vigil/caddyplugin/blocklist"
	"github.com/vigilgw/vigil/caddyplugin/cli"
	"github.com/vigilgw/vigil/detector/alert"
	"github.com/vigilgw/vigil/detector/anomaly"
	"github.com/vigilgw/vigil/detector/cohort"
)

func init() {
	caddycmd.RegisterCommand(vigilCommand())
}

// vigilCommand is "caddy vigil": one command whose subcommands read and change a running
// Vigil through its admin API on Caddy's admin endpoint (all but replay), or run the
// anomaly detector over a CSV file (replay).
func vigilCommand() caddycmd.Command {
	return caddycmd.Command{
		Name:  "vigil",
		Usage: "<command> [flags]",
		Short: "Vigil's alerts, events, block list, upstreams and anomaly replay",
		Long: `
Commands for Vigil, the API gateway with built-in alerting.

All commands but replay talk to a running Caddy through its admin endpoint:
--address names it; without it, the admin address of --config (with --adapter)
is used, else localhost:2019, as for "caddy stop". They print a table, or with
--json the API's JSON answer. On an error they say why and exit with status 1.
`,
		CobraFunc: func(cmd *cobra.Command) {
			// Without a subcommand, help; an unknown one is an error, not help with exit 0.
			cmd.Args = cobra.ArbitraryArgs
			cmd.RunE = func(cmd *cobra.Command, args []string) error {
				if len(args) > 0 {
					return fmt.Errorf("unknown command %q for %q", args[0], cmd.CommandPath())
				}
				return cmd.Help()
			}
			cmd.AddCommand(usersCommand())
			cmd.AddCommand(alertsCommand(), eventsCommand(), blockCommand(), unblockCommand(),
				blocklistCommand(), upstreamsCommand(), testChannelCommand(), replayCommand())
		},
	}
}

// apiTimeout bounds a request to the admin API; test-channel waits for delivery with
// retries, so it gets longer.
const (
	apiTimeout         = 30 * time.Second
	testChannelTimeout = 5 * time.Minute
)

// displayLoc is the time zone tables show times in.
var displayLoc = time.Local

// commandFunc is the body of a subcommand. An error makes the command exit with status 1,
// its message logged to stderr with the prefix "vigil: ".
type commandFunc func(cmd *cobra.Command, fl caddycmd.Flags) error

// runE adapts fn to cobra through caddycmd.WrapCommandFuncForCobra. A failure is always
// returned as an error: status 1 with a nil error would exit 0.
func runE(fn commandFunc) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		return caddycmd.WrapCommandFuncForCobra(func(fl caddycmd.Flags) (int, error) {
			if err := fn(cmd, fl); err != nil {
				return caddy.ExitCodeFailedStartup, fmt.Errorf("vigil: %w", err)
			}
			return caddy.ExitCodeSuccess, nil
		})(cmd, args)
	}
}

// apiSubcommand builds a subcommand that talks to the admin API, with the flags that
// find it (--address, --config, --adapter) and --json.
func apiSubcommand(use, short, long string, args cobra.PositionalArgs, fn func(a *apiCall, fl caddycmd.Flags) error) *cobra.Command {
	cmd := &cobra.Command{Use: use, Short: short, Long: long, Args: args}
	cmd.RunE = runE(func(cmd *cobra.Command, fl caddycmd.Flags) error {
		a, err := newAPICall(cmd, fl)
		if err != nil {
			return err
		}
		return fn(a, fl)
	})
	f := cmd.Flags()
	f.String("address", "", "Address of Caddy's admin endpoint (default: from --config, else localhost:2019)")
	f.StringP("config", "c", "", "Configuration file to read the admin address from, if --address is not used")
	f.StringP("adapter", "a", "", "Name of config adapter to apply (when --config is used)")
	f.Bool("json", false, "Print the API's JSON answer instead of a table")
	return cmd
}

// apiCall is what a subcommand needs to call the admin API and print the answer.
type apiCall struct {
	client *cli.Client
	out    io.Writer
	json   bool
	loc    *time.Location
}

func newAPICall(cmd *cobra.Command, fl caddycmd.Flags) (*apiCall, error) {
	addr, err := caddycmd.DetermineAdminAPIAddress(fl.String("address"), nil, fl.String("config"), fl.String("adapter"))
	if err != nil {
		return nil, fmt.Errorf("finding the admin address: %v", err)
	}
	timeout := apiTimeout
	if cmd.Name() == "test-channel" {
		timeout = testChannelTimeout
	}
	client, err := adminClient(addr, timeout)
	if err != nil {
		return nil, err
	}
	return &apiCall{client: client, out: cmd.OutOrStdout(), json: fl.Bool("json"), loc: displayLoc}, nil
}

// adminClient returns a client of the admin endpoint at addr, a Caddy network address
// ("localhost:2019", "unix//run/caddy-admin.sock") as caddycmd.AdminAPIRequest reads it.
func adminClient(addr string, timeout time.Duration) (*cli.Client, error) {
	na, err := caddy.ParseNetworkAddress(addr)
	if err != nil || na.PortRangeSize() > 1 {
		return nil, fmt.Errorf("invalid admin address %q: want host:port or unix//path", addr)
	}
	switch {
	case na.IsUnixNetwork():
		// Drop the socket's permission bits ("unix//run/admin.sock|0220").
		path, _, _ := strings.Cut(na.Host, "|")
		return cli.NewClient(addr, na.Network, path, timeout), nil
	case na.IsFdNetwork():
		return nil, fmt.Errorf("admin address %s is a file descriptor, which a command cannot reach: give --address", addr)
	}
	return cli.NewClient(addr, na.Network, na.JoinHostPort(0), timeout), nil
}

// get fetches path, then prints the answer: as it is with --json, else decoded into v
// and rendered by table.
func (a *apiCall) get(path string, query url.Values, v any, table func() *cli.Table) error {
	resp, err := a.client.Get(context.Background(), path, query, v)
	if err != nil {
		return err
	}
	if a.json {
		return cli.Indent(a.out, resp.Body)
	}
	_, err = table().WriteTo(a.out)
	return err
}

func alertsCommand() *cobra.Command {
	return apiSubcommand("alerts", "Lists the alert rules, from the config and the API, with their firing instances", `
Lists the alert rules (GET /vigil/alerts): id, name, type, metric, the condition
(for example "> 20 over 15m"), the number of firing instances, where the rule
comes from (config or api) and whether it is enabled.
`, cobra.NoArgs, func(a *apiCall, fl caddycmd.Flags) error {
		var rules []cli.Rule
		return a.get("/vigil/alerts", nil, &rules, func() *cli.Table { return cli.AlertsTable(rules) })
	})
}

func eventsCommand() *cobra.Command {
	cmd := apiSubcommand("events [--since 1h] [--state firing] [--rule ID] [--type alert,anomaly] [--limit 50]",
		"Lists fired and resolved alert events, newest first", `
Lists alert events, newest first (GET /vigil/events): when, firing or resolved,
the rule, the group (k=v), the value, the threshold and how delivery went per
channel ("ops-slack:delivered pd:retrying").

--since takes a duration such as 30m, 12h or 7d; without it the API's default
period applies.
`, cobra.NoArgs, func(a *apiCall, fl caddycmd.Flags) error {
			q, err := eventsQuery(fl)
			if err != nil {
				return err
			}
			var list cli.EventList
			if err := a.get("/vigil/events", q, &list, func() *cli.Table { return cli.EventsTable(list.Events, a.loc) }); err != nil {
				return err
			}
			if !a.json && list.Total > len(list.Events) {
				_, err = fmt.Fprintf(a.out, "\n%d of %d events shown; see more with --limit, or narrow them with --since, --state, --rule or --type\n", len(list.Events), list.Total)
			}
			return err
		})
	f := cmd.Flags()
	f.String("since", "", "Only events of this last period: a duration such as 30m, 12h or 7d")
	f.String("state", "", "Only events in this state: firing or resolved")
	f.String("rule", "", "Only events of the rule with this id")
	f.String("type", "", "Only events of these types, comma-separated: alert, anomaly, cohort")
	f.Int("limit", 50, "At most this many events")
	return cmd
}

// eventsQuery builds the query of GET /vigil/events from the flags.
func eventsQuery(fl caddycmd.Flags) (url.Values, error) {
	q := url.Values{}
	if since := strings.TrimPrefix(strings.TrimSpace(fl.String("since")), "-"); since != "" {
		if d, err := caddy.ParseDuration(since); err != nil || d <= 0 {
			return nil, fmt.Errorf("--since %q: want a positive duration such as 30m, 12h or 7d", fl.String("since"))
		}
		q.Set("from", "-"+since)
	}
	for _, name := range []string{"state", "rule", "type"} {
		if v := strings.TrimSpace(fl.String(name)); v != "" {
			q.Set(name, v)
		}
	}
	limit := fl.Int("limit")
	if limit <= 0 {
		return nil, fmt.Errorf("--limit %d: want a positive number", limit)
	}
	q.Set("limit", strconv.Itoa(limit))
	return q, nil
}

func blockCommand() *cobra.Command {
	cmd := apiSubcommand("block KIND VALUE [--reason TEXT] [--expires 24h]",
		"Blocks a user, company, API key, IP address or CIDR range at run time", `
Adds an entry to the run-time block list (POST /vigil/blocklist). KIND is user,
company, key, ip or cidr. --expires takes a duration (24h, 7d) or an RFC 3339
time; without it the entry never expires.
`, cobra.ExactArgs(2), func(a *apiCall, fl caddycmd.Flags) error {
			body := map[string]string{"kind": fl.Arg(0), "value": fl.Arg(1)}
			if r := fl.String("reason"); r != "" {
				body["reason"] = r
			}
			if e := fl.String("expires"); e != "" {
				body["expires"] = e
			}
			resp, err := a.client.Call(context.Background(), http.MethodPost, "/vigil/blocklist", nil, body)
			if err != nil {
				return err
			}
			if a.json {
				return cli.Indent(a.out, resp.Body)
			}
			var e blocklist.Entry
			if err := cli.Decode(resp, &e); err != nil {
				return err
			}
			msg := fmt.Sprintf("blocked %s %s", e.Kind, e.Value)
			if !e.Expires.IsZero() {
				msg += " until " + cli.Time(e.Expires, a.loc)
			}
			if e.Reason != "" {
				msg += " (" + e.Reason + ")"
			}
			_, err = fmt.Fprintln(a.out, msg)
			return err
		})
	cmd.Flags().String("reason", "", "Why: shown to operators and in the 403 answer")
	cmd.Flags().String("expires", "", "When the entry stops blocking: a duration (24h, 7d) or an RFC 3339 time")
	return cmd
}

func unblockCommand() *cobra.Command {
	return apiSubcommand("unblock KIND VALUE", "Removes an entry from the run-time block list", `
Removes an entry from the run-time block list (DELETE /vigil/blocklist/KIND/VALUE).
Entries blocked in the Caddyfile cannot be removed here: edit the Caddyfile and
reload.
`, cobra.ExactArgs(2), func(a *apiCall, fl caddycmd.Flags) error {
		kind, value := fl.Arg(0), fl.Arg(1)
		resp, err := a.client.Call(context.Background(), http.MethodDelete, cli.PathEscape("/vigil/blocklist", kind, value), nil, nil)
		if err != nil {
			return err
		}
		if a.json {
			return cli.Indent(a.out, resp.Body)
		}
		_, err = fmt.Fprintf(a.out, "unblocked %s %s\n", kind, value)
		return err
	})
}

func blocklistCommand() *cobra.Command {
	return apiSubcommand("blocklist", "Lists the block list: run-time entries and those of the config", `
Lists the block list (GET /vigil/blocklist): kind, value, reason, expiry, when it
was added, and its source (api for run-time entries, config for the Caddyfile's).
`, cobra.NoArgs, func(a *apiCall, fl caddycmd.Flags) error {
		var entries []blocklist.Entry
		return a.get("/vigil/blocklist", nil, &entries, func() *cli.Table { return cli.BlocklistTable(entries, a.loc) })
	})
}

func upstreamsCommand() *cobra.Command {
	return apiSubcommand("upstreams", "Shows the health of each upstream: calls, failures by kind, latency, open alerts", `
Shows each upstream's health (GET /vigil/upstreams): calls over 5 minutes, the
share of failed calls over 1 minute, 5 minutes and 1 hour, failures over 5
minutes by kind (5xx answers, connection errors, timeouts, TLS errors), the
median and 99th percentile latency over 5 minutes, and the alerts open on it.
`, cobra.NoArgs, func(a *apiCall, fl caddycmd.Flags) error {
		var ups []cli.Upstream
		return a.get("/vigil/upstreams", nil, &ups, func() *cli.Table { return cli.UpstreamsTable(ups) })
	})
}

func testChannelCommand() *cobra.Command {
	return apiSubcommand("test-channel NAME", "Sends a test notification through a configured channel", `
Sends a clearly marked test notification through the channel NAME
(POST /vigil/channels/NAME/test), waits for the delivery, retries included, and
prints the outcome. Exits with status 1 unless it was delivered.
`, cobra.ExactArgs(1), func(a *apiCall, fl caddycmd.Flags) error {
		name := fl.Arg(0)
		resp, err := a.client.Do(context.Background(), http.MethodPost, cli.PathEscape("/vigil/channels", name, "test"), nil, nil)
		if err != nil {
			return err
		}
		// A failed delivery may come with an error status; it is an outcome all the same
		// if the body says so.
		var res alert.Delivery
		if cli.Decode(resp, &res) != nil || res.Status == "" {
			if resp.Status >= 400 {
				return cli.ParseAPIError(resp.Status, resp.Body)
			}
			return fmt.Errorf("the admin API answered %d without a delivery status: %.200s", resp.Status, resp.Body)
		}
		if res.Channel == "" {
			res.Channel = name
		}
		if a.json {
			err = cli.Indent(a.out, resp.Body)
		} else {
			_, err = fmt.Fprintln(a.out, cli.DeliveryOutcome(res))
		}
		if err != nil {
			return err
		}
		if res.Status != alert.DeliveryDelivered {
			return fmt.Errorf("the test notification through %s was not delivered (%s)", res.Channel, res.Status)
		}
		return nil
	})
}

func replayCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "replay [--metric count|latency] [--sensitivity slight|moderate|severe] [--direction up|down|both] [flags] < in.csv > out.csv",
		Short: "Runs the anomaly detector over a CSV series",
		Long: `
Runs Vigil's anomaly detector over a CSV series read from stdin, with the header
timestamp,value (time stamps as 2014-04-01 00:00:00 or RFC 3339), and writes
timestamp,value,anomaly_score,alert to stdout, one row per input row, in order.
anomaly_score is in [0,1]; alert is 1 on the row where an anomaly rule with that
sensitivity and direction would raise an alert, and 0 while it stays firing.

--metric count is for counts of calls per interval; latency (the default) is for
any other measurement. No Caddy needs to run. An error names the line and the
column of the bad input.
`,
		Args: cobra.NoArgs,
	}
	cmd.RunE = runE(func(cmd *cobra.Command, fl caddycmd.Flags) error {
		opts, err := replayOptions(fl)
		if err != nil {
			return err
		}
		if err := anomaly.Replay(cmd.InOrStdin(), cmd.OutOrStdout(), opts); err != nil {
			return fmt.Errorf("replay: %w", err)
		}
		return nil
	})
	f := cmd.Flags()
	f.String("metric", "latency", "What the values are: count (calls per interval) or latency (any measurement)")
	f.String("sensitivity", "moderate", "Sensitivity of the alert column: slight, moderate or severe")
	f.String("direction", "both", "Which anomalies alert: up, down or both")
	return cmd
}

func replayOptions(fl caddycmd.Flags) (anomaly.ReplayOptions, error) {
	var opts anomaly.ReplayOptions
	var err error
	if opts.Kind, err = anomaly.ParseKind(fl.String("metric")); err != nil {
		return opts, fmt.Errorf("--metric: %w", err)
	}
	if opts.Sensitivity, err = anomaly.ParseSensitivity(fl.String("sensitivity")); err != nil {
		return opts, fmt.Errorf("--sensitivity: %w", err)
	}
	if opts.Direction, err = anomaly.ParseDirection(fl.String("direction")); err != nil {
		return opts, fmt.Errorf("--direction: %w", err)
	}
	return opts, nil
}

// usersImportBatch is how many users one PUT /vigil/users carries.
const usersImportBatch = 5000

func usersCommand() *cobra.Command {
	users := &cobra.Command{Use: "users", Short: "Manages the user registry (import)"}
	users.AddCommand(apiSubcommand("import FILE.csv", "Imports users from a CSV file into the user registry", `
Reads a CSV file with a header row (id required; email, name, company, created_at as
RFC 3339 or YYYY-MM-DD, plan; any other column is an attribute) and upserts the users
through PUT /vigil/users, in batches. The whole file is checked first: an error names
its line and column, and nothing is imported.
`, cobra.ExactArgs(1), func(a *apiCall, fl caddycmd.Flags) error {
		f, err := os.Open(fl.Arg(0))
		if err != nil {
			return err
		}
		defer f.Close()
		list, err := cohort.ParseCSV(f)
		if err != nil {
			return fmt.Errorf("%s: %v", fl.Arg(0), err)
		}
		for i := 0; i < len(list); i += usersImportBatch {
			batch := list[i:min(i+usersImportBatch, len(list))]
			if _, err := a.client.Call(context.Background(), http.MethodPut, "/vigil/users", nil, batch); err != nil {
				return fmt.Errorf("users %d to %d: %w", i+1, i+len(batch), err)
			}
		}
		_, err = fmt.Fprintf(a.out, "imported %d users from %s\n", len(list), fl.Arg(0))
		return err
	}))
	return users
}
