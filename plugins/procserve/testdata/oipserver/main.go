// Command oipserver is a small Open Inference Protocol server for the
// process server's tests, with no dependency outside the standard library.
// It serves one model whose outputs, for each row, are "sum", the sum of
// that row's elements over every numeric or BOOL input (FP64, [rows]), and
// "parity", "even" or "odd" by the rounded sum (BYTES, [rows]). Flags make
// it misbehave in the ways a real model server does.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"math"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	var (
		port        = flag.Int("port", 0, "the port to listen on, on 127.0.0.1")
		name        = flag.String("name", "model", "the model's name")
		readyAfter  = flag.Duration("ready-after", 0, "answer not ready until this long after the start")
		neverReady  = flag.Bool("never-ready", false, "never answer ready")
		exitAtStart = flag.Int("exit-at-start", -1, "exit with this status at once, after a line on stderr")
		crashAfter  = flag.Int("crash-after", 0, "exit with status 2 on this inference request (0: never)")
		crashOnce   = flag.String("crash-once", "", "with -crash-after: crash only if this file does not exist yet, and create it")
		bindOnce    = flag.String("fail-bind-once", "", "fail as if the port were taken if this file does not exist yet, and create it")
		child       = flag.String("child", "", "start a child process that writes its pid to this file and sleeps")
		ignoreTerm  = flag.Bool("ignore-term", false, "ignore SIGTERM")
		sleepOnly   = flag.Bool("sleep", false, "only sleep (the child's mode)")
		pidFile     = flag.String("pid-file", "", "write the pid to this file")
		longLine    = flag.Int("long-line", 0, "print a line of this many bytes at the start")
	)
	flag.Parse()
	if *pidFile != "" {
		if err := os.WriteFile(*pidFile, []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
			log.Fatal(err)
		}
	}
	if *ignoreTerm {
		signal.Ignore(syscall.SIGTERM)
	}
	if *sleepOnly {
		select {}
	}
	if *exitAtStart >= 0 {
		fmt.Fprintln(os.Stderr, "oipserver: cannot open the artifact: no such file")
		os.Exit(*exitAtStart)
	}
	if *bindOnce != "" && first(*bindOnce) {
		fmt.Fprintf(os.Stderr, "listen tcp 127.0.0.1:%d: bind: address already in use\n", *port)
		os.Exit(1)
	}
	if *longLine > 0 {
		b := make([]byte, *longLine)
		for i := range b {
			b[i] = 'x'
		}
		fmt.Println(string(b))
	}
	if *child != "" {
		args := []string{"-sleep", "-pid-file", *child}
		if *ignoreTerm {
			args = append(args, "-ignore-term")
		}
		c := exec.Command(os.Args[0], args...)
		if err := c.Start(); err != nil {
			log.Fatal(err)
		}
	}
	fmt.Printf("oipserver: model %s on port %d, params %s\n", *name, *port, os.Getenv("DROVER_PARAMS"))

	start := time.Now()
	var requests atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v2/health/ready", func(w http.ResponseWriter, r *http.Request) {
		if *neverReady || time.Since(start) < *readyAfter {
			reply(w, http.StatusServiceUnavailable, map[string]any{"ready": false})
			return
		}
		reply(w, http.StatusOK, map[string]any{"ready": true})
	})
	mux.HandleFunc("GET /v2/health/live", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK, map[string]any{"live": true})
	})
	mux.HandleFunc("GET /v2/env/{key}", func(w http.ResponseWriter, r *http.Request) {
		v, ok := os.LookupEnv(r.PathValue("key"))
		reply(w, http.StatusOK, map[string]any{"value": v, "set": ok})
	})
	mux.HandleFunc("GET /v2/models/{name}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("name") != *name {
			reply(w, http.StatusNotFound, map[string]any{"error": "no model " + r.PathValue("name")})
			return
		}
		reply(w, http.StatusOK, map[string]any{"name": *name, "platform": "test", "inputs": []any{},
			"outputs": []any{
				map[string]any{"name": "sum", "datatype": "FP64", "shape": []int{-1}},
				map[string]any{"name": "parity", "datatype": "BYTES", "shape": []int{-1}},
			}})
	})
	mux.HandleFunc("POST /v2/models/{name}/infer", func(w http.ResponseWriter, r *http.Request) {
		if n := requests.Add(1); *crashAfter > 0 && n >= int64(*crashAfter) && (*crashOnce == "" || first(*crashOnce)) {
			fmt.Fprintln(os.Stderr, "oipserver: crashing as told")
			os.Exit(2)
		}
		if r.PathValue("name") != *name {
			reply(w, http.StatusNotFound, map[string]any{"error": "no model " + r.PathValue("name")})
			return
		}
		var req struct {
			Inputs []struct {
				Name     string  `json:"name"`
				Datatype string  `json:"datatype"`
				Shape    []int64 `json:"shape"`
				Data     []any   `json:"data"`
			} `json:"inputs"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			reply(w, http.StatusBadRequest, map[string]any{"error": "malformed request: " + err.Error()})
			return
		}
		if len(req.Inputs) == 0 {
			reply(w, http.StatusBadRequest, map[string]any{"error": "no inputs"})
			return
		}
		rows := int64(-1)
		var sums []float64
		for _, in := range req.Inputs {
			if in.Name == "boom" {
				reply(w, http.StatusInternalServerError, map[string]any{"error": "the model failed"})
				return
			}
			if len(in.Shape) == 0 || rows >= 0 && in.Shape[0] != rows {
				reply(w, http.StatusBadRequest, map[string]any{"error": fmt.Sprintf("input %s: shape %v: every input needs the same rows", in.Name, in.Shape)})
				return
			}
			if rows < 0 {
				rows = in.Shape[0]
				sums = make([]float64, rows)
			}
			if in.Datatype == "BYTES" {
				continue
			}
			per := 1
			if rows > 0 {
				per = len(in.Data) / int(rows)
			}
			for i, v := range in.Data {
				switch v := v.(type) {
				case float64:
					sums[i/per] += v
				case bool:
					if v {
						sums[i/per]++
					}
				default:
					reply(w, http.StatusBadRequest, map[string]any{"error": fmt.Sprintf("input %s: element %d is not a number", in.Name, i)})
					return
				}
			}
		}
		parity := make([]string, len(sums))
		for i, s := range sums {
			parity[i] = "even"
			if int64(math.Round(s))%2 != 0 {
				parity[i] = "odd"
			}
		}
		reply(w, http.StatusOK, map[string]any{"model_name": *name, "outputs": []any{
			map[string]any{"name": "sum", "datatype": "FP64", "shape": []int64{rows}, "data": sums},
			map[string]any{"name": "parity", "datatype": "BYTES", "shape": []int64{rows}, "data": parity},
		}})
	})
	srv := &http.Server{Addr: "127.0.0.1:" + strconv.Itoa(*port), Handler: mux}
	log.Fatal(srv.ListenAndServe())
}

// first reports whether the file did not exist, and creates it.
func first(path string) bool {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return false
	}
	f.Close()
	return true
}

func reply(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
