package gatewaycrds

import (
	"context"
	"testing"

	apiextensionsfake "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset/fake"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubefake "k8s.io/client-go/kubernetes/fake"
)

func TestLoad(t *testing.T) {
	b, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{
		"gatewayclasses.gateway.networking.k8s.io":  false,
		"gateways.gateway.networking.k8s.io":        false,
		"httproutes.gateway.networking.k8s.io":      false,
		"grpcroutes.gateway.networking.k8s.io":      false,
		"referencegrants.gateway.networking.k8s.io": false,
	}
	for _, c := range b.CRDs {
		if _, ok := want[c.Name]; ok {
			want[c.Name] = true
		}
		if v := c.Annotations[bundleVersion]; v != Version {
			t.Errorf("%s: bundle version %q, want %q", c.Name, v, Version)
		}
	}
	for n, found := range want {
		if !found {
			t.Errorf("CRD %s missing from the bundle", n)
		}
	}
	if len(b.Policies) != 1 || len(b.Bindings) != 1 {
		t.Errorf("%d policies and %d bindings, want the safe-upgrades pair", len(b.Policies), len(b.Bindings))
	}
}

func TestInstallIdempotent(t *testing.T) {
	ext := apiextensionsfake.NewSimpleClientset()
	kube := kubefake.NewClientset()
	ctx := context.Background()
	for i := 0; i < 2; i++ {
		if err := Install(ctx, ext, kube); err != nil {
			t.Fatalf("install %d: %v", i, err)
		}
	}
	crd, err := ext.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, "httproutes.gateway.networking.k8s.io", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(crd.Spec.Versions) == 0 {
		t.Errorf("installed CRD has no versions")
	}
	// an older bundle is upgraded
	crd.Annotations[bundleVersion] = "v1.0.0"
	crd.Spec.Versions = nil
	if _, err := ext.ApiextensionsV1().CustomResourceDefinitions().Update(ctx, crd, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := Install(ctx, ext, kube); err != nil {
		t.Fatal(err)
	}
	crd, _ = ext.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, "httproutes.gateway.networking.k8s.io", metav1.GetOptions{})
	if crd.Annotations[bundleVersion] != Version || len(crd.Spec.Versions) == 0 {
		t.Errorf("CRD not upgraded: version %q, %d versions", crd.Annotations[bundleVersion], len(crd.Spec.Versions))
	}
}
