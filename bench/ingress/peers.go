package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// contestant is one proxy under test and how to reach it.
type contestant struct {
	name       string
	argv       []string
	env        []string // nil: inherit
	http, tls  int      // ports
	configPath string
}

// skiffContestant runs this program's proxy command: Skiff's ingress
// proxy with a static table, on one core. netHTTP runs it without the lean
// path, for the before/after comparison.
// profile, when not empty, is where it writes a CPU profile of the whole
// run (profile.nethttp for the netHTTP one).
func skiffContestant(self, dir string, httpPort, tlsPort int, backends string, netHTTP bool, profile string) contestant {
	name, flag := "skiff", "-nethttp=false"
	if netHTTP {
		name, flag = "skiff-nethttp", "-nethttp=true"
		if profile != "" {
			profile += ".nethttp"
		}
	}
	c := contestant{
		name: name, http: httpPort, tls: tlsPort,
		env: append(os.Environ(), "GOMAXPROCS=1"),
		argv: []string{self, "proxy", flag, "-http", "127.0.0.1:" + strconv.Itoa(httpPort),
			"-https", "127.0.0.1:" + strconv.Itoa(tlsPort), "-backends", backends, "-cert", dir},
	}
	if profile != "" {
		c.argv = append(c.argv, "-cpuprofile", profile)
	}
	return c
}

// nginxContestant is Debian's nginx with one worker, keep-alive to the
// backends (an upstream keepalive pool, HTTP/1.1, no Connection header),
// as its documentation recommends for a reverse proxy.
func nginxContestant(dir string, httpPort, tlsPort int, be []string) (contestant, error) {
	root := filepath.Join(dir, "nginx")
	if err := os.MkdirAll(filepath.Join(root, "logs"), 0o755); err != nil {
		return contestant{}, err
	}
	conf := fmt.Sprintf(`user root;
worker_processes 1;
worker_rlimit_nofile 65536;
pid %[1]s/nginx.pid;
error_log %[1]s/logs/error.log warn;
events { worker_connections 30000; }
http {
    access_log off;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    keepalive_requests 1000000;
    upstream web {
        server %[2]s;
        server %[3]s;
        keepalive 256;
    }
    server {
        listen 127.0.0.1:%[4]d;
        listen 127.0.0.1:%[5]d ssl;
        ssl_protocols TLSv1.3;
        ssl_certificate %[6]s/tls.crt;
        ssl_certificate_key %[6]s/tls.key;
        location / {
            proxy_pass http://web;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }
    }
}
`, root, be[0], be[1], httpPort, tlsPort, dir)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return contestant{}, err
	}
	return contestant{name: "nginx", http: httpPort, tls: tlsPort, configPath: path,
		argv: []string{"nginx", "-p", root, "-c", path, "-g", "daemon off;"}}, nil
}

// haproxyContestant is Debian's HAProxy with one thread, configured as its
// documentation's reverse-proxy examples do: mode http, keep-alive on both
// sides (the default http-keep-alive mode), connection reuse to the
// backends (http-reuse safe), round robin, X-Forwarded-For.
func haproxyContestant(dir string, httpPort, tlsPort int, be []string) (contestant, error) {
	crt, err := os.ReadFile(filepath.Join(dir, "tls.crt"))
	if err != nil {
		return contestant{}, err
	}
	key, err := os.ReadFile(filepath.Join(dir, "tls.key"))
	if err != nil {
		return contestant{}, err
	}
	pem := filepath.Join(dir, "haproxy.pem")
	if err := os.WriteFile(pem, append(crt, key...), 0o600); err != nil {
		return contestant{}, err
	}
	// HAProxy wants two descriptors per connection and refuses to start
	// when it cannot raise its limit that far (no CAP_SYS_RESOURCE)
	maxconn := 30000
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil && l.Max < 2*30000+100 {
		maxconn = int(l.Max-100) / 2
	}
	conf := fmt.Sprintf(`global
    nbthread 1
    maxconn %[6]d
    ssl-default-bind-options ssl-min-ver TLSv1.3

defaults
    mode http
    option http-keep-alive
    option forwardfor
    timeout connect 5s
    timeout client 120s
    timeout server 120s
    timeout http-keep-alive 120s
    maxconn %[6]d

frontend web
    bind 127.0.0.1:%[1]d
    bind 127.0.0.1:%[2]d ssl crt %[3]s alpn http/1.1
    http-request set-header X-Forwarded-Proto https if { ssl_fc }
    default_backend web

backend web
    balance roundrobin
    http-reuse safe
    server be1 %[4]s
    server be2 %[5]s
`, httpPort, tlsPort, pem, be[0], be[1], maxconn)
	path := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return contestant{}, err
	}
	return contestant{name: "haproxy", http: httpPort, tls: tlsPort, configPath: path,
		argv: []string{"haproxy", "-db", "-f", path}}, nil
}
