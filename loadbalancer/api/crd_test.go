package api

import "testing"

func TestCRD(t *testing.T) {
	crd, err := CRD()
	if err != nil {
		t.Fatal(err)
	}
	if crd.Spec.Group != Group || crd.Spec.Names.Plural != Resource || crd.Spec.Names.Kind != Kind || crd.Spec.Versions[0].Name != Version {
		t.Errorf("the CRD's names disagree with the package's constants: %+v", crd.Spec.Names)
	}
	if crd.Annotations[crdVersion] == "" {
		t.Errorf("the CRD lacks its %s annotation", crdVersion)
	}
}
