package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/droverhq/drover/internal/cli"
)

// stubs are the commands the maintainer scripts call, replaced for the test
// by scripts that log their arguments; getent finds the drover user and
// group only when HAVE_DROVER is set.
var stubs = map[string]string{
	"getent":    `echo "getent $*" >>"$LOG"; [ -n "$HAVE_DROVER" ]`,
	"groupadd":  `echo "groupadd $*" >>"$LOG"`,
	"useradd":   `echo "useradd $*" >>"$LOG"`,
	"systemctl": `echo "systemctl $*" >>"$LOG"`,
}

// runScript runs one maintainer script, as packaged, with the stubs first
// on PATH and /run/systemd/system replaced by a folder that exists when
// systemd "runs". It returns the calls the script made.
func runScript(t *testing.T, script string, systemd, haveUser bool, args ...string) []string {
	t.Helper()
	dir := t.TempDir()
	stubDir := filepath.Join(dir, "bin")
	if err := os.Mkdir(stubDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range stubs {
		if err := os.WriteFile(filepath.Join(stubDir, name), []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	runDir := filepath.Join(dir, "run-systemd-system")
	if systemd {
		if err := os.Mkdir(runDir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	body, err := embedded.ReadFile("scripts/" + script)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(body, []byte("/run/systemd/system")) && (script != "preinstall.sh") {
		t.Fatalf("%s no longer checks /run/systemd/system; update the test", script)
	}
	path := filepath.Join(dir, script)
	if err := os.WriteFile(path, bytes.ReplaceAll(body, []byte("/run/systemd/system"), []byte(runDir)), 0o755); err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(dir, "log")
	cmd := exec.Command("/bin/sh", append([]string{path}, args...)...)
	// Only the stubs and /usr/bin:/bin: useradd, groupadd (in /usr/sbin)
	// and systemctl are never the real ones.
	cmd.Env = []string{"PATH=" + stubDir + ":/usr/bin:/bin", "LOG=" + log}
	if haveUser {
		cmd.Env = append(cmd.Env, "HAVE_DROVER=1")
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %q: %v\n%s", script, args, err, out)
	}
	b, err := os.ReadFile(log)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// TestMaintainerScriptLogic runs the maintainer scripts with each format's
// arguments: the user and group are made only when missing; systemd is
// reloaded only when it runs; removal stops and disables both units, an
// upgrade leaves them; and no script enables, starts or restarts anything.
func TestMaintainerScriptLogic(t *testing.T) {
	const (
		getent   = "getent group drover|getent passwd drover"
		units    = "drover-hub.service drover-agent.service"
		stop     = "systemctl stop " + units
		disable  = "systemctl --no-reload disable " + units
		reload   = "systemctl daemon-reload"
		makeUser = "groupadd --system drover|useradd --system --gid drover --home-dir /var/lib/drover --no-create-home --shell "
	)
	nologin := "/usr/sbin/nologin"
	if _, err := os.Stat(nologin); err != nil {
		nologin = "/sbin/nologin"
		if _, err := os.Stat(nologin); err != nil {
			nologin = "/bin/false"
		}
	}
	for _, tc := range []struct {
		name     string
		script   string
		args     []string
		systemd  bool
		haveUser bool
		want     string // calls, | between them
	}{
		{"deb preinst, new user", "preinstall.sh", []string{"install"}, true, false,
			"getent group drover|groupadd --system drover|getent passwd drover|useradd --system --gid drover --home-dir /var/lib/drover --no-create-home --shell " + nologin + " --comment Drover services drover"},
		{"rpm %pre, new user", "preinstall.sh", []string{"1"}, false, false,
			"getent group drover|groupadd --system drover|getent passwd drover|useradd --system --gid drover --home-dir /var/lib/drover --no-create-home --shell " + nologin + " --comment Drover services drover"},
		{"deb preinst, upgrade, user there", "preinstall.sh", []string{"upgrade", "1.2.2"}, true, true, getent},
		{"rpm %pre, upgrade, user there", "preinstall.sh", []string{"2"}, true, true, getent},
		{"deb postinst configure", "postinstall.sh", []string{"configure", ""}, true, true, reload},
		{"deb postinst, upgrade", "postinstall.sh", []string{"configure", "1.2.2"}, true, true, reload},
		{"rpm %post", "postinstall.sh", []string{"1"}, true, true, reload},
		{"postinst without systemd, in a container or chroot", "postinstall.sh", []string{"configure", ""}, false, true, ""},
		{"deb prerm remove", "preremove.sh", []string{"remove"}, true, true, stop + "|" + disable},
		{"rpm %preun erase", "preremove.sh", []string{"0"}, true, true, stop + "|" + disable},
		{"deb prerm remove without systemd", "preremove.sh", []string{"remove"}, false, true, disable},
		{"deb prerm upgrade", "preremove.sh", []string{"upgrade", "1.2.4"}, true, true, ""},
		{"rpm %preun upgrade", "preremove.sh", []string{"1"}, true, true, ""},
		{"deb postrm remove", "postremove.sh", []string{"remove"}, true, true, reload},
		{"deb postrm purge", "postremove.sh", []string{"purge"}, true, true, reload},
		{"rpm %postun", "postremove.sh", []string{"0"}, true, true, reload},
		{"postrm without systemd", "postremove.sh", []string{"remove"}, false, true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calls := runScript(t, tc.script, tc.systemd, tc.haveUser, tc.args...)
			var want []string
			if tc.want != "" {
				want = strings.Split(tc.want, "|")
			}
			if !slices.Equal(calls, want) {
				t.Errorf("calls:\n  %s\nwant:\n  %s", strings.Join(calls, "\n  "), strings.Join(want, "\n  "))
			}
			for _, c := range calls {
				if regexp.MustCompile(`systemctl .*\b(enable|start|restart|try-restart|reload-or-restart)\b`).MatchString(c) {
					t.Errorf("%s must not enable, start or restart anything: %s", tc.script, c)
				}
			}
		})
	}
}

// TestExampleConfigKeysAreFlags checks that every key of the example
// configs, commented out or not, is a flag of its command as `drover hub
// --help` and `drover agent --help` print them (a key that is no flag stops
// the service), and that the examples are valid YAML once uncommented.
func TestExampleConfigKeysAreFlags(t *testing.T) {
	flagRE := regexp.MustCompile(`(?m)^\s+(?:-\w, )?--([a-z0-9-]+)`)
	keyRE := regexp.MustCompile(`^#([a-z0-9-]+): `)
	for _, command := range []string{"hub", "agent"} {
		t.Run(command, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := cli.Main([]string{command, "--help"}, &stdout, &stderr); code != 0 {
				t.Fatalf("drover %s --help: exit %d\n%s", command, code, stderr.String())
			}
			help := stdout.String()
			// The global flags (--addr, --token, ...) are the CLI's, not
			// settings of the service.
			help, _, _ = strings.Cut(help, "Global Flags:")
			flags := map[string]bool{}
			for _, m := range flagRE.FindAllStringSubmatch(help, -1) {
				flags[m[1]] = true
			}
			if !flags["data-dir"] || !flags["log-level"] {
				t.Fatalf("read no flags from drover %s --help:\n%s", command, help)
			}
			body, err := embedded.ReadFile("config/" + command + ".yaml")
			if err != nil {
				t.Fatal(err)
			}
			var uncommented []string
			keys := 0
			for line := range strings.Lines(string(body)) {
				m := keyRE.FindStringSubmatch(line)
				if m == nil {
					continue
				}
				keys++
				if !flags[m[1]] || m[1] == "config" || m[1] == "help" {
					t.Errorf("config/%s.yaml sets %q, which is no setting of drover %s", command, m[1], command)
				}
				if m[1] == "data-dir" {
					t.Errorf("config/%s.yaml sets data-dir, which the unit's --data-dir overrides", command)
				}
				uncommented = append(uncommented, strings.TrimPrefix(line, "#"))
			}
			if keys < 5 {
				t.Errorf("config/%s.yaml has %d example settings, want a useful few", command, keys)
			}
			// Uncommented, it is YAML of scalars and lists, as the config
			// loader takes.
			var doc map[string]any
			if err := yaml.Unmarshal([]byte(strings.Join(uncommented, "")), &doc); err != nil {
				t.Fatalf("config/%s.yaml uncommented is not YAML: %v", command, err)
			}
			for k, v := range doc {
				if _, isMap := v.(map[string]any); isMap {
					t.Errorf("config/%s.yaml: %s is a map; settings are values or lists", command, k)
				}
			}
			// As shipped, it sets nothing.
			var shipped map[string]any
			if err := yaml.Unmarshal(body, &shipped); err != nil || len(shipped) != 0 {
				t.Errorf("config/%s.yaml as shipped sets %v (err %v); it should set nothing", command, shipped, err)
			}
		})
	}
}

// TestUnitsMatchPackagePaths checks that the units in systemd/ run the
// binary, the configs and the user the packages install.
func TestUnitsMatchPackagePaths(t *testing.T) {
	root := repoRoot(t)
	for _, command := range []string{"hub", "agent"} {
		b, err := os.ReadFile(filepath.Join(root, "systemd", "drover-"+command+".service"))
		if err != nil {
			t.Fatal(err)
		}
		unit := string(b)
		for _, want := range []string{
			"ExecStart=" + binPath + " " + command + " --config " + configDir + "/" + command + ".yaml --data-dir " + dataDir + "/" + command,
			"User=" + serviceUser,
			"Group=" + serviceUser,
			"StateDirectory=drover/" + command,
			"ConfigurationDirectory=drover",
		} {
			if !strings.Contains(unit, want+"\n") {
				t.Errorf("drover-%s.service has no line %q", command, want)
			}
		}
	}
}
