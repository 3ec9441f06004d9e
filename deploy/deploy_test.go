package deploy_test

import (
	"bufio"
	"bytes"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// binDir holds the static binaries that TestMain builds once, as the
// Dockerfile does.
var (
	binDir   string
	buildErr error
	once     sync.Once
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// staticBinaries builds cmd/recluster and examples/hello the way the
// Dockerfile does (CGO_ENABLED=0, -trimpath, -ldflags=-s -w) for linux.
func staticBinaries(t *testing.T) (recluster, hello string) {
	t.Helper()
	once.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "recluster-deploy-test-")
		if buildErr != nil {
			return
		}
		for _, pkg := range []string{"./cmd/recluster", "./examples/hello"} {
			cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", filepath.Join(binDir, filepath.Base(pkg)), pkg)
			cmd.Dir = ".."
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("CGO_ENABLED=0 go build %s: %v\n%s", pkg, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, "recluster"), filepath.Join(binDir, "hello")
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// unit is a parsed systemd unit file: section -> key -> values.
type unit map[string]map[string][]string

func (u unit) get(section, key string) string {
	v := u[section][key]
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

// parseUnit reads the subset of the unit file syntax the recipes use:
// sections, KEY=VALUE, comments and backslash continuations.
func parseUnit(t *testing.T, path string) unit {
	t.Helper()
	u := unit{}
	section := ""
	var pending string
	sc := bufio.NewScanner(strings.NewReader(readFile(t, path)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if pending == "" && (line == "" || line[0] == '#' || line[0] == ';') {
			continue
		}
		if strings.HasSuffix(line, "\\") {
			pending += strings.TrimSuffix(line, "\\") + " "
			continue
		}
		line, pending = pending+line, ""
		if strings.HasPrefix(line, "[") {
			section = strings.Trim(line, "[]")
			u[section] = map[string][]string{}
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || section == "" {
			t.Fatalf("%s: cannot parse %q", path, line)
		}
		u[section][strings.TrimSpace(k)] = append(u[section][strings.TrimSpace(k)], strings.TrimSpace(v))
	}
	return u
}

// flagValue returns the value after --name in a command line's words.
func flagValue(words []string, name string) string {
	for i, w := range words {
		if w == "--"+name && i+1 < len(words) {
			return words[i+1]
		}
		if v, ok := strings.CutPrefix(w, "--"+name+"="); ok {
			return v
		}
	}
	return ""
}

func mustDuration(t *testing.T, what, s string) time.Duration {
	t.Helper()
	if n, err := strconv.Atoi(s); err == nil {
		return time.Duration(n) * time.Second // systemd's and Kubernetes' bare seconds
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatalf("%s: %q is not a duration", what, s)
	}
	return d
}

// recluserFlags returns the long flags in a recluster command line, up
// to the -- before the program.
func reclusterFlags(words []string) []string {
	var flags []string
	for _, w := range words {
		if w == "--" {
			break
		}
		if strings.HasPrefix(w, "--") {
			name, _, _ := strings.Cut(w, "=")
			flags = append(flags, name)
		}
	}
	return flags
}

func TestSystemdUnits(t *testing.T) {
	for _, name := range []string{"recluster.service", "recluster-socket.service"} {
		t.Run(name, func(t *testing.T) {
			u := parseUnit(t, name)
			for key, want := range map[string]string{
				"Type": "notify", "NotifyAccess": "main", "KillMode": "mixed", "KillSignal": "SIGTERM",
				"ExecReload": "/bin/kill -HUP $MAINPID",
			} {
				if got := u.get("Service", key); got != want {
					t.Errorf("%s=%q, want %q", key, got, want)
				}
			}
			start := strings.Fields(u.get("Service", "ExecStart"))
			if len(start) < 2 || start[0] != "/usr/local/bin/recluster" || start[1] != "run" || !slices.Contains(start, "--") {
				t.Errorf("ExecStart=%q, want /usr/local/bin/recluster run ... -- PROGRAM", start)
			}
			drain := mustDuration(t, "--timeout", flagValue(start, "timeout"))
			stop := mustDuration(t, "TimeoutStopSec", u.get("Service", "TimeoutStopSec"))
			if stop < drain+5*time.Second {
				t.Errorf("TimeoutStopSec=%v leaves less than 5s over --timeout %v for the master to stop", stop, drain)
			}
			ready := mustDuration(t, "--ready-timeout", flagValue(start, "ready-timeout"))
			if startTimeout := mustDuration(t, "TimeoutStartSec", u.get("Service", "TimeoutStartSec")); startTimeout <= ready {
				t.Errorf("TimeoutStartSec=%v is not above --ready-timeout %v", startTimeout, ready)
			}
			control := flagValue(start, "control")
			if env := "RECLUSTER_CONTROL=" + control; !slices.Contains(u["Service"]["Environment"], env) {
				t.Errorf("Environment= lacks %s, so recluster status would not find the control socket", env)
			}
			if dir := u.get("Service", "RuntimeDirectory"); filepath.Dir(control) != "/run/"+dir {
				t.Errorf("--control %s is not in RuntimeDirectory=%s (/run/%s)", control, dir, dir)
			}
		})
	}

	t.Run("recluster.socket", func(t *testing.T) {
		sock := parseUnit(t, "recluster.socket")
		svc := parseUnit(t, "recluster-socket.service")
		if got := sock.get("Socket", "Service"); got != "recluster-socket.service" {
			t.Errorf("Service=%q, want recluster-socket.service", got)
		}
		listen := flagValue(strings.Fields(svc.get("Service", "ExecStart")), "listen")
		name, addr, _ := strings.Cut(listen, "=")
		if got := sock.get("Socket", "FileDescriptorName"); got != name {
			t.Errorf("FileDescriptorName=%q does not match --listen %s", got, listen)
		}
		// systemd's bare port and the CLI's :PORT are both every address
		// of both families.
		if got := sock.get("Socket", "ListenStream"); got != addr && ":"+got != addr {
			t.Errorf("ListenStream=%q, want the --listen address %q", got, addr)
		}
		if !slices.Contains(strings.Fields(svc.get("Unit", "Requires")), "recluster.socket") {
			t.Error("recluster-socket.service does not require recluster.socket")
		}
	})

	t.Run("systemd-analyze verify", func(t *testing.T) {
		analyze, err := exec.LookPath("systemd-analyze")
		if err != nil {
			t.Skip("systemd-analyze is not installed: the units were not verified by systemd")
		}
		recluster, hello := staticBinaries(t)
		// verify checks that the programs exist: point the units at the
		// binaries just built.
		dir := t.TempDir()
		for _, name := range []string{"recluster.service", "recluster-socket.service", "recluster.socket"} {
			text := strings.NewReplacer("/usr/local/bin/recluster", recluster, "/usr/local/bin/your-server", hello).Replace(readFile(t, name))
			if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		cmd := exec.Command(analyze, "verify", "--man=no", "recluster.service", "recluster-socket.service", "recluster.socket")
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("systemd-analyze verify: %v\n%s", err, out)
		}
	})
}

// dockerfile is the instructions of a Dockerfile, continuations joined.
func dockerfile(t *testing.T) [][2]string {
	t.Helper()
	var ins [][2]string
	var pending string
	for _, line := range strings.Split(readFile(t, "Dockerfile"), "\n") {
		line = strings.TrimSpace(line)
		if pending == "" && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if strings.HasSuffix(line, "\\") {
			pending += strings.TrimSuffix(line, "\\") + " "
			continue
		}
		line, pending = pending+line, ""
		op, arg, _ := strings.Cut(line, " ")
		ins = append(ins, [2]string{strings.ToUpper(op), strings.TrimSpace(arg)})
	}
	return ins
}

// dockerEntrypoint returns the Dockerfile's ENTRYPOINT words.
func dockerEntrypoint(t *testing.T) []string {
	t.Helper()
	for _, in := range dockerfile(t) {
		var words []string
		if in[0] == "ENTRYPOINT" && json.Unmarshal([]byte(in[1]), &words) == nil {
			return words
		}
	}
	t.Fatal("the Dockerfile has no ENTRYPOINT in exec form")
	return nil
}

func TestDockerfile(t *testing.T) {
	var entry, cmd []string
	var user, stop string
	var static bool
	var builds []string
	for _, in := range dockerfile(t) {
		switch in[0] {
		case "ENV":
			static = static || strings.Contains(in[1], "CGO_ENABLED=0")
		case "RUN":
			for _, m := range regexp.MustCompile(`go build .*? (\./\S+)`).FindAllStringSubmatch(in[1], -1) {
				builds = append(builds, m[1])
			}
		case "USER":
			user = in[1]
		case "STOPSIGNAL":
			stop = in[1]
		case "ENTRYPOINT", "CMD":
			var words []string
			if err := json.Unmarshal([]byte(in[1]), &words); err != nil {
				t.Fatalf("%s is not in exec (JSON) form, so recluster would not be PID 1: %v", in[0], err)
			}
			if in[0] == "ENTRYPOINT" {
				entry = words
			} else {
				cmd = words
			}
		}
	}
	if !static {
		t.Error("the build does not set CGO_ENABLED=0")
	}
	if !slices.Contains(builds, "./cmd/recluster") || !slices.Contains(builds, "./examples/hello") {
		t.Errorf("go build of %v, want ./cmd/recluster and ./examples/hello", builds)
	}
	if len(entry) < 2 || entry[0] != "/usr/local/bin/recluster" || entry[1] != "run" || entry[len(entry)-1] != "--" {
		t.Errorf("ENTRYPOINT %q, want recluster run ... --", entry)
	}
	if len(cmd) == 0 || cmd[0] != "/usr/local/bin/hello" {
		t.Errorf("CMD %q, want the worker program", cmd)
	}
	if stop != "SIGTERM" {
		t.Errorf("STOPSIGNAL %q, want SIGTERM", stop)
	}
	if u, _, _ := strings.Cut(user, ":"); u == "" || u == "0" || u == "root" {
		t.Errorf("USER %q, want a non-root user", user)
	}
}

// TestStaticBuild builds what the Dockerfile builds and checks that the
// binaries are static: no ELF interpreter, no shared libraries.
func TestStaticBuild(t *testing.T) {
	recluster, hello := staticBinaries(t)
	for _, bin := range []string{recluster, hello} {
		f, err := elf.Open(bin)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
				t.Errorf("%s has a %v program header: it is dynamically linked", filepath.Base(bin), p.Type)
			}
		}
		if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
			t.Errorf("%s needs shared libraries %v", filepath.Base(bin), libs)
		}
		f.Close()
		if file, err := exec.LookPath("file"); err == nil {
			out, _ := exec.Command(file, "-b", bin).Output()
			t.Logf("file %s: %s", filepath.Base(bin), bytes.TrimSpace(out))
			if !bytes.Contains(out, []byte("statically linked")) {
				t.Errorf("file does not call %s statically linked: %s", filepath.Base(bin), out)
			}
		}
	}
}

// TestContainerCommand runs the Dockerfile's command with the static
// binaries (outside a container: no daemon is needed) on 127.0.0.1: hello
// serves through the master's socket, and SIGTERM stops it with status 0.
func TestContainerCommand(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the static binaries are built for linux")
	}
	recluster, hello := staticBinaries(t)
	port := freePort(t)
	dir := t.TempDir()
	args := []string{"run", "--workers", "2", "--listen", "http=127.0.0.1:" + port, "--timeout", "5s",
		"--control", filepath.Join(dir, "control.sock")}
	metricsPort := ""
	if cliHelp(t, recluster)["--metrics"] {
		metricsPort = freePort(t)
		args = append(args, "--metrics", "127.0.0.1:"+metricsPort)
	}
	args = append(args, "--", hello, "-addr", ":"+port)
	cmd := exec.Command(recluster, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-exited
		}
	}()

	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	poll := func(url, want string) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			resp, err := client.Get(url)
			if err == nil {
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 200 && strings.Contains(string(body), want) {
					return
				}
				err = fmt.Errorf("%d %s", resp.StatusCode, body)
			}
			if time.Now().After(deadline) {
				t.Fatalf("GET %s: %v\nmaster's log:\n%s", url, err, stderr.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	poll("http://127.0.0.1:"+port+"/", "hello from worker")
	if metricsPort != "" {
		poll("http://127.0.0.1:"+metricsPort+"/readyz", "ready")
		poll("http://127.0.0.1:"+metricsPort+"/metrics", `recluster_workers{state="active"} 2`)
	} else {
		t.Log("the CLI has no --metrics flag yet: /healthz and /readyz not exercised")
	}

	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("recluster after SIGTERM: %v, want exit status 0\n%s", err, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("recluster did not stop within 15s of SIGTERM\n%s", stderr.String())
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

// cliHelp returns the long flags that recluster help run lists.
func cliHelp(t *testing.T, recluster string) map[string]bool {
	t.Helper()
	out, err := exec.Command(recluster, "help", "run").Output()
	if err != nil {
		t.Fatalf("recluster help run: %v", err)
	}
	flags := map[string]bool{}
	for _, m := range regexp.MustCompile(`--[a-z][a-z-]+`).FindAllString(string(out), -1) {
		flags[m] = true
	}
	return flags
}

// Kubernetes objects, only the fields the manifest uses: decoding with
// KnownFields rejects a misspelt field name. This is not the API schema
// (kubeconform and a cluster are not available here), only a guard.
type (
	k8sMeta struct {
		Name        string            `yaml:"name"`
		Labels      map[string]string `yaml:"labels"`
		Annotations map[string]string `yaml:"annotations"`
	}
	deploymentSpec struct {
		Replicas                int `yaml:"replicas"`
		RevisionHistoryLimit    int `yaml:"revisionHistoryLimit"`
		MinReadySeconds         int `yaml:"minReadySeconds"`
		ProgressDeadlineSeconds int `yaml:"progressDeadlineSeconds"`
		Selector                struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		Strategy struct {
			Type          string `yaml:"type"`
			RollingUpdate struct {
				MaxUnavailable yaml.Node `yaml:"maxUnavailable"`
				MaxSurge       yaml.Node `yaml:"maxSurge"`
			} `yaml:"rollingUpdate"`
		} `yaml:"strategy"`
		Template struct {
			Metadata k8sMeta `yaml:"metadata"`
			Spec     podSpec `yaml:"spec"`
		} `yaml:"template"`
	}
	podSpec struct {
		TerminationGracePeriodSeconds int `yaml:"terminationGracePeriodSeconds"`
		SecurityContext               struct {
			RunAsNonRoot   bool `yaml:"runAsNonRoot"`
			RunAsUser      int  `yaml:"runAsUser"`
			RunAsGroup     int  `yaml:"runAsGroup"`
			SeccompProfile struct {
				Type string `yaml:"type"`
			} `yaml:"seccompProfile"`
		} `yaml:"securityContext"`
		Containers []container `yaml:"containers"`
		Volumes    []struct {
			Name     string `yaml:"name"`
			EmptyDir struct {
				Medium    string `yaml:"medium"`
				SizeLimit string `yaml:"sizeLimit"`
			} `yaml:"emptyDir"`
		} `yaml:"volumes"`
	}
	container struct {
		Name            string   `yaml:"name"`
		Image           string   `yaml:"image"`
		ImagePullPolicy string   `yaml:"imagePullPolicy"`
		Command         []string `yaml:"command"`
		Args            []string `yaml:"args"`
		Env             []struct {
			Name      string `yaml:"name"`
			Value     string `yaml:"value"`
			ValueFrom *struct {
				ResourceFieldRef struct {
					Resource string `yaml:"resource"`
					Divisor  string `yaml:"divisor"`
				} `yaml:"resourceFieldRef"`
			} `yaml:"valueFrom"`
		} `yaml:"env"`
		Ports []struct {
			Name          string `yaml:"name"`
			ContainerPort int    `yaml:"containerPort"`
			Protocol      string `yaml:"protocol"`
		} `yaml:"ports"`
		LivenessProbe  probe `yaml:"livenessProbe"`
		ReadinessProbe probe `yaml:"readinessProbe"`
		Lifecycle      struct {
			PreStop struct {
				Sleep struct {
					Seconds int `yaml:"seconds"`
				} `yaml:"sleep"`
			} `yaml:"preStop"`
		} `yaml:"lifecycle"`
		Resources struct {
			Requests map[string]string `yaml:"requests"`
			Limits   map[string]string `yaml:"limits"`
		} `yaml:"resources"`
		SecurityContext struct {
			AllowPrivilegeEscalation bool `yaml:"allowPrivilegeEscalation"`
			ReadOnlyRootFilesystem   bool `yaml:"readOnlyRootFilesystem"`
			Capabilities             struct {
				Drop []string `yaml:"drop"`
			} `yaml:"capabilities"`
		} `yaml:"securityContext"`
		VolumeMounts []struct {
			Name      string `yaml:"name"`
			MountPath string `yaml:"mountPath"`
		} `yaml:"volumeMounts"`
	}
	probe struct {
		HTTPGet struct {
			Path string    `yaml:"path"`
			Port yaml.Node `yaml:"port"`
		} `yaml:"httpGet"`
		PeriodSeconds    int `yaml:"periodSeconds"`
		TimeoutSeconds   int `yaml:"timeoutSeconds"`
		FailureThreshold int `yaml:"failureThreshold"`
		SuccessThreshold int `yaml:"successThreshold"`
	}
	serviceSpec struct {
		Selector map[string]string `yaml:"selector"`
		Ports    []struct {
			Name       string    `yaml:"name"`
			Port       int       `yaml:"port"`
			TargetPort yaml.Node `yaml:"targetPort"`
			Protocol   string    `yaml:"protocol"`
		} `yaml:"ports"`
	}
)

func decodeStrict(t *testing.T, what string, n *yaml.Node, v any) {
	t.Helper()
	b, err := yaml.Marshal(n)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// manifest decodes deploy/kubernetes/deployment.yaml.
func manifest(t *testing.T) (*deploymentSpec, *serviceSpec) {
	t.Helper()
	dec := yaml.NewDecoder(strings.NewReader(readFile(t, "kubernetes/deployment.yaml")))
	var deploy *deploymentSpec
	var svc *serviceSpec
	for {
		var obj struct {
			APIVersion string    `yaml:"apiVersion"`
			Kind       string    `yaml:"kind"`
			Metadata   k8sMeta   `yaml:"metadata"`
			Spec       yaml.Node `yaml:"spec"`
		}
		dec.KnownFields(true)
		err := dec.Decode(&obj)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		switch obj.APIVersion + " " + obj.Kind {
		case "apps/v1 Deployment":
			deploy = new(deploymentSpec)
			decodeStrict(t, "Deployment spec", &obj.Spec, deploy)
		case "v1 Service":
			svc = new(serviceSpec)
			decodeStrict(t, "Service spec", &obj.Spec, svc)
		default:
			t.Fatalf("unexpected object %s %s", obj.APIVersion, obj.Kind)
		}
	}
	if deploy == nil || svc == nil {
		t.Fatal("want a Deployment and a Service")
	}
	if len(deploy.Template.Spec.Containers) != 1 {
		t.Fatalf("want one container, have %d", len(deploy.Template.Spec.Containers))
	}
	return deploy, svc
}

func TestKubernetesManifest(t *testing.T) {
	deploy, svc := manifest(t)

	if s := deploy.Strategy; s.Type != "RollingUpdate" || s.RollingUpdate.MaxUnavailable.Value != "0" {
		t.Errorf("strategy %s maxUnavailable %q, want RollingUpdate with maxUnavailable 0", s.Type, s.RollingUpdate.MaxUnavailable.Value)
	}
	for k, v := range deploy.Selector.MatchLabels {
		if deploy.Template.Metadata.Labels[k] != v || svc.Selector[k] != v {
			t.Errorf("label %s=%s is not on the pod template and in the Service selector", k, v)
		}
	}
	c := deploy.Template.Spec.Containers[0]
	if len(c.Command) < 2 || c.Command[0] != "/usr/local/bin/recluster" || c.Command[1] != "run" || c.Command[len(c.Command)-1] != "--" || len(c.Args) == 0 {
		t.Errorf("command %q args %q, want recluster run ... -- and the program in args", c.Command, c.Args)
	}
	ports := map[string]int{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	_, metricsPort, err := net.SplitHostPort(flagValue(c.Command, "metrics"))
	if err != nil || metricsPort != strconv.Itoa(ports["metrics"]) {
		t.Errorf("--metrics %q does not serve the container port named metrics (%d)", flagValue(c.Command, "metrics"), ports["metrics"])
	}
	listen := flagValue(c.Command, "listen")
	if _, addr, _ := strings.Cut(listen, "="); !strings.HasSuffix(addr, ":"+strconv.Itoa(ports["http"])) {
		t.Errorf("--listen %q is not the container port named http (%d)", listen, ports["http"])
	}
	for _, pr := range []struct {
		name, path string
		p          probe
	}{{"livenessProbe", "/healthz", c.LivenessProbe}, {"readinessProbe", "/readyz", c.ReadinessProbe}} {
		if pr.p.HTTPGet.Path != pr.path {
			t.Errorf("%s path %q, want %s", pr.name, pr.p.HTTPGet.Path, pr.path)
		}
		if port := pr.p.HTTPGet.Port.Value; port != "metrics" && port != strconv.Itoa(ports["metrics"]) {
			t.Errorf("%s port %q, want the metrics port", pr.name, port)
		}
		// The master gives the supervisor loop 1s (metrics.DefaultTimeout).
		if pr.p.TimeoutSeconds < 2 {
			t.Errorf("%s timeoutSeconds %d, want at least 2", pr.name, pr.p.TimeoutSeconds)
		}
	}
	drain := mustDuration(t, "--timeout", flagValue(c.Command, "timeout"))
	grace := time.Duration(deploy.Template.Spec.TerminationGracePeriodSeconds) * time.Second
	preStop := time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	if grace < preStop+drain+5*time.Second {
		t.Errorf("terminationGracePeriodSeconds %v < preStop %v + --timeout %v + 5s for the master", grace, preStop, drain)
	}
	if svc.Ports[0].TargetPort.Value != "http" {
		t.Errorf("Service targetPort %q, want the container port named http", svc.Ports[0].TargetPort.Value)
	}
	mounted := false
	for _, m := range c.VolumeMounts {
		mounted = mounted || m.MountPath == "/tmp"
	}
	for _, e := range c.Env {
		if e.Name == "RECLUSTER_CONTROL" && (!strings.HasPrefix(e.Value, "/tmp/") || !mounted) {
			t.Errorf("RECLUSTER_CONTROL=%s is not on the writable /tmp volume", e.Value)
		}
	}
	if !c.SecurityContext.ReadOnlyRootFilesystem || !mounted {
		t.Error("want a read-only root filesystem with /tmp mounted for the sockets")
	}
}

// TestCLIKnowsRecipeFlags checks that every recluster flag the recipes use
// is one that recluster help run lists.
func TestCLIKnowsRecipeFlags(t *testing.T) {
	deploy, _ := manifest(t)
	used := map[string][]string{
		"Dockerfile":                 dockerEntrypoint(t),
		"kubernetes/deployment.yaml": deploy.Template.Spec.Containers[0].Command,
	}
	for _, name := range []string{"recluster.service", "recluster-socket.service"} {
		used[name] = strings.Fields(parseUnit(t, name).get("Service", "ExecStart"))
	}
	recluster, _ := staticBinaries(t)
	known := cliHelp(t, recluster)
	for where, words := range used {
		for _, f := range reclusterFlags(words) {
			if !known[f] {
				t.Errorf("%s uses %s, which recluster help run does not list", where, f)
			}
		}
	}
}
