package main

import (
	"bytes"
	"embed"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"text/template"
)

const unitUsage = `Usage: recluster unit [--socket] [--name NAME] [--bin PATH]
                      [--output-dir DIR] [RUN FLAGS...] -- PROGRAM [ARGS...]

Print a systemd unit that runs recluster run with the given flags and
program, made from the same templates as the units in deploy/ (see
docs/operations.md, "Running under systemd"). With --socket, print a socket
unit that holds the --listen socket (exactly one, NAME=ADDR) and the service
it activates. Nothing is installed: save the output in /etc/systemd/system/,
then systemctl daemon-reload. Edit User= and Group= (recluster by default)
to the account the master runs as.

The unit's control socket is /run/NAME/control.sock (NAME-socket with
--socket) unless --control is given.

Flags:
      --socket          also print NAME.socket; the service is then
                        NAME-socket.service, started by the socket
      --name NAME       the unit's name (default recluster)
      --bin PATH        the recluster binary in ExecStart (default: this one)
      --output-dir DIR  write the units into DIR instead of printing them
  -h, --help            show this help
`

//go:embed units/*.tmpl
var unitTemplates embed.FS

// unitData fills the unit templates.
type unitData struct {
	Name         string // the unit name: NAME.service, or NAME.socket with NAME-socket.service
	Service      string // the service unit's file name
	Socket       string // the socket unit's file name, with --socket
	Program      string // the program's base name, for descriptions
	ExecStart    string
	Control      string
	RuntimeDir   string
	FDName       string
	ListenStream string
}

// unitFile is one generated file.
type unitFile struct{ name, text string }

func unitCommand(args []string, stdout io.Writer) error {
	var own struct {
		socket            bool
		name, bin, outDir string
	}
	own.name = "recluster"
	var runArgs []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			runArgs = append(runArgs, args[i:]...)
			break
		}
		value := func() (string, error) {
			if k, v, ok := strings.Cut(a, "="); ok && strings.HasPrefix(k, "--") {
				return v, nil
			}
			if i+1 >= len(args) {
				return "", usagef("unit: %s needs a value (see recluster help unit)", a)
			}
			i++
			return args[i], nil
		}
		var err error
		switch flagName, _, _ := strings.Cut(a, "="); flagName {
		case "-h", "--help", "-help":
			fmt.Fprint(stdout, unitUsage)
			return nil
		case "--socket":
			own.socket = true
		case "--name":
			own.name, err = value()
		case "--bin":
			own.bin, err = value()
		case "--output-dir":
			own.outDir, err = value()
		default:
			runArgs = append(runArgs, a)
		}
		if err != nil {
			return err
		}
	}
	files, err := makeUnits(own.name, own.bin, own.socket, runArgs)
	if err != nil {
		return err
	}
	if own.outDir != "" {
		for _, f := range files {
			path := filepath.Join(own.outDir, f.name)
			if err := os.WriteFile(path, []byte(f.text), 0o644); err != nil {
				return fmt.Errorf("unit: %w", err)
			}
			fmt.Fprintln(stdout, path)
		}
		return nil
	}
	for i, f := range files {
		if len(files) > 1 {
			if i > 0 {
				fmt.Fprintln(stdout)
			}
			fmt.Fprintf(stdout, "# ==> %s <==\n", f.name)
		}
		fmt.Fprint(stdout, f.text)
	}
	return nil
}

// makeUnits renders the units for recluster run runArgs.
func makeUnits(name, bin string, socket bool, runArgs []string) ([]unitFile, error) {
	if name == "" || strings.ContainsAny(name, "/ \t\n@") {
		return nil, usagef("unit: --name %q is not a unit name; use letters, digits, - and _, such as myapp", name)
	}
	// The flags must be ones recluster run accepts: the unit would fail at
	// start otherwise. The environment is not the unit's: leave it out.
	cfg, err := parseRun(runArgs, func(string) string { return "" })
	if err != nil {
		return nil, fmt.Errorf("unit: %w", err)
	}
	if bin == "" {
		bin = selfPath()
	}
	program := cfg.program
	if !filepath.IsAbs(program) && cfg.dir == "" {
		found, err := exec.LookPath(program)
		if err != nil {
			return nil, usagef("unit: cannot find the program %q; give its absolute path, as systemd runs it from /", program)
		}
		if program, err = filepath.Abs(found); err != nil {
			return nil, fmt.Errorf("unit: %w", err)
		}
	}
	d := unitData{Name: name, Service: name + ".service", Program: filepath.Base(program), RuntimeDir: name}
	if socket {
		d.Socket, d.Service, d.RuntimeDir = name+".socket", name+"-socket.service", name+"-socket"
		if len(cfg.listen) != 1 {
			return nil, usagef("unit: --socket needs exactly one --listen NAME=ADDR, the socket the socket unit holds; got %d", len(cfg.listen))
		}
		spec, err := parseListen(cfg.listen[0])
		if err != nil {
			return nil, usagef("unit: --listen %s: %v", cfg.listen[0], err)
		}
		if !spec.named {
			return nil, usagef("unit: --socket needs a named --listen, such as http=%s: the name is the socket's FileDescriptorName", cfg.listen[0])
		}
		d.FDName, d.ListenStream = spec.sock.Name, spec.sock.Address
		if port, ok := strings.CutPrefix(spec.sock.Address, ":"); ok && spec.sock.Network == "tcp" {
			// :PORT is every address of both families, in Go and in
			// systemd's bare-port form (0.0.0.0:PORT would be IPv4 only
			// in systemd, while Go listens on both).
			d.ListenStream = port
		}
	}
	tokens := quoteAll(runArgs[:slices.Index(runArgs, "--")]) // parseRun made sure of the --
	for i, tok := range tokens {
		if tok == "--control" && i+1 < len(tokens) || strings.HasPrefix(tok, "--control=") {
			d.Control = cfg.controlPath
		}
	}
	if d.Control == "" {
		d.Control = "/run/" + d.RuntimeDir + "/control.sock"
		tokens = append(tokens, "--control", d.Control)
	}
	d.ExecStart = execStart(bin, tokens, append([]string{program}, cfg.args...))

	var files []unitFile
	render := func(tmpl, file string) error {
		t, err := template.ParseFS(unitTemplates, "units/"+tmpl)
		if err != nil {
			return err
		}
		var b bytes.Buffer
		if err := t.Execute(&b, d); err != nil {
			return err
		}
		files = append(files, unitFile{file, b.String()})
		return nil
	}
	if socket {
		err = render("socket.tmpl", d.Socket)
		if err == nil {
			err = render("socket-service.tmpl", d.Service)
		}
	} else {
		err = render("service.tmpl", d.Service)
	}
	return files, err
}

// execStart lays out ExecStart as deploy/'s units do: one flag and its
// value per line, then the program.
func execStart(bin string, flags, program []string) string {
	takesValue := map[string]bool{}
	for _, f := range commandFlags("run") {
		if f.arg != "" {
			takesValue["--"+f.long] = true
			if f.short != "" {
				takesValue["-"+f.short] = true
			}
		}
	}
	long := map[string]string{}
	for _, f := range commandFlags("run") {
		if f.short != "" {
			long["-"+f.short] = "--" + f.long
		}
	}
	lines := []string{"ExecStart=" + quoteSystemd(bin) + " run"}
	for i := 0; i < len(flags); i++ {
		f := flags[i]
		if l, ok := long[f]; ok {
			f = l
		}
		line := f
		if takesValue[f] && i+1 < len(flags) {
			i++
			line += " " + flags[i]
		}
		lines = append(lines, "    "+line)
	}
	lines = append(lines, "    -- "+strings.Join(quoteAll(program), " "))
	return strings.Join(lines, " \\\n")
}

func quoteAll(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = quoteSystemd(a)
	}
	return out
}

// quoteSystemd writes an argument so that systemd's ExecStart parsing
// gives it back unchanged: % and $ doubled, quotes where it has spaces.
func quoteSystemd(a string) string {
	a = strings.ReplaceAll(a, "%", "%%")
	a = strings.ReplaceAll(a, "$", "$$")
	if a != "" && !strings.ContainsAny(a, " \t\n\"'\\;") {
		return a
	}
	a = strings.ReplaceAll(a, `\`, `\\`)
	a = strings.ReplaceAll(a, `"`, `\"`)
	return `"` + a + `"`
}

// selfPath is this recluster binary, for ExecStart.
func selfPath() string {
	exe, err := os.Executable()
	if err != nil {
		return "/usr/local/bin/recluster"
	}
	if resolved, err := filepath.EvalSymlinks(exe); err == nil {
		return resolved
	}
	return exe
}
