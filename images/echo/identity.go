package main

import (
	"net"
	"os"
)

// identity is what every reply carries. The Deployment passes the pod's
// names through the downward API; outside Kubernetes they are empty.
type identity struct {
	Hostname  string `json:"hostname"`
	Pod       string `json:"pod"`
	Namespace string `json:"namespace"`
	Node      string `json:"node"`
	PodIP     string `json:"podIP"`
	Version   string `json:"version"`
	// Greeting is $GREETING, which the demo sets from a ConfigMap.
	Greeting string `json:"greeting,omitempty"`
}

// reply is the JSON answer to an HTTP request or a UDP datagram.
type reply struct {
	identity
	Client string              `json:"client"`
	Proto  string              `json:"proto,omitempty"`
	Method string              `json:"method,omitempty"`
	Host   string              `json:"host,omitempty"`
	Path   string              `json:"path,omitempty"`
	Header map[string][]string `json:"header,omitempty"`
	Body   string              `json:"body,omitempty"`
}

func identify() identity {
	h, _ := os.Hostname()
	id := identity{
		Hostname:  h,
		Pod:       os.Getenv("POD_NAME"),
		Namespace: os.Getenv("POD_NAMESPACE"),
		Node:      os.Getenv("NODE_NAME"),
		PodIP:     os.Getenv("POD_IP"),
		Version:   version,
		Greeting:  os.Getenv("GREETING"),
	}
	if id.Pod == "" {
		id.Pod = h
	}
	if id.PodIP == "" {
		id.PodIP = firstAddress()
	}
	return id
}

func firstAddress() string {
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
			return n.IP.String()
		}
	}
	return ""
}
