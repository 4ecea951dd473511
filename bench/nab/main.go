// Command nab scores the anomaly detector on the NAB development corpus.
//
// It replays every data/<category>/<file>.csv of the corpus through anomaly.Replay (as
// "caddy vigil replay --metric latency" does) into <out>/<category>/<file>.csv at the chosen
// sensitivity, and into <out>-<sensitivity>/... for the other two, then runs the corpus'
// scorer (nabscore.py) on each and prints one table: the NAB profiles with the threshold
// swept over anomaly_score, and the score of the alert column at each sensitivity.
//
//	go run ./bench/nab [-data ../shared/nab] [-out out/nab] [-sensitivity moderate] [-per-file]
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"

	"github.com/vigilgw/vigil/detector/anomaly"
)

var profiles = []string{"standard", "reward_low_FP_rate", "reward_low_FN_rate"}

type outcome struct {
	Score     *float64 `json:"score"`
	Threshold *float64 `json:"threshold"`
	TP, FN    int
	FP        int
}

type report struct {
	Profiles map[string]struct {
		Sweep outcome `json:"sweep"`
		Fixed outcome `json:"fixed"`
	} `json:"profiles"`
}

func main() {
	data := flag.String("data", "../shared/nab", "corpus directory holding data/, labels/ and nabscore.py")
	out := flag.String("out", "out/nab", "output directory for the chosen sensitivity; the others go to OUT-<sensitivity>")
	sens := flag.String("sensitivity", "moderate", "sensitivity of the alert column in OUT: slight, moderate or severe")
	perFile := flag.Bool("per-file", false, "print the scorer's per-file breakdown for OUT")
	metric := flag.String("metric", "latency", "metric kind for every series: latency (continuous) or count")
	flag.Parse()
	if err := run(*data, *out, *sens, *metric, *perFile); err != nil {
		fmt.Fprintln(os.Stderr, "nab:", err)
		os.Exit(1)
	}
}

func run(data, out, sensName, metric string, perFile bool) error {
	main, err := anomaly.ParseSensitivity(sensName)
	if err != nil {
		return err
	}
	kind, err := anomaly.ParseKind(metric)
	if err != nil {
		return err
	}
	files, err := corpusFiles(filepath.Join(data, "data"))
	if err != nil {
		return err
	}
	all := []anomaly.Sensitivity{anomaly.Slight, anomaly.Moderate, anomaly.Severe}
	dirs := map[anomaly.Sensitivity]string{}
	for _, s := range all {
		dirs[s] = out + "-" + s.String()
	}
	dirs[main] = out
	if err := replayAll(data, files, kind, dirs); err != nil {
		return err
	}
	reports := map[anomaly.Sensitivity]*report{}
	for _, s := range all {
		rep, text, err := score(data, dirs[s], perFile && s == main)
		if err != nil {
			return err
		}
		if perFile && s == main {
			fmt.Print(text)
		}
		reports[s] = rep
	}
	fmt.Printf("NAB development corpus: %d files, metric %s\n\n", len(files), kind)
	fmt.Printf("| profile | sweep | threshold | TP | FN | FP | fixed slight | fixed moderate | fixed severe |\n")
	fmt.Printf("|---|---|---|---|---|---|---|---|---|\n")
	for _, p := range profiles {
		sw := reports[main].Profiles[p].Sweep
		fmt.Printf("| %s | %s | %s | %d | %d | %d |", p, num(sw.Score), num(sw.Threshold), sw.TP, sw.FN, sw.FP)
		for _, s := range all {
			f := reports[s].Profiles[p].Fixed
			fmt.Printf(" %s (%d/%d/%d) |", num(f.Score), f.TP, f.FN, f.FP)
		}
		fmt.Println()
	}
	fmt.Println("\nfixed: score (TP/FN/FP) of the alert column, no sweep")
	return nil
}

func num(p *float64) string {
	if p == nil {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", *p)
}

// corpusFiles lists <category>/<file>.csv under dir.
func corpusFiles(dir string) ([]string, error) {
	var files []string
	err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !e.IsDir() && strings.HasSuffix(path, ".csv") {
			rel, err := filepath.Rel(dir, path)
			if err != nil {
				return err
			}
			files = append(files, rel)
		}
		return nil
	})
	if err == nil && len(files) == 0 {
		err = fmt.Errorf("no CSV files under %s", dir)
	}
	sort.Strings(files)
	return files, err
}

// replayAll replays each file once per sensitivity, a few files at a time.
func replayAll(data string, files []string, kind anomaly.Kind, dirs map[anomaly.Sensitivity]string) error {
	type job struct {
		file string
		sens anomaly.Sensitivity
		dir  string
	}
	jobs := make(chan job)
	errs := make(chan error, len(files)*len(dirs))
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for j := range jobs {
				if err := replayFile(filepath.Join(data, "data", j.file), filepath.Join(j.dir, j.file), kind, j.sens); err != nil {
					errs <- err
				}
			}
		})
	}
	for s, dir := range dirs {
		for _, f := range files {
			jobs <- job{f, s, dir}
		}
	}
	close(jobs)
	wg.Wait()
	close(errs)
	return <-errs
}

func replayFile(src, dst string, kind anomaly.Kind, s anomaly.Sensitivity) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	o, err := os.Create(dst)
	if err != nil {
		return err
	}
	if err := anomaly.Replay(in, o, anomaly.ReplayOptions{Kind: kind, Sensitivity: s}); err != nil {
		o.Close()
		return fmt.Errorf("%s: %w", src, err)
	}
	return o.Close()
}

// score runs nabscore.py on dir and returns its JSON report (and its text report when
// perFile is set).
func score(data, dir string, perFile bool) (*report, string, error) {
	tmp, err := os.CreateTemp("", "nabscore-*.json")
	if err != nil {
		return nil, "", err
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	args := []string{filepath.Join(data, "nabscore.py"), "--data", filepath.Join(data, "data"),
		"--labels", filepath.Join(data, "labels", "combined_windows.json"), "--results", dir, "--json", tmp.Name()}
	if perFile {
		args = append(args, "--per-file")
	}
	cmd := exec.Command("python3", args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, "", fmt.Errorf("nabscore.py on %s: %v: %s", dir, err, stderr.String())
	}
	b, err := os.ReadFile(tmp.Name())
	if err != nil {
		return nil, "", err
	}
	var rep report
	if err := json.Unmarshal(b, &rep); err != nil {
		return nil, "", fmt.Errorf("nabscore.py JSON: %v", err)
	}
	return &rep, stdout.String(), nil
}
