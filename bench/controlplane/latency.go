package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// latencies are the durations of one kind of request, issued one at a time
// so each is the latency of an otherwise idle server.
type latencies []time.Duration

// percentile is the nearest-rank percentile p (0 < p <= 100).
func (l latencies) percentile(p float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	s := slices.Clone(l)
	slices.Sort(s)
	rank := int(p/100*float64(len(s)) + 0.999999)
	return s[min(max(rank, 1), len(s))-1]
}

// apiLatency is the ConfigMap create and get latency through the API server.
type apiLatency struct{ create, get latencies }

func benchConfigMap(i int) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("bench-%04d", i)},
		Data:       map[string]string{"config": strings.Repeat("x", 64)},
	}
}

// measureConfigMaps creates ops ConfigMaps in ns one after another, then gets
// each of them once.
func measureConfigMaps(ctx context.Context, client kubernetes.Interface, ns string, ops int) (apiLatency, error) {
	cms := client.CoreV1().ConfigMaps(ns)
	var r apiLatency
	for i := range ops {
		cm := benchConfigMap(i)
		start := time.Now()
		if _, err := cms.Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			return r, fmt.Errorf("create configmap %s: %w", cm.Name, err)
		}
		r.create = append(r.create, time.Since(start))
	}
	for i := range ops {
		name := benchConfigMap(i).Name
		start := time.Now()
		if _, err := cms.Get(ctx, name, metav1.GetOptions{}); err != nil {
			return r, fmt.Errorf("get configmap %s: %w", name, err)
		}
		r.get = append(r.get, time.Since(start))
	}
	return r, nil
}

// etcdLatency is the floor under the API numbers: the same member, reached
// directly, doing what the API server does for a create (a transaction that
// puts the key only if it does not exist) and for a get without
// resourceVersion (a linearizable range read), with a value of a ConfigMap's
// size. The keys live under a prefix of their own and are deleted after.
type etcdLatency struct{ put, get latencies }

const etcdBenchPrefix = "/skiff-bench/"

func measureEtcd(ctx context.Context, endpoint string, ops int) (etcdLatency, error) {
	var r etcdLatency
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 10 * time.Second})
	if err != nil {
		return r, fmt.Errorf("connect to etcd %s: %w", endpoint, err)
	}
	defer cli.Close()
	defer cli.Delete(context.WithoutCancel(ctx), etcdBenchPrefix, clientv3.WithPrefix())

	value, err := json.Marshal(benchConfigMap(0))
	if err != nil {
		return r, err
	}
	for i := range ops {
		key := fmt.Sprintf("%sconfigmaps/bench-%04d", etcdBenchPrefix, i)
		start := time.Now()
		resp, err := cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, string(value))).
			Commit()
		if err != nil {
			return r, fmt.Errorf("etcd put %s: %w", key, err)
		}
		if !resp.Succeeded {
			return r, fmt.Errorf("etcd put %s: key already exists", key)
		}
		r.put = append(r.put, time.Since(start))
	}
	for i := range ops {
		key := fmt.Sprintf("%sconfigmaps/bench-%04d", etcdBenchPrefix, i)
		start := time.Now()
		resp, err := cli.Get(ctx, key)
		if err != nil {
			return r, fmt.Errorf("etcd get %s: %w", key, err)
		}
		if len(resp.Kvs) != 1 {
			return r, fmt.Errorf("etcd get %s: %d keys, want 1", key, len(resp.Kvs))
		}
		r.get = append(r.get, time.Since(start))
	}
	return r, nil
}
