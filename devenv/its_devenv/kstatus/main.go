// Command kstatus prints what kstatus (sigs.k8s.io/cli-utils/pkg/kstatus/status), the
// library Flux and kpt use to decide whether a resource is reconciled, computes for
// Kubernetes objects.
//
// It reads one JSON object, a JSON array of objects, or a List (an object with
// "items") on stdin, and writes {"status": ..., "message": ...} for an object, or a
// JSON array of those (in input order) for an array or a List. The status is one of
// InProgress, Current, Failed, Terminating. Exit status 1 when an object cannot be
// read or computed, 2 on a usage error.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type result struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

func compute(obj map[string]interface{}) (result, error) {
	res, err := status.Compute(&unstructured.Unstructured{Object: obj})
	if err != nil {
		return result{}, err
	}
	return result{Status: string(res.Status), Message: res.Message}, nil
}

func run(in io.Reader, out io.Writer) error {
	var doc interface{}
	dec := json.NewDecoder(in)
	dec.UseNumber() // generations stay integers, as the API server sends them
	if err := dec.Decode(&doc); err != nil {
		return fmt.Errorf("reading JSON from stdin: %w", err)
	}
	var items []interface{}
	single := false
	switch v := doc.(type) {
	case []interface{}:
		items = v
	case map[string]interface{}:
		if list, ok := v["items"].([]interface{}); ok {
			items = list
		} else {
			items, single = []interface{}{v}, true
		}
	default:
		return fmt.Errorf("expected a JSON object or array, got %T", doc)
	}
	results := make([]result, 0, len(items))
	for i, item := range items {
		obj, ok := item.(map[string]interface{})
		if !ok {
			return fmt.Errorf("item %d: expected a JSON object, got %T", i, item)
		}
		r, err := compute(normalize(obj).(map[string]interface{}))
		if err != nil {
			return fmt.Errorf("item %d: %w", i, err)
		}
		results = append(results, r)
	}
	enc := json.NewEncoder(out)
	if single {
		return enc.Encode(results[0])
	}
	return enc.Encode(results)
}

// normalize turns json.Number into int64 (or float64), the types unstructured uses.
func normalize(v interface{}) interface{} {
	switch x := v.(type) {
	case map[string]interface{}:
		for k, e := range x {
			x[k] = normalize(e)
		}
		return x
	case []interface{}:
		for i, e := range x {
			x[i] = normalize(e)
		}
		return x
	case json.Number:
		if n, err := x.Int64(); err == nil {
			return n
		}
		f, _ := x.Float64()
		return f
	default:
		return v
	}
}

func main() {
	if len(os.Args) > 1 {
		fmt.Fprintln(os.Stderr, "usage: kstatus < object.json  (an object, an array or a List)")
		os.Exit(2)
	}
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "kstatus:", err)
		os.Exit(1)
	}
}
