package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"
	"go.yaml.in/yaml/v3"
)

// configFormats maps a config file's extension to its decoder. Each one
// yields a map of keys to values, turned into JSON so that one set of
// rules (setFromJSON) gives every format the same meaning and the same
// errors.
var configFormats = map[string]func(path string, b []byte) (map[string]any, error){
	".json": decodeJSONConfig,
	".yaml": decodeYAMLConfig,
	".yml":  decodeYAMLConfig,
	".toml": decodeTOMLConfig,
}

// readConfig reads a config file, in JSON, YAML or TOML by its extension,
// whose top-level keys are settings' names.
func readConfig(path string, settings []*setting) (map[string]json.RawMessage, error) {
	ext := strings.ToLower(filepath.Ext(path))
	decode, ok := configFormats[ext]
	if !ok {
		return nil, fmt.Errorf("config file %s: unknown format %q; name it .json, .yaml (or .yml) or .toml", path, ext)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("config file %s does not exist", path)
		}
		return nil, fmt.Errorf("config file %s: %v", path, errors.Unwrap(err))
	}
	values, err := decode(path, b)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, s := range settings {
		if s.name != "config" {
			names = append(names, s.name)
		}
	}
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	m := make(map[string]json.RawMessage, len(values))
	for _, k := range keys {
		if !slices.Contains(names, k) {
			keysAre := "the keys are"
			if near := closest(k, names); near != "" {
				keysAre = fmt.Sprintf("did you mean %q? The keys are", near)
			}
			return nil, fmt.Errorf("config file %s: unknown key %q; %s the long names of recluster run's flags: %s", path, k, keysAre, strings.Join(names, ", "))
		}
		raw, err := json.Marshal(values[k])
		if err != nil {
			return nil, fmt.Errorf("config file %s: %q: %v", path, k, err)
		}
		m[k] = raw
	}
	return m, nil
}

func decodeJSONConfig(path string, b []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber() // 4 stays "4", not "4e+00"
	var m map[string]any
	if err := dec.Decode(&m); err != nil || dec.More() {
		if err == nil {
			err = errors.New("more than one JSON value")
		}
		return nil, fmt.Errorf("config file %s is not a JSON object: %v", path, describeJSONError(b, err))
	}
	if m == nil {
		return nil, fmt.Errorf("config file %s is not a JSON object", path)
	}
	return m, nil
}

func decodeYAMLConfig(path string, b []byte) (map[string]any, error) {
	var m map[string]any
	// yaml.v3 refuses duplicate keys; its errors carry the line.
	if err := yaml.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("config file %s is not a YAML mapping: %v", path, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if m == nil {
		return nil, fmt.Errorf("config file %s is not a YAML mapping", path)
	}
	return m, nil
}

func decodeTOMLConfig(path string, b []byte) (map[string]any, error) {
	var m map[string]any
	if _, err := toml.Decode(string(b), &m); err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("config file %s is not valid TOML: line %d: %s", path, pe.Position.Line, pe.Message)
		}
		return nil, fmt.Errorf("config file %s is not valid TOML: %v", path, err)
	}
	for k, v := range m {
		if _, ok := v.(map[string]any); ok {
			// A table such as [workers] would name a key, not a value.
			return nil, fmt.Errorf("config file %s: %q is a table; the keys are top-level settings, such as workers = 4", path, k)
		}
	}
	return m, nil
}

// closest returns the name nearest to key, if it is near enough to be a
// typo (at most a third of its letters wrong), or "".
func closest(key string, names []string) string {
	best, bestDist := "", len(key)/3+1
	for _, n := range names {
		if d := editDistance(key, n); d < bestDist {
			best, bestDist = n, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
