// Package components runs the upstream Kubernetes control-plane components
// (kube-apiserver, kube-controller-manager, kube-scheduler) in this process,
// configured through their own flags so their behaviour and documentation
// stay upstream's.
package components

import (
	"fmt"

	"github.com/spf13/pflag"
	cliflag "k8s.io/component-base/cli/flag"
)

// parse applies args to the named flag sets of an upstream component, the
// same way its cobra command would.
func parse(component string, sets cliflag.NamedFlagSets, args []string) error {
	fs := pflag.NewFlagSet(component, pflag.ContinueOnError)
	for _, name := range sets.Order {
		fs.AddFlagSet(sets.FlagSets[name])
	}
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%s flags: %w", component, err)
	}
	return nil
}
