package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// A setting is one option of recluster run: a flag (and maybe a one-letter
// alias), an environment variable and a config file key (the flag's long
// name). Each setting takes its value from exactly one place: the flag if
// given, else the environment variable if set and not empty, else the
// config file, else the default. A list given at a higher level replaces
// the lower one.
type setting struct {
	name  string // flag name and config file key
	short string // one-letter alias, or ""
	env   string // environment variable, or "" for none
	value flag.Value
	list  bool // repeatable; the variable holds a comma-separated list
}

// layer parses args into fs (whose flags are the settings), then fills the
// settings not given as flags from the environment (getenv) and then from
// the config file named by the config setting. It returns the arguments
// left after the flags and whether they followed a "--".
func layer(fs *flag.FlagSet, settings []*setting, args []string, getenv func(string) string, configPath func() string) (rest []string, dashdash bool, err error) {
	if err := fs.Parse(args); err != nil {
		return nil, false, err
	}
	rest = fs.Args()
	if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
		dashdash = true
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	isGiven := func(s *setting) bool { return given[s.name] || (s.short != "" && given[s.short]) }

	fromFile := map[string]json.RawMessage{}
	if path := configPath(); path != "" {
		if fromFile, err = readConfig(path, settings); err != nil {
			return nil, false, err
		}
	}
	for _, s := range settings {
		if isGiven(s) {
			continue
		}
		if s.env != "" {
			if v := getenv(s.env); v != "" {
				items := []string{v}
				if s.list {
					items = splitList(v)
				}
				for _, item := range items {
					if err := s.value.Set(item); err != nil {
						return nil, false, fmt.Errorf("%s=%q: %v", s.env, v, err)
					}
				}
				continue
			}
		}
		if raw, ok := fromFile[s.name]; ok {
			if err := setFromJSON(s, raw); err != nil {
				return nil, false, fmt.Errorf("config file %s: %q: %v", configPath(), s.name, err)
			}
		}
	}
	return rest, dashdash, nil
}

func splitList(v string) []string {
	var out []string
	for _, item := range strings.Split(v, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// describeJSONError adds the line number to a syntax error.
func describeJSONError(b []byte, err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		line := 1 + bytes.Count(b[:min(int(se.Offset), len(b))], []byte("\n"))
		return fmt.Sprintf("line %d: %v", line, err)
	}
	return err.Error()
}

func setFromJSON(s *setting, raw json.RawMessage) error {
	raw = bytes.TrimSpace(raw)
	if string(raw) == "null" {
		return nil
	}
	var items []string
	if len(raw) > 0 && raw[0] == '[' {
		if !s.list {
			return errors.New("takes one value, not a list")
		}
		if err := json.Unmarshal(raw, &items); err != nil {
			return errors.New("want a list of strings")
		}
	} else {
		item, err := jsonScalar(raw)
		if err != nil {
			return err
		}
		items = []string{item}
	}
	for _, item := range items {
		if err := s.value.Set(item); err != nil {
			return err
		}
	}
	return nil
}

func jsonScalar(raw json.RawMessage) (string, error) {
	switch {
	case len(raw) == 0:
		return "", errors.New("no value")
	case raw[0] == '"':
		var s string
		err := json.Unmarshal(raw, &s)
		return s, err
	case raw[0] == '{':
		return "", errors.New("want a string, number or boolean, not an object")
	}
	return string(raw), nil // a number or a boolean, as text
}

// Value types for the settings. Each Set error names the expected form.

type intValue struct {
	n   *int
	min int
}

func (v intValue) String() string {
	if v.n == nil {
		return ""
	}
	return strconv.Itoa(*v.n)
}

func (v intValue) Set(s string) error {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < v.min {
		return fmt.Errorf("want a whole number of at least %d", v.min)
	}
	*v.n = n
	return nil
}

// durationValue records whether it was set, where zero and unset differ
// (set is nil where they do not).
type durationValue struct {
	d     *time.Duration
	set   *bool
	check func(time.Duration) error
}

func (v durationValue) String() string {
	if v.d == nil {
		return ""
	}
	return v.d.String()
}

func (v durationValue) Set(s string) error {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return errors.New("want a duration with a unit, such as 500ms, 10s or 2m")
	}
	if v.check != nil {
		if err := v.check(d); err != nil {
			return err
		}
	}
	*v.d = d
	if v.set != nil {
		*v.set = true
	}
	return nil
}

func atLeast(min time.Duration, what string) func(time.Duration) error {
	return func(d time.Duration) error {
		if d < min {
			return errors.New(what)
		}
		return nil
	}
}

type stringValue struct {
	s     *string
	check func(string) error
}

func (v stringValue) String() string {
	if v.s == nil {
		return ""
	}
	return *v.s
}

func (v stringValue) Set(s string) error {
	if v.check != nil {
		if err := v.check(s); err != nil {
			return err
		}
	}
	*v.s = s
	return nil
}

func oneOf(choices ...string) func(string) error {
	return func(s string) error {
		if !slices.Contains(choices, s) {
			return fmt.Errorf("want one of %s", strings.Join(choices, ", "))
		}
		return nil
	}
}

func notEmpty(s string) error {
	if s == "" {
		return errors.New("want a non-empty value")
	}
	return nil
}

type listValue struct {
	items *[]string
	check func(string) error
}

func (v listValue) String() string {
	if v.items == nil {
		return ""
	}
	return strings.Join(*v.items, ",")
}

func (v listValue) Set(s string) error {
	if v.check != nil {
		if err := v.check(s); err != nil {
			return err
		}
	}
	*v.items = append(*v.items, s)
	return nil
}

type boolValue struct{ b *bool }

func (v boolValue) String() string {
	if v.b == nil {
		return "false"
	}
	return strconv.FormatBool(*v.b)
}

func (v boolValue) Set(s string) error {
	b, err := strconv.ParseBool(strings.TrimSpace(s))
	if err != nil {
		return errors.New("want true or false")
	}
	*v.b = b
	return nil
}

// IsBoolFlag lets the flag package accept --prefix without a value.
func (v boolValue) IsBoolFlag() bool { return true }

// sizeValue is a byte count, with an optional K, M or G suffix (powers of
// 1024).
type sizeValue struct{ n *int64 }

func (v sizeValue) String() string {
	if v.n == nil {
		return "0"
	}
	return strconv.FormatInt(*v.n, 10)
}

func (v sizeValue) Set(s string) error {
	s = strings.TrimSuffix(strings.ToUpper(strings.TrimSpace(s)), "B")
	unit := int64(1)
	for suffix, u := range map[string]int64{"K": 1 << 10, "M": 1 << 20, "G": 1 << 30} {
		if t, ok := strings.CutSuffix(s, suffix); ok {
			s, unit = t, u
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/unit {
		return errors.New("want a size in bytes, or with K, M or G, such as 512M")
	}
	*v.n = n * unit
	return nil
}
