package crds

import (
	"context"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset/fake"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func crd(version, group string) *apiextensionsv1.CustomResourceDefinition {
	return &apiextensionsv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: "things.example.com", Annotations: map[string]string{"v": version}},
		Spec:       apiextensionsv1.CustomResourceDefinitionSpec{Group: group},
	}
}

// TestEnsure: created when missing, left alone at the same version (a
// user's edit survives), replaced at another version.
func TestEnsure(t *testing.T) {
	ctx := context.Background()
	ext := fake.NewSimpleClientset()
	get := func() string {
		c, err := ext.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, "things.example.com", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return c.Spec.Group
	}
	for _, step := range []struct {
		version, group, want string
	}{
		{"1", "example.com", "example.com"},
		{"1", "changed.example.com", "example.com"},
		{"2", "changed.example.com", "changed.example.com"},
	} {
		if err := Ensure(ctx, ext, "v", crd(step.version, step.group)); err != nil {
			t.Fatal(err)
		}
		if got := get(); got != step.want {
			t.Errorf("after Ensure at version %s: group %q, want %q", step.version, got, step.want)
		}
	}
}

// TestEnsureMany: every CRD of a bundle is created, though they go in
// concurrently.
func TestEnsureMany(t *testing.T) {
	ctx := context.Background()
	ext := fake.NewSimpleClientset()
	var want []*apiextensionsv1.CustomResourceDefinition
	for _, name := range []string{"as.example.com", "bs.example.com", "cs.example.com"} {
		c := crd("1", "example.com")
		c.Name = name
		want = append(want, c)
	}
	if err := Ensure(ctx, ext, "v", want...); err != nil {
		t.Fatal(err)
	}
	list, err := ext.ApiextensionsV1().CustomResourceDefinitions().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != len(want) {
		t.Fatalf("%d CRDs after Ensure, want %d", len(list.Items), len(want))
	}
}
