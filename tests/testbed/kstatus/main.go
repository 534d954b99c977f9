// kstatus: the reference verdicts for gitopsd's health differential test (tests/health_kstatus.rs).
//
//	kstatus              reads Kubernetes objects as JSON from stdin (a stream of values; an array
//	                     counts as its elements) and prints one JSON line per object:
//	                     {"status": "Current|InProgress|Failed|Terminating", "message": "...", "error": "..."}
//	kstatus cases DIR    prints kstatus's own test objects, found in the *_test.go files of DIR
//	                     (pkg/kstatus/status of the cli-utils module), one JSON line each:
//	                     {"name": "file.go:variable", "object": {...}}
//
// Built by tests/testbed/build kstatus against the cli-utils version in tests/testbed/versions.sh.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"
)

type verdict struct {
	Status  string `json:"status"`
	Message string `json:"message"`
	Error   string `json:"error,omitempty"`
}

type testCase struct {
	Name   string          `json:"name"`
	Object json.RawMessage `json:"object"`
}

func main() {
	var err error
	switch {
	case len(os.Args) == 1:
		err = compute(os.Stdin, os.Stdout)
	case len(os.Args) == 3 && os.Args[1] == "cases":
		err = cases(os.Args[2], os.Stdout)
	default:
		err = errors.New("usage: kstatus < objects.json | kstatus cases DIR")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "kstatus:", err)
		os.Exit(1)
	}
}

func compute(in io.Reader, out io.Writer) error {
	dec := json.NewDecoder(bufio.NewReader(in))
	enc := json.NewEncoder(out)
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return fmt.Errorf("reading objects: %w", err)
		}
		objects := []json.RawMessage{raw}
		if strings.HasPrefix(strings.TrimSpace(string(raw)), "[") {
			if err := json.Unmarshal(raw, &objects); err != nil {
				return fmt.Errorf("reading array of objects: %w", err)
			}
		}
		for _, o := range objects {
			if err := enc.Encode(computeOne(o)); err != nil {
				return err
			}
		}
	}
}

func computeOne(raw json.RawMessage) verdict {
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(raw); err != nil {
		return verdict{Error: "decoding object: " + err.Error()}
	}
	res, err := status.Compute(u)
	if err != nil {
		return verdict{Error: err.Error()}
	}
	return verdict{Status: res.Status.String(), Message: res.Message}
}

// cases prints every raw string literal of DIR's test files that is a YAML object with apiVersion
// and kind, named by the variable it is assigned to (or its line).
func cases(dir string, out io.Writer) error {
	files, err := filepath.Glob(filepath.Join(dir, "*_test.go"))
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return fmt.Errorf("no *_test.go files in %s", dir)
	}
	sort.Strings(files)
	enc := json.NewEncoder(out)
	count := 0
	for _, path := range files {
		found, err := casesIn(path)
		if err != nil {
			return err
		}
		for _, c := range found {
			if err := enc.Encode(c); err != nil {
				return err
			}
		}
		count += len(found)
	}
	if count == 0 {
		return fmt.Errorf("no test objects found in %s", dir)
	}
	return nil
}

func casesIn(path string) ([]testCase, error) {
	fset := token.NewFileSet()
	file, err := parser.ParseFile(fset, path, nil, 0)
	if err != nil {
		return nil, err
	}
	names := map[*ast.BasicLit]string{}
	ast.Inspect(file, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.ValueSpec:
			for i, v := range n.Values {
				if lit, ok := v.(*ast.BasicLit); ok && i < len(n.Names) {
					names[lit] = n.Names[i].Name
				}
			}
		case *ast.AssignStmt:
			for i, v := range n.Rhs {
				if lit, ok := v.(*ast.BasicLit); ok && i < len(n.Lhs) {
					if id, ok := n.Lhs[i].(*ast.Ident); ok {
						names[lit] = id.Name
					}
				}
			}
		}
		return true
	})
	var found []testCase
	var walkErr error
	ast.Inspect(file, func(n ast.Node) bool {
		lit, ok := n.(*ast.BasicLit)
		if !ok || lit.Kind != token.STRING || !strings.HasPrefix(lit.Value, "`") || walkErr != nil {
			return true
		}
		text, err := strconv.Unquote(lit.Value)
		if err != nil {
			walkErr = err
			return false
		}
		obj, ok := yamlObject(text)
		if !ok {
			return true
		}
		name := names[lit]
		if name == "" {
			name = fmt.Sprintf("line%d", fset.Position(lit.Pos()).Line)
		}
		found = append(found, testCase{Name: filepath.Base(path) + ":" + name, Object: obj})
		return true
	})
	return found, walkErr
}

// yamlObject returns the literal as JSON if it is a Kubernetes object. The tests fill a "%s" with
// time.Now() (a Pod's creationTimestamp), so that is done here too, at extraction time.
func yamlObject(text string) (json.RawMessage, bool) {
	if strings.Contains(text, "%s") {
		text = strings.ReplaceAll(text, "%s", time.Now().UTC().Format(time.RFC3339))
	}
	j, err := yaml.YAMLToJSON([]byte(text))
	if err != nil {
		return nil, false
	}
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if json.Unmarshal(j, &head) != nil || head.APIVersion == "" || head.Kind == "" {
		return nil, false
	}
	return j, true
}
