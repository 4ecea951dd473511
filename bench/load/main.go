// Command load compares Vigil with plain Caddy under load on loopback: one caddy process
// serves two sites, a plain reverse_proxy and the same with the vigil directive
// (identify, block list, two rate limits, a quota, recording), in front of an upstream
// caddy; wrk loads them in interleaved rounds and the program reports the median
// throughput and p99 latency of each and their ratios. See README.md.
//
//	make -f xcaddy.mk bench-load
//	VIGIL_CADDY=./caddy go run ./bench/load -rounds 5 -d 10s -json
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// settings are the knobs of a run (flags).
type settings struct {
	Caddy       string        `json:"caddy"`
	Wrk         string        `json:"wrk"`
	Duration    time.Duration `json:"-"`
	Warmup      time.Duration `json:"-"`
	DurationS   float64       `json:"duration_s"`
	WarmupS     float64       `json:"warmup_s"`
	Rounds      int           `json:"rounds"`
	Threads     int           `json:"wrk_threads"`
	Conns       int           `json:"wrk_connections"`
	Users       int           `json:"users"`
	Companies   int           `json:"companies"`
	ABBA        bool          `json:"abba"`
	MinThruput  float64       `json:"target_min_throughput_ratio"`
	MaxP99Ratio float64       `json:"target_max_p99_ratio"`
	JSON        bool          `json:"-"`
	Verbose     bool          `json:"-"`
	CPUProfile  string        `json:"-"`
	NoLimits    bool          `json:"no_limits,omitempty"`
	Control     bool          `json:"control,omitempty"`
}

func main() {
	os.Exit(run())
}

func run() int {
	var s settings
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	defCaddy := os.Getenv("VIGIL_CADDY")
	if defCaddy == "" {
		defCaddy = "./caddy"
	}
	fs.StringVar(&s.Caddy, "caddy", defCaddy, "caddy binary built with Vigil (default $VIGIL_CADDY or ./caddy)")
	fs.StringVar(&s.Wrk, "wrk", "wrk", "wrk binary")
	fs.DurationVar(&s.Duration, "d", 10*time.Second, "length of one round")
	fs.DurationVar(&s.Warmup, "warmup", 5*time.Second, "length of the warm-up round of each site (0: none)")
	fs.IntVar(&s.Rounds, "rounds", 5, "measured rounds per site (at least 3)")
	fs.IntVar(&s.Threads, "t", 1, "wrk threads")
	fs.IntVar(&s.Conns, "c", 32, "wrk connections")
	fs.IntVar(&s.Users, "users", 1000, "distinct X-User-Id values")
	fs.IntVar(&s.Companies, "companies", 50, "distinct X-Company-Id values")
	fs.BoolVar(&s.ABBA, "abba", false, "alternate which site goes first in each pair of rounds (plain, vigil, vigil, plain, ...) to cancel a steady drift in machine load")
	fs.Float64Var(&s.MinThruput, "min-throughput-ratio", 0.95, "target: median throughput vigil/plain at least this")
	fs.Float64Var(&s.MaxP99Ratio, "max-p99-ratio", 1.10, "target: median p99 vigil/plain at most this")
	fs.BoolVar(&s.JSON, "json", false, "print the report as JSON on stdout (the text report goes to stderr)")
	fs.BoolVar(&s.Verbose, "v", false, "print wrk's output of every round on stderr")
	fs.BoolVar(&s.NoLimits, "no-limits", false, "leave the rate limits and the quota out of the vigil site (identify, block list and recording only), to see what they cost; the targets are for the full site")
	fs.BoolVar(&s.Control, "control", false, "serve the vigil site without the vigil directive, the same as plain: an A/A control that shows the ratios this machine reports for two identical sites (the targets are for the full site)")
	fs.StringVar(&s.CPUProfile, "cpuprofile", "", "write CPU profiles of the gateway caddy during round 1 of each site to `PREFIX`-plain.pprof and PREFIX-vigil.pprof (from its admin /debug/pprof; round 1 then runs slower)")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 || s.Rounds < 3 || s.Duration < time.Second || s.Warmup < 0 || s.Threads < 1 || s.Conns < s.Threads || s.Users < 1 || s.Companies < 1 {
		fmt.Fprintln(os.Stderr, "load: bad flags: want no arguments, -rounds >= 3, -d >= 1s, -warmup >= 0, -t >= 1, -c >= -t, -users >= 1, -companies >= 1")
		return 2
	}
	s.DurationS, s.WarmupS = s.Duration.Seconds(), s.Warmup.Seconds()

	// Bounded in time: the rounds plus generous room for starting and stopping.
	budget := 2*s.Warmup + time.Duration(2*s.Rounds)*s.Duration + 3*time.Minute
	ctx, cancel := context.WithTimeout(context.Background(), budget)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	rep, err := bench(ctx, &s)
	if rep != nil {
		rep.summarize()
		out := io.Writer(os.Stdout)
		if s.JSON {
			out = os.Stderr
		}
		rep.printText(out)
		if s.JSON {
			if jerr := rep.printJSON(os.Stdout); jerr != nil && err == nil {
				err = jerr
			}
		}
	}
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("%w (the whole run is bounded to %s)", err, budget)
		}
		fmt.Fprintln(os.Stderr, "load: error:", err)
		if errors.Is(err, context.Canceled) {
			return 130 // interrupted
		}
		return 1
	}
	if len(rep.Errors) > 0 {
		return 1
	}
	return 0
}

// bench starts the upstream and the gateway, runs the rounds and returns the report. A
// report is returned with whatever was measured even when an error stops the run.
func bench(ctx context.Context, s *settings) (*report, error) {
	rep := &report{Settings: s, Machine: machineInfo()}
	logf := func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }

	bin, err := filepath.Abs(s.Caddy)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("caddy binary: %w (build it with make -f xcaddy.mk build, or set VIGIL_CADDY)", err)
	}
	s.Caddy = bin
	if s.Wrk, err = exec.LookPath(s.Wrk); err != nil {
		return nil, fmt.Errorf("wrk: %w (apt-get install wrk)", err)
	}
	if out, err := exec.CommandContext(ctx, bin, "version").Output(); err == nil {
		rep.Machine.CaddyVersion = strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	}

	dir, err := os.MkdirTemp("", "vigil-load-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)

	var ports [3]int
	for i := range ports {
		if ports[i], err = freePort(); err != nil {
			return nil, err
		}
	}
	upPort, plainPort, vigilPort := ports[0], ports[1], ports[2]

	total := 2*s.Warmup + time.Duration(2*s.Rounds)*s.Duration
	logf("load: %d rounds of %s per site after a %s warm-up each: about %s of load", s.Rounds, s.Duration, s.Warmup, total.Round(time.Second))

	up, err := startCaddy(ctx, "upstream", bin, filepath.Join(dir, "upstream"), upstreamCaddyfile,
		map[string]any{"Port": upPort}, upPort)
	if err != nil {
		return nil, err
	}
	defer up.stop()
	gw, err := startCaddy(ctx, "gateway", bin, filepath.Join(dir, "gateway"), gatewayCaddyfile,
		map[string]any{"Plain": plainPort, "Vigil": vigilPort, "Upstream": upPort, "Limits": !s.NoLimits, "Control": s.Control}, plainPort, vigilPort)
	if err != nil {
		return nil, err
	}
	defer gw.stop()

	urls := map[string]string{
		"plain": fmt.Sprintf("http://127.0.0.1:%d", plainPort),
		"vigil": fmt.Sprintf("http://127.0.0.1:%d", vigilPort),
	}
	if err := checkSites(ctx, urls["plain"], urls["vigil"], !s.NoLimits, s.Control); err != nil {
		return nil, fmt.Errorf("checking the sites before the load: %w\ngateway logs:\n%s", err, gw.logs)
	}

	script := filepath.Join(dir, "load.lua")
	if err := os.WriteFile(script, []byte(renderScript(s.Users, s.Companies)), 0o600); err != nil {
		return nil, err
	}

	rep.LoadBefore, _ = loadAvg()
	defer func() { rep.LoadAfter, _ = loadAvg() }() // also when a round fails
	one := func(round int, site string, d time.Duration) (roundResult, error) {
		rr := roundResult{Round: round, Site: site}
		la, _ := loadAvg()
		rr.Load1 = la[0]
		var prof chan error
		if s.CPUProfile != "" && round == 1 {
			prof = make(chan error, 1)
			go func() {
				prof <- fetchProfile(ctx, gw.adminPort, max(int(d.Seconds())-1, 1), s.CPUProfile+"-"+site+".pprof")
			}()
		}
		gw0, err1 := procCPU(gw.pid())
		up0, err2 := procCPU(up.pid())
		res, wrkCPU, out, err := runWrk(ctx, s.Wrk, script, urls[site], s.Threads, s.Conns, d)
		gw1, err3 := procCPU(gw.pid())
		up1, err4 := procCPU(up.pid())
		if s.Verbose {
			fmt.Fprint(os.Stderr, out)
		}
		if prof != nil {
			if perr := <-prof; perr != nil {
				logf("cpu profile of the %s round: %v", site, perr)
			} else {
				logf("cpu profile of the %s round: %s-%s.pprof", site, s.CPUProfile, site)
			}
		}
		if err != nil {
			return rr, err
		}
		if gw.exited() || up.exited() {
			return rr, fmt.Errorf("a caddy process exited during the round:\ngateway:\n%s\nupstream:\n%s", gw.logs, up.logs)
		}
		rr.wrkResult = res
		if err1 == nil && err2 == nil && err3 == nil && err4 == nil && res.Requests > 0 {
			n := float64(res.Requests)
			rr.GatewayCPU = float64((gw1 - gw0).Microseconds()) / n
			rr.UpstreamCPU = float64((up1 - up0).Microseconds()) / n
			rr.WrkCPU = float64(wrkCPU.Microseconds()) / n
		}
		return rr, nil
	}

	if s.Warmup > 0 {
		for _, site := range []string{"plain", "vigil"} {
			rr, err := one(0, site, s.Warmup)
			if err != nil {
				return rep, fmt.Errorf("warm-up %s: %w", site, err)
			}
			logf("warm-up %s: %.0f req/s, p99 %s", site, rr.RPS, fmtMicros(rr.P99))
			rep.Warmup = append(rep.Warmup, rr)
		}
	}
	for i := 1; i <= s.Rounds; i++ {
		order := []string{"plain", "vigil"}
		if s.ABBA && i%2 == 0 {
			order = []string{"vigil", "plain"}
		}
		for _, site := range order {
			rr, err := one(i, site, s.Duration)
			if err != nil {
				return rep, fmt.Errorf("round %d %s: %w", i, site, err)
			}
			logf("round %d %s: %.0f req/s, p99 %s", i, site, rr.RPS, fmtMicros(rr.P99))
			rep.Rounds = append(rep.Rounds, rr)
		}
	}

	// The vigil site counted the load: u-1's quota usage (it is one of the users).
	if s.NoLimits || s.Control {
		return rep, nil
	}
	if used, err := quotaUsed(ctx, gw.adminPort, "u-1"); err == nil {
		rep.QuotaUsedU1 = used
	} else {
		rep.Errors = append(rep.Errors, fmt.Sprintf("reading u-1's quota usage: %v", err))
	}
	return rep, nil
}

func machineInfo() machine {
	m := machine{CPUs: runtime.NumCPU(), Model: cpuModel(), GOOS: runtime.GOOS}
	if out, err := exec.Command("uname", "-m").Output(); err == nil {
		m.Arch = strings.TrimSpace(string(out))
	} else {
		m.Arch = runtime.GOARCH
	}
	return m
}
