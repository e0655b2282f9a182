package cluster

import (
	"context"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	apiregistrationv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"
	aggregator "k8s.io/kube-aggregator/pkg/client/clientset_generated/clientset"
	"k8s.io/utils/ptr"
)

// TestAPIServerReachesPods runs what the API server itself dials pods for,
// from the harness's control plane that has no node (`skiff server
// --disable-agent` in its own namespace on the nodes' link): pods/proxy and
// services/proxy (the conformance proxy and DNS tests read through them), a
// validating webhook and an aggregated API served by pods. Each answer must
// come from a pod, named in the reply.
func TestAPIServerReachesPods(t *testing.T) {
	c := Start(t, Options{Nodes: 3, WaitReady: true})
	c.tlsSecret(t, "echo-tls", "echo-tls.default.svc")
	c.MustKubectl("apply", "-f", "testdata/apiproxy.yaml")
	c.WaitRollout(t, "deployment/echo-tls")
	pods := c.Pods(t, "app=echo-tls")
	ctx := context.Background()
	secret, err := c.Client().CoreV1().Secrets("default").Get(ctx, "echo-tls", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	caBundle := secret.Data["tls.crt"] // self-signed: it is its own CA

	t.Run("PodProxy", func(t *testing.T) {
		for _, p := range pods {
			out, err := c.Kubectl("get", "--raw", "/api/v1/namespaces/default/pods/"+p.Name+":8080/proxy/hello")
			if err != nil || !strings.Contains(out, `"pod":"`+p.Name+`"`) || !strings.Contains(out, `"path":"/hello"`) {
				t.Errorf("pods/%s:8080/proxy/hello (pod on %s): %v\n%s", p.Name, p.Spec.NodeName, err, out)
			}
		}
	})
	t.Run("ServiceProxy", func(t *testing.T) {
		out, err := c.Kubectl("get", "--raw", "/api/v1/namespaces/default/services/echo-tls:http/proxy/")
		if err != nil || !strings.Contains(out, `"pod":"echo-tls-`) {
			t.Errorf("services/echo-tls:http/proxy/: %v\n%s", err, out)
		}
		// https: the API server speaks TLS to the pod (no verification, as upstream).
		out, err = c.Kubectl("get", "--raw", "/api/v1/namespaces/default/services/https:echo-tls:https/proxy/tls")
		if err != nil || !strings.Contains(out, `"path":"/tls"`) {
			t.Errorf("services/https:echo-tls:https/proxy/tls: %v\n%s", err, out)
		}
	})
	t.Run("ValidatingWebhook", func(t *testing.T) {
		fail := admissionregistrationv1.Fail
		none := admissionregistrationv1.SideEffectClassNone
		hook := &admissionregistrationv1.ValidatingWebhookConfiguration{
			ObjectMeta: metav1.ObjectMeta{Name: "echo-tls"},
			Webhooks: []admissionregistrationv1.ValidatingWebhook{{
				Name: "deny.echo-tls.skiff.test",
				ClientConfig: admissionregistrationv1.WebhookClientConfig{CABundle: caBundle,
					Service: &admissionregistrationv1.ServiceReference{Namespace: "default", Name: "echo-tls", Path: ptr.To("/validate"), Port: ptr.To[int32](443)}},
				Rules: []admissionregistrationv1.RuleWithOperations{{
					Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
					Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"configmaps"}},
				}},
				// Only the test's objects: nothing else waits on this webhook.
				ObjectSelector:          &metav1.LabelSelector{MatchLabels: map[string]string{"webhook-test": "yes"}},
				FailurePolicy:           &fail,
				SideEffects:             &none,
				AdmissionReviewVersions: []string{"v1"},
				TimeoutSeconds:          ptr.To[int32](5),
			}},
		}
		if _, err := c.Client().AdmissionregistrationV1().ValidatingWebhookConfigurations().Create(ctx, hook, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		cm := func(name, deny string) error {
			_, err := c.Client().CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{
				Name: name, Labels: map[string]string{"webhook-test": "yes", "deny": deny}}}, metav1.CreateOptions{})
			return err
		}
		// The webhook configuration reaches the API server's informer
		// within moments; until then a denied object may slip through.
		var last error
		err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			last = cm("denied-"+time.Now().Format("150405.000000000")[7:], "true")
			return last != nil && strings.Contains(last.Error(), "denied by webhook pod echo-tls-"), nil
		})
		if err != nil {
			t.Fatalf("a ConfigMap labelled deny=true was not denied by the webhook pod: %v (last: %v)", err, last)
		}
		if err := cm("allowed", "false"); err != nil {
			t.Errorf("the webhook refused an allowed ConfigMap: %v", err)
		}
	})
	t.Run("APIService", func(t *testing.T) {
		agg := aggregator.NewForConfigOrDie(c.RESTConfig())
		svc := &apiregistrationv1.APIService{
			ObjectMeta: metav1.ObjectMeta{Name: "v1.echo.skiff.test"},
			Spec: apiregistrationv1.APIServiceSpec{
				Group: "echo.skiff.test", Version: "v1", CABundle: caBundle,
				Service:              &apiregistrationv1.ServiceReference{Namespace: "default", Name: "echo-tls", Port: ptr.To[int32](443)},
				GroupPriorityMinimum: 1000, VersionPriority: 15,
			},
		}
		if _, err := agg.ApiregistrationV1().APIServices().Create(ctx, svc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		defer agg.ApiregistrationV1().APIServices().Delete(ctx, svc.Name, metav1.DeleteOptions{})
		var cond string
		err := wait.PollUntilContextTimeout(ctx, time.Second, time.Minute, true, func(ctx context.Context) (bool, error) {
			s, err := agg.ApiregistrationV1().APIServices().Get(ctx, svc.Name, metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			for _, c := range s.Status.Conditions {
				if c.Type == apiregistrationv1.Available {
					cond = string(c.Status) + " " + c.Reason + ": " + c.Message
					return c.Status == apiregistrationv1.ConditionTrue, nil
				}
			}
			return false, nil
		})
		if err != nil {
			t.Fatalf("APIService %s not Available: %v (%s)", svc.Name, err, cond)
		}
		out, err := c.Kubectl("get", "--raw", "/apis/echo.skiff.test/v1/namespaces/default/things")
		if err != nil || !strings.Contains(out, `"pod":"echo-tls-`) || !strings.Contains(out, `"X-Remote-User":[`) {
			t.Errorf("GET through the aggregated API: %v\n%s", err, out)
		}
	})
}
