// Command linearizability checks a client history recorded by hotstandby's
// chaos runs and fault tests (src/chaos/history.ts) with Porcupine, against a
// register per key: put = write, get = read (null = not found).
//
//	linearizability [--timeout 60s] [--visualization out.html] history.jsonl
//
// It prints one JSON object:
//
//	{"linearizable": true|false|"unknown", "ops": n, "keys": n, "failingKeys": [...], "visualization": path|null}
//
// and exits 0 when linearizable, 1 when not, 3 when the check timed out,
// 2 on bad input. On failure Porcupine's HTML visualization of the failing keys
// is written next to the history (history.jsonl -> history.html) unless
// --visualization names another path.
//
// How outcomes map onto the model (docs/chaos.md, "History format"):
//   - ok=true: the operation happened between invokeMs and completeMs.
//   - ok=false: the server definitely refused it before applying it (409
//     not_leader, 503 catching_up): it did not happen and is left out.
//   - ok=null: unknown (timeout, connection reset after sending, 503 after the
//     append was sent). A put may or may not have taken effect: its completion
//     is put after every other event, so Porcupine may place it anywhere after
//     its invocation, including after everything (= it never happened). A get
//     with an unknown result says nothing and is left out.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// record is one line of the history file.
type record struct {
	Client     *int     `json:"client"`
	Op         string   `json:"op"`
	Key        *string  `json:"key"`
	Value      *string  `json:"value"`
	InvokeMs   *float64 `json:"invokeMs"`
	CompleteMs *float64 `json:"completeMs"`
	Ok         *bool    `json:"ok"`
	Member     string   `json:"member"`
	Epoch      *float64 `json:"epoch"`
}

// register is the state of one key: a value, or absent.
type register struct {
	present bool
	value   string
}

type input struct {
	put   bool
	value register // the value written (put) or read (get)
}

type meta struct {
	key    string
	line   int
	member string
	epoch  *float64
	known  bool
}

var registerModel = porcupine.Model{
	Init: func() interface{} { return register{} },
	Step: func(state, in, _ interface{}) (bool, interface{}) {
		s := state.(register)
		i := in.(input)
		if i.put {
			return true, i.value
		}
		return i.value == s, s
	},
	Equal: func(a, b interface{}) bool { return a.(register) == b.(register) },
	DescribeOperation: func(in, _ interface{}) string {
		i := in.(input)
		if i.put {
			return fmt.Sprintf("put %s", describe(i.value))
		}
		return fmt.Sprintf("get -> %s", describe(i.value))
	},
	DescribeState: func(state interface{}) string { return describe(state.(register)) },
	DescribeOperationMetadata: func(info interface{}) string {
		m, ok := info.(meta)
		if !ok {
			return ""
		}
		epoch := "?"
		if m.epoch != nil {
			epoch = fmt.Sprintf("%d", int64(*m.epoch))
		}
		outcome := "acknowledged"
		if !m.known {
			outcome = "outcome unknown"
		}
		return fmt.Sprintf("line %d, member %s, epoch %s, %s", m.line, m.member, epoch, outcome)
	},
}

func describe(r register) string {
	if !r.present {
		return "(absent)"
	}
	return fmt.Sprintf("%q", r.value)
}

type result struct {
	Linearizable  interface{} `json:"linearizable"`
	Ops           int         `json:"ops"`
	Keys          int         `json:"keys"`
	FailingKeys   []string    `json:"failingKeys"`
	Visualization *string     `json:"visualization"`
	// Of the ops: acknowledged, left out as refused, unknown outcome.
	Refused int `json:"refused"`
	Unknown int `json:"unknown"`
}

// maxVisualizedKeys bounds the HTML file: a few failing keys show the problem.
const maxVisualizedKeys = 20

func main() {
	timeout := flag.Duration("timeout", 60*time.Second, "give up (result \"unknown\") after this long")
	vizPath := flag.String("visualization", "", "where to write the HTML visualization on failure (default: the history path with .html)")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: linearizability [--timeout 60s] [--visualization out.html] history.jsonl")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	path := flag.Arg(0)
	byKey, res, err := load(path)
	if err != nil {
		fmt.Fprintf(os.Stderr, "error: %s: %v\n", path, err)
		os.Exit(2)
	}
	if *vizPath == "" {
		*vizPath = strings.TrimSuffix(path, filepath.Ext(path)) + ".html"
	}

	keys := make([]string, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	res.Keys = len(keys)
	res.FailingKeys = []string{}
	deadline := time.Now().Add(*timeout)
	timedOut := false
	for _, k := range keys {
		left := time.Until(deadline)
		if left <= 0 {
			timedOut = true
			break
		}
		switch porcupine.CheckOperationsTimeout(registerModel, byKey[k], left) {
		case porcupine.Illegal:
			res.FailingKeys = append(res.FailingKeys, k)
		case porcupine.Unknown:
			timedOut = true
		}
	}

	code := 0
	switch {
	case len(res.FailingKeys) > 0:
		res.Linearizable = false
		code = 1
		if err := visualize(byKey, res.FailingKeys, *vizPath, *timeout); err != nil {
			fmt.Fprintf(os.Stderr, "warning: writing the visualization to %s: %v\n", *vizPath, err)
		} else {
			res.Visualization = vizPath
		}
	case timedOut:
		res.Linearizable = "unknown"
		code = 3
	default:
		res.Linearizable = true
	}
	out, _ := json.Marshal(res)
	fmt.Println(string(out))
	os.Exit(code)
}

// visualize checks the failing keys again with the verbose checker (one
// partition per key) and writes Porcupine's HTML page.
func visualize(byKey map[string][]porcupine.Operation, failing []string, path string, timeout time.Duration) error {
	if len(failing) > maxVisualizedKeys {
		failing = failing[:maxVisualizedKeys]
	}
	var ops []porcupine.Operation
	for _, k := range failing {
		ops = append(ops, byKey[k]...)
	}
	model := registerModel
	order := make(map[string]int, len(failing))
	for i, k := range failing {
		order[k] = i
	}
	model.Partition = func(history []porcupine.Operation) [][]porcupine.Operation {
		parts := make([][]porcupine.Operation, len(failing))
		for _, op := range history {
			i := order[op.Metadata.(meta).key]
			parts[i] = append(parts[i], op)
		}
		return parts
	}
	_, info := porcupine.CheckOperationsVerbose(model, ops, timeout)
	return porcupine.VisualizePath(model, info, path)
}

// load reads the JSON lines into per-key operation lists.
func load(path string) (map[string][]porcupine.Operation, result, error) {
	var res result
	f, err := os.Open(path)
	if err != nil {
		return nil, res, err
	}
	defer f.Close()
	type pending struct {
		key string
		op  porcupine.Operation
	}
	var ops []pending
	var maxTime int64
	r := bufio.NewReaderSize(f, 1<<20)
	for line := 1; ; line++ {
		text, err := r.ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, res, err
		}
		if strings.TrimSpace(text) != "" {
			var rec record
			if jerr := json.Unmarshal([]byte(text), &rec); jerr != nil {
				return nil, res, fmt.Errorf("line %d: not a JSON object: %v", line, jerr)
			}
			if verr := validate(rec); verr != nil {
				return nil, res, fmt.Errorf("line %d: %v", line, verr)
			}
			res.Ops++
			call := micros(*rec.InvokeMs)
			ret := micros(*rec.CompleteMs)
			if ret > maxTime {
				maxTime = ret
			}
			if call > maxTime {
				maxTime = call
			}
			known := rec.Ok != nil
			if known && !*rec.Ok {
				res.Refused++
			} else if !known {
				res.Unknown++
			}
			// Refused ops did not happen; a read with an unknown result constrains nothing.
			if (known && !*rec.Ok) || (!known && rec.Op == "get") {
				continue
			}
			in := input{put: rec.Op == "put"}
			if rec.Value != nil {
				in.value = register{present: true, value: *rec.Value}
			}
			ops = append(ops, pending{key: *rec.Key, op: porcupine.Operation{
				ClientId: *rec.Client,
				Input:    in,
				Call:     call,
				Output:   nil,
				Return:   ret,
				Metadata: meta{key: *rec.Key, line: line, member: rec.Member, epoch: rec.Epoch, known: known},
			}})
		}
		if errors.Is(err, io.EOF) {
			break
		}
	}
	byKey := make(map[string][]porcupine.Operation)
	for _, p := range ops {
		if !p.op.Metadata.(meta).known {
			// Unknown outcome: completes "at infinity", after every other event.
			p.op.Return = maxTime + 1
		}
		byKey[p.key] = append(byKey[p.key], p.op)
	}
	return byKey, res, nil
}

func validate(r record) error {
	switch {
	case r.Client == nil || *r.Client < 0:
		return errors.New(`"client" must be a non-negative integer`)
	case r.Op != "put" && r.Op != "get":
		return fmt.Errorf(`"op" must be "put" or "get", not %q`, r.Op)
	case r.Key == nil:
		return errors.New(`"key" must be a string`)
	case r.Op == "put" && r.Value == nil:
		return errors.New(`a put needs a string "value"`)
	case r.InvokeMs == nil || r.CompleteMs == nil || math.IsNaN(*r.InvokeMs) || math.IsNaN(*r.CompleteMs):
		return errors.New(`"invokeMs" and "completeMs" must be numbers`)
	case *r.CompleteMs < *r.InvokeMs:
		return fmt.Errorf(`"completeMs" (%v) is before "invokeMs" (%v)`, *r.CompleteMs, *r.InvokeMs)
	}
	return nil
}

// micros turns milliseconds (fractional, from performance.now()) into integer microseconds.
func micros(ms float64) int64 { return int64(math.Round(ms * 1000)) }
