# Skiff's build. `make run` brings up a single-node cluster with a demo app;
# `make test` runs every test CI runs. Both install what they need (as root).

SHELL        := /bin/bash
GO           ?= go
OUT          := _output
KUBE_VERSION := $(shell $(GO) list -m -f '{{.Version}}' k8s.io/kubernetes 2>/dev/null)
KUBE_MINOR   := $(word 2,$(subst ., ,$(KUBE_VERSION)))
GIT_COMMIT   := $(shell git rev-parse HEAD 2>/dev/null)
GIT_TREE     := $(if $(shell git status --porcelain 2>/dev/null),dirty,clean)
SKIFF_VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
BUILD_DATE   := $(shell date -u +%Y-%m-%dT%H:%M:%SZ)

# The upstream components and kubectl report the Kubernetes version they are
# built from, as their own release builds do.
VERSION_PKGS := k8s.io/component-base/version k8s.io/client-go/pkg/version
LDFLAGS := -s -w -X main.version=$(SKIFF_VERSION) \
	$(foreach p,$(VERSION_PKGS),-X $(p).gitVersion=$(KUBE_VERSION) -X $(p).gitMajor=1 -X $(p).gitMinor=$(KUBE_MINOR) \
	  -X $(p).gitCommit=$(GIT_COMMIT) -X $(p).gitTreeState=$(GIT_TREE) -X $(p).buildDate=$(BUILD_DATE))
export GOFLAGS := -buildvcs=false

.PHONY: all build images cluster cluster-down conformance conformance-tools test test-fuzz verify-generate test-unit test-e2e generate run stop wipe lint deps clean

all: build

build: images
	@mkdir -p $(OUT)
	@echo "building $(OUT)/skiff (Kubernetes $(KUBE_VERSION); the first build compiles Kubernetes and takes a few minutes)"
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(OUT)/skiff ./cmd/skiff
	@# A standalone upstream kubectl of the same version, for tests that check skiff against it.
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(OUT)/kubectl k8s.io/kubernetes/cmd/kubectl
	@if [ -d cmd/skiff-cni ]; then CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o $(OUT)/skiff-cni ./cmd/skiff-cni; fi
	@# containerd 2.x and runc, from their own Go modules (docs/containerd.md); the agent runs them.
	GO=$(GO) agent/containerd/build/build.sh $(OUT)/skiff-containerd

# Skiff's own images (pod sandbox, echo server v1 and v2), built from its Go
# code as docker archives the agent imports at start.
IMAGE_BIN := CGO_ENABLED=0 $(GO) build -trimpath
images:
	@mkdir -p $(OUT)/bin $(OUT)/images
	$(IMAGE_BIN) -o $(OUT)/bin/mkimage ./images/mkimage
	$(IMAGE_BIN) -ldflags '-s -w -X main.version=v1' -o $(OUT)/bin/pause ./images/pause
	$(IMAGE_BIN) -ldflags '-s -w -X main.version=v1' -o $(OUT)/bin/echo-v1 ./images/echo
	$(IMAGE_BIN) -ldflags '-s -w -X main.version=v2' -o $(OUT)/bin/echo-v2 ./images/echo
	$(OUT)/bin/mkimage -ref skiff.local/pause:v1 -bin $(OUT)/bin/pause -path /pause -o $(OUT)/images/pause.tar
	$(OUT)/bin/mkimage -ref skiff.local/echo:v1 -bin $(OUT)/bin/echo-v1 -path /echo -o $(OUT)/images/echo-v1.tar
	$(OUT)/bin/mkimage -ref skiff.local/echo:v2 -bin $(OUT)/bin/echo-v2 -path /echo -o $(OUT)/images/echo-v2.tar

deps:
	@hack/install-deps.sh

generate:
	$(GO) generate ./bpf/...

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: run gofmt -w on the files above"; exit 1; }
	$(GO) vet $$($(GO) list ./... | grep -v /hack)

test: deps build lint verify-generate test-unit test-fuzz test-e2e

# The BPF objects and their Go bindings are committed so go build needs no
# clang; this fails when they no longer match their C sources.
verify-generate: generate
	@git diff --exit-code --stat -- bpf/ || { echo "bpf/: generated files are stale: run make generate and commit them"; exit 1; }

# The DNS query path takes packets from anyone: fuzz it for a bounded time.
test-fuzz:
	$(GO) test -run='^$$' -fuzz=FuzzHandler -fuzztime=20s ./dns/server

# Packages that compile without the Kubernetes server code run here; the
# control plane is tested through the built binary in test/.
test-unit:
	$(GO) test -count=1 $$($(GO) list ./... | grep -v -e /test/ -e /hack)

test-e2e:
	SKIFF_BINARY=$(CURDIR)/$(OUT)/skiff KUBECTL_BINARY=$(CURDIR)/$(OUT)/kubectl $(GO) test -count=1 -p 1 -timeout 45m ./test/...

# A multi-node test cluster on this machine (network namespaces joined by a
# bridge), for trying things by hand: make cluster NODES=3; make cluster-down.
NODES ?= 3
POD_NETWORK ?= routed
cluster: build
	@CGO_ENABLED=0 $(GO) build -o $(OUT)/bin/testcluster ./test/cluster/testcluster
	@SKIFF_BINARY=$(CURDIR)/$(OUT)/skiff $(OUT)/bin/testcluster up -nodes $(NODES) -pod-network $(POD_NETWORK)

cluster-down:
	@if [ -x $(OUT)/bin/testcluster ]; then $(OUT)/bin/testcluster down; else echo "no test cluster tool built; nothing to stop"; fi

# Upstream's conformance suite against a 3-node test cluster, offline:
# e2e.test, ginkgo and the test images' programs are built from the Go module
# proxy at the Kubernetes version in go.mod (test/conformance/upstream), the
# images from them and Debian packages. FOCUS and SKIP are regular
# expressions (default: every [Conformance] test, the [Serial] ones in a
# second pass); PARALLEL tests run at once. See docs/conformance.md.
CONFORMANCE := $(OUT)/conformance
FOCUS    ?= \[Conformance\]
SKIP     ?=
PARALLEL ?= 4
UPSTREAM := cd test/conformance/upstream && CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w'
conformance-tools: images
	@mkdir -p $(CONFORMANCE)
	@echo "building upstream's e2e.test, ginkgo and test image programs (Kubernetes $(KUBE_VERSION); the first build takes 10-20 minutes)"
	cd test/conformance/upstream && CGO_ENABLED=0 $(GO) test -c -vet=off -trimpath -ldflags '$(LDFLAGS)' -o $(CURDIR)/$(CONFORMANCE)/e2e.test k8s.io/kubernetes/test/e2e
	$(UPSTREAM) -o $(CURDIR)/$(CONFORMANCE)/ github.com/onsi/ginkgo/v2/ginkgo k8s.io/kubernetes/test/images/agnhost \
	  k8s.io/kubernetes/test/images/nonewprivs k8s.io/kubernetes/test/images/resource-consumer \
	  k8s.io/kubernetes/test/images/resource-consumer/consume-cpu k8s.io/sample-apiserver
	$(UPSTREAM) -o $(CURDIR)/$(CONFORMANCE)/etcd go.etcd.io/etcd/server/v3
	cp $(OUT)/bin/pause $(CONFORMANCE)/pause
	@# busybox for the images' /bin/sh and applets, built from Debian's source (see the script for why).
	@test -x $(CONFORMANCE)/busybox || { apt-get install -y -qq --no-install-recommends dpkg-dev make gcc libc6-dev bzip2 xz-utils >/dev/null && \
	  test/conformance/busybox.sh $(CONFORMANCE)/busybox; }
	CGO_ENABLED=0 $(GO) build -trimpath -o $(OUT)/bin/conformance ./test/conformance
	@apt-get install -y -qq --no-install-recommends $$($(OUT)/bin/conformance -packages) >/dev/null

conformance: deps build conformance-tools
	SKIFF_BINARY=$(CURDIR)/$(OUT)/skiff KUBECTL_BINARY=$(CURDIR)/$(OUT)/kubectl $(OUT)/bin/conformance \
	  -tools $(CONFORMANCE) -focus '$(FOCUS)' -skip '$(SKIP)' -parallel $(PARALLEL)

run: deps build
	@hack/run.sh

# `make stop` keeps the cluster's data (the next `make run` brings it back);
# `make wipe` removes it too.
stop:
	@hack/stop.sh

wipe:
	@hack/stop.sh --wipe

clean:
	rm -rf $(OUT)
