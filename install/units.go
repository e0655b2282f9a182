// Package install writes the systemd units that run Skiff on real machines,
// the way lightweight distributions install: one unit for a server (control
// plane plus its node agent), one for each further node's agent.
package install

import (
	"bytes"
	"fmt"
	"regexp"
	"strings"
	"text/template"
)

// Unit is one systemd service Skiff runs as.
type Unit struct {
	Name        string   // skiff-server or skiff-agent
	Description string   //
	Binary      string   // installed binary, e.g. /usr/local/bin/skiff
	Args        []string // command line after the binary
	EnvFile     string   // secrets (the join token) stay out of the unit and `ps`
}

var unitTemplate = template.Must(template.New("unit").Parse(`[Unit]
Description={{.Description}}
Documentation=https://github.com/skiffnet/skiff/blob/main/docs/install.md
Wants=network-online.target
After=network-online.target

[Service]
Type=exec
{{- if .EnvFile}}
EnvironmentFile={{.EnvFile}}
{{- end}}
ExecStartPre=-/sbin/modprobe br_netfilter
ExecStartPre=-/sbin/modprobe overlay
ExecStart={{.Binary}} {{.Command}}
# Containers must outlive agent restarts: stop only skiff itself.
KillMode=process
Delegate=yes
LimitNOFILE=1048576
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
TimeoutStartSec=0
Restart=always
RestartSec=5s

[Install]
WantedBy=multi-user.target
`))

// Render returns the unit file's text.
func (u Unit) Render() ([]byte, error) {
	var b bytes.Buffer
	data := struct {
		Unit
		Command string
	}{u, strings.Join(quote(u.Args), " ")}
	if err := unitTemplate.Execute(&b, data); err != nil {
		return nil, fmt.Errorf("render %s.service: %w", u.Name, err)
	}
	return b.Bytes(), nil
}

var envRef = regexp.MustCompile(`^\$\{[A-Z_][A-Z0-9_]*\}$`)

// quote makes arguments safe for systemd's command-line splitting.
func quote(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if envRef.MatchString(a) {
			// ${NAME} is for systemd to expand from the EnvironmentFile.
			out[i] = a
			continue
		}
		if strings.ContainsAny(a, " \t\"'\\;$%") {
			a = `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, `$`, `$$`, `%`, `%%`).Replace(a) + `"`
		}
		out[i] = a
	}
	return out
}
